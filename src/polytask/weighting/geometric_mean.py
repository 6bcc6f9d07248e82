"""Geometric Loss Strategy: the geometric mean of the losses (Chennupati et al., 2019)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from polytask.weighting.base import WEIGHTINGS, LossWeighting


@WEIGHTINGS.register("geometric_mean")
class GeometricMean(LossWeighting):
    """Weights ``w_t = G / (T L_t)``, the gradient of ``G = (Π_t L_t)^{1/T}`` at the losses.

    Chennupati, Sistu, Yogamani & Rawashdeh (2019), "MultiNet++: Multi-Stream Feature
    Aggregation and Geometric Loss Strategy for Multi-Task Learning" (CVPR Workshops), the
    geometric loss strategy (GLS): the objective is the geometric mean of the task losses
    (torchjd's ``GeometricMean``). Its gradient is ``Σ_t (G/T) ∇ log L_t``: every task
    contributes its *relative* change, so a task with 100× the loss does not take 100× the
    update, and ``w_t L_t = G / T`` is the same for every task. Computed in log space,
    ``w_t = exp(mean_s log L_s − log L_t) / T``, so no product of many losses overflows.

    The losses must be ≥ 0 (the geometric mean of a negative loss is undefined: a
    ``ValueError``, as torchjd raises). At a loss of exactly 0 the derivative is infinite;
    losses are floored at the smallest positive float64 so the weights stay defined.

    >>> GeometricMean(n_tasks=2)(torch.tensor([1.0, 4.0]))
    tensor([1.0000, 0.2500])
    """

    adapts_to_scale: ClassVar[bool] = True

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        if (losses < 0).any():
            raise ValueError(f"geometric_mean needs losses >= 0, got {losses.tolist()}")
        log = losses.double().clamp(min=torch.finfo(torch.float64).tiny).log()
        weights = torch.exp(log.mean() - log) / self.n_tasks
        return weights.to(losses.dtype)
