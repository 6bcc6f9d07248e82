"""Penalty-based boundary intersection (Zhang & Li, 2007)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from polytask.weighting.base import WEIGHTINGS, LossWeighting
from polytask.weighting.preference import preference_vector, reference_vector

#: under the square root of ``d₂``, as torchjd: keeps the gradient finite on the ray
D2_EPS = 1e-12


@WEIGHTINGS.register("pbi")
class PBI(LossWeighting):
    """The gradient of ``d₁ + θ d₂``: ``w = ŵ + θ (f − d₁ ŵ) / d₂``, ``f = L − z``.

    Zhang & Li (2007), "MOEA/D: A Multiobjective Evolutionary Algorithm Based on
    Decomposition" (IEEE Transactions on Evolutionary Computation), the penalty-based
    boundary intersection approach (torchjd's ``PBI``): relative to the reference point
    ``z``, ``d₁ = f·ŵ`` is the distance along the preference direction ``ŵ = λ/‖λ‖`` and
    ``d₂ = ‖f − d₁ ŵ‖`` the distance from that ray, penalised by ``theta`` (``θ = 5`` in
    the paper's experiments; torchjd has no default). ``√(‖·‖² + 1e-12)`` keeps ``d₂``
    differentiable on the ray, as torchjd does.

    The penalty pulls the loss vector onto the ray, so a task whose loss is too *small*
    for it gets a negative weight (its loss is pushed up): ``signed_weights``. The weights
    are O(1) whatever the losses' scale, so the largest loss dominates the update.
    ``preference`` (None: uniform) and ``reference`` (None: the origin) are fixed.

    >>> PBI(n_tasks=2)(torch.tensor([1.0, 3.0]))  # ŵ = (1, 1)/√2, the ray is L₀ = L₁
    tensor([-2.8284,  4.2426])
    """

    signed_weights: ClassVar[bool] = True

    permutation_equivariant: ClassVar[bool] = False  # per-task preference and reference

    preference: Tensor
    reference: Tensor

    def __init__(
        self,
        n_tasks: int,
        theta: float = 5.0,
        preference: list[float] | None = None,
        reference: list[float] | None = None,
    ) -> None:
        super().__init__(n_tasks)
        number = isinstance(theta, int | float) and not isinstance(theta, bool)
        if not number or not (math.isfinite(theta) and theta >= 0.0):
            raise ValueError(f"theta must be a finite number >= 0, got {theta!r}")
        self.theta = float(theta)
        self.register_buffer("preference", preference_vector(preference, n_tasks))
        self.register_buffer("reference", reference_vector(reference, n_tasks))

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, theta={self.theta}, preference={self.preference.tolist()}, "
            f"reference={self.reference.tolist()}"
        )

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        f = losses.to(self.preference.device, torch.float64) - self.reference
        direction = self.preference / self.preference.norm()
        off_ray = f - (f @ direction) * direction
        d2 = torch.sqrt(off_ray @ off_ray + D2_EPS)
        weights = direction + self.theta * off_ray / d2
        return weights.to(device=losses.device, dtype=losses.dtype)
