"""Coordinate-wise trimmed mean (Yin et al., 2018)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from polytask.aggregation.base import AGGREGATORS
from polytask.aggregation.matrix import MatrixAggregator


@AGGREGATORS.register("trimmed_mean")
class TrimmedMean(MatrixAggregator):
    """Per coordinate, drop the ``trim_number`` largest and smallest values, average the rest.

    Yin, Chen, Ramchandran & Bartlett (2018), "Byzantine-Robust Distributed Learning:
    Towards Optimal Statistical Rates" (ICML), the coordinate-wise trimmed mean (Definition
    2, with ``β T = trim_number``): the update's coordinate ``j`` is the mean of the
    ``T − 2 k`` middle values of ``g_1j … g_Tj``, ``k = trim_number``. As torchjd's
    ``TrimmedMean``, which has no default; ``trim_number = 1`` here (the least trimming that
    removes anything), so ``T ≥ 2 k + 1`` is required at construction; ``0`` is the mean.
    Not a combination of whole gradients: each coordinate comes from other tasks. Logged
    weights: the share of coordinates each task is kept at, over ``T − 2 k``. Not
    non-conflicting; permutation-equivariant (ties between equal values give equal updates).

    >>> agg = TrimmedMean(n_tasks=3)
    >>> agg(torch.tensor([[1.0, 5.0], [2.0, -1.0], [9.0, 0.0]]))
    tensor([2., 0.])
    """

    weights_are_coefficients: ClassVar[bool] = False

    def __init__(self, n_tasks: int, trim_number: int = 1) -> None:
        super().__init__(n_tasks)
        k = trim_number
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"trim_number must be an integer >= 0, got {k!r}")
        if n_tasks < 2 * k + 1:
            raise ValueError(f"trimmed_mean needs n_tasks >= 2 * trim_number + 1, got {n_tasks}")
        self.trim_number = k

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, trim_number={self.trim_number}"

    def _aggregate(self, G: Tensor, losses: Tensor | None) -> tuple[Tensor, Tensor]:
        T, k = self.n_tasks, self.trim_number
        ordered, rows = torch.sort(G, dim=0, stable=True)
        update = ordered[k : T - k].mean(dim=0)
        kept = torch.zeros_like(G).scatter_(0, rows[k : T - k], 1.0 / (T - 2 * k))
        return update, kept.mean(dim=1) if G.shape[1] else kept.sum(dim=1)
