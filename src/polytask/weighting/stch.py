"""Smooth Tchebycheff scalarisation (Lin et al., 2024)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from polytask.weighting.base import WEIGHTINGS, LossWeighting
from polytask.weighting.preference import preference_vector, reference_vector

#: added inside the logarithms, as the official STCH_MTL code does
LOG_EPS = 1e-20


@WEIGHTINGS.register("stch")
class STCH(LossWeighting):
    """Weights ``λ ⊙ softmax(λ(f − z)/μ)``: the gradient of ``μ log Σ_t exp(λ_t(f_t − z_t)/μ)``.

    Lin et al. (2024), "Smooth Tchebycheff Scalarization for Multi-Objective Optimization"
    (ICML): a smooth weighted maximum of the losses, tighter as ``mu`` falls (the
    Tchebycheff ``max_t λ_t (f_t − z_t)`` at ``μ → 0``), so the task with the largest
    ``λ_t (f_t − z_t)`` takes most of the weight. ``preference`` ``λ`` (None: ``1/T`` each)
    and ``reference`` ``z`` (None: 0) are fixed, as in torchjd's ``STCH``; ``mu=1.0`` is
    the official code's default (torchjd has none).

    ``warmup_steps=0`` (the default) scalarises the raw losses, ``f = L``, as torchjd does.
    ``warmup_steps > 0`` follows the official multi-task code (``STCH_MTL``): for the first
    ``warmup_steps`` steps it minimises ``Σ_t log L_t`` (weights ``1/L_t``) and records the
    mean of the losses :meth:`observe` sees as the nadir point ``n``; after, ``f_t =
    log(L_t / n_t)``, so the weights no longer follow the losses' raw scales (the class
    flag ``adapts_to_scale`` describes the default). The official code (``STCH_warmup_epoch
    = 4``) warms up through epoch 4 and averages the training losses of that last epoch;
    here the unit is one optimiser step and the whole warm-up is averaged. Its objective is
    ``T`` times this one with ``preference`` all ones. The nadir sum and the step count are
    buffers, so a resumed run continues the warm-up (or keeps its nadir).

    >>> STCH(n_tasks=2)(torch.tensor([1.0, 3.0]))  # ½ softmax([0.5, 1.5]): the larger leads
    tensor([0.1345, 0.3655])
    """

    permutation_equivariant: ClassVar[bool] = False  # per-task preference and reference

    preference: Tensor
    reference: Tensor
    nadir_sum: Tensor
    observed: Tensor

    def __init__(
        self,
        n_tasks: int,
        mu: float = 1.0,
        preference: list[float] | None = None,
        reference: list[float] | None = None,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__(n_tasks)
        number = isinstance(mu, int | float) and not isinstance(mu, bool)
        if not number or not (math.isfinite(mu) and mu > 0.0):
            raise ValueError(f"mu must be a finite number > 0, got {mu!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        self.mu = float(mu)
        self.warmup_steps = warmup_steps
        self.register_buffer("preference", preference_vector(preference, n_tasks))
        self.register_buffer("reference", reference_vector(reference, n_tasks))
        self.register_buffer("nadir_sum", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("observed", torch.tensor(0))

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, mu={self.mu}, preference={self.preference.tolist()}, "
            f"reference={self.reference.tolist()}, warmup_steps={self.warmup_steps}"
        )

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        x = losses.to(self.preference.device, torch.float64)
        if self.warmup_steps == 0:
            weights = self._smooth_max_gradient(x)
        elif int(self.observed) < self.warmup_steps:
            weights = 1.0 / (x + LOG_EPS)  # the gradient of Σ log(L + ε)
        else:
            nadir = (self.nadir_sum / self.warmup_steps).clamp(min=torch.finfo(torch.float64).tiny)
            # f = log(L/n + ε): ∂S/∂L = ∂S/∂f · 1/(L + ε n)
            f = torch.log(x / nadir + LOG_EPS)
            weights = self._smooth_max_gradient(f) / (x + LOG_EPS * nadir)
        return weights.to(device=losses.device, dtype=losses.dtype)

    def _smooth_max_gradient(self, f: Tensor) -> Tensor:
        """``∂/∂f μ log Σ exp(λ(f − z)/μ) = λ ⊙ softmax(λ(f − z)/μ)`` (softmax: no overflow)."""
        return self.preference * torch.softmax(self.preference * (f - self.reference) / self.mu, 0)

    def observe(self, losses: Tensor) -> None:
        new = self._check(losses).to(self.nadir_sum.device, torch.float64)
        if int(self.observed) >= self.warmup_steps or not torch.isfinite(new).all():
            return  # past the warm-up (or none), or an overflowed step: the nadir is kept
        self.nadir_sum.add_(new)
        self.observed.add_(1)
