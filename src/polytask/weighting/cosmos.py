"""COSMOS's cosine-penalised linear scalarisation (Ruchte & Grabocka, 2021)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from polytask.weighting.base import WEIGHTINGS, LossWeighting
from polytask.weighting.preference import preference_vector

#: the floor of ``‖L‖`` in the cosine, as ``torch.nn.functional.cosine_similarity``'s eps
NORM_EPS = 1e-8


@WEIGHTINGS.register("cosmos")
class COSMOS(LossWeighting):
    """The gradient of ``r·L − λ cos(r, L)``: ``w = r − λ (r̂ − cos(r, L) L̂) / ‖L‖``.

    Ruchte & Grabocka (2021), "Scalable Pareto Front Approximation for Deep Multi-Objective
    Learning" (ICDM), the COSMOS objective (torchjd's ``COSMOS``): a linear scalarisation
    with preference ``r`` minus ``penalty`` ``λ`` times the cosine between ``r`` and the
    loss vector, which rewards losses in the proportions of the preference. ``r̂ = r/‖r‖``,
    ``L̂ = L/‖L‖``; ``penalty=2.0`` is the official code's default (multi-MNIST; torchjd has
    none). The full method also samples ``r ~ Dir(α)`` at every step and feeds it to the
    model as an input, to learn the whole Pareto front in one network; that conditions the
    model, which a loss weighting cannot do, so ``preference`` is fixed (None: ``1/T``
    each), as torchjd's scalariser takes it.

    The cosine pulls the loss vector toward ``r``: a task whose loss is too small for the
    preference gets a negative weight (``signed_weights``) once ``λ / ‖L‖`` is large, i.e.
    for small losses. The weights do not follow the losses' scales.

    >>> COSMOS(n_tasks=2)(torch.tensor([1.0, 1.0]))  # on the ray: the cosine term is flat
    tensor([0.5000, 0.5000])
    """

    signed_weights: ClassVar[bool] = True

    permutation_equivariant: ClassVar[bool] = False  # per-task preference

    preference: Tensor

    def __init__(
        self, n_tasks: int, penalty: float = 2.0, preference: list[float] | None = None
    ) -> None:
        super().__init__(n_tasks)
        number = isinstance(penalty, int | float) and not isinstance(penalty, bool)
        if not number or not (math.isfinite(penalty) and penalty >= 0.0):
            raise ValueError(f"penalty must be a finite number >= 0, got {penalty!r}")
        self.penalty = float(penalty)
        self.register_buffer("preference", preference_vector(preference, n_tasks))

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, penalty={self.penalty}, preference={self.preference.tolist()}"
        )

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        x = losses.to(self.preference.device, torch.float64)
        norm = x.norm().clamp(min=NORM_EPS)
        r_hat, l_hat = self.preference / self.preference.norm(), x / norm
        # ∂cos/∂L = (r̂ − cos · L̂) / ‖L‖
        cosine_gradient = (r_hat - (r_hat @ l_hat) * l_hat) / norm
        weights = self.preference - self.penalty * cosine_gradient
        return weights.to(device=losses.device, dtype=losses.dtype)
