"""Static weighting: fixed, user-chosen weights."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from polytask.weighting.base import WEIGHTINGS, LossWeighting


@WEIGHTINGS.register("static")
class Static(LossWeighting):
    """Fixed non-negative weights, one per task, in task order.

    >>> Static(n_tasks=2, weights=[1.0, 0.5])(torch.tensor([2.0, 4.0]))
    tensor([1.0000, 0.5000])
    """

    needs_all_tasks: ClassVar[bool] = False

    permutation_equivariant: ClassVar[bool] = False

    weights: torch.Tensor

    def __init__(self, n_tasks: int, weights: list[float]) -> None:
        super().__init__(n_tasks)
        if len(weights) != n_tasks:
            raise ValueError(f"static weights: expected {n_tasks} values, got {len(weights)}")
        if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
            raise ValueError(f"static weights must be finite, >= 0 and not all 0, got {weights}")
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]))

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, weights={self.weights.tolist()}"

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        return self.weights.to(device=losses.device, dtype=losses.dtype)
