"""GradDrop: gradient sign dropout (Chen et al., 2020)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from polytask.aggregation.base import AGGREGATORS, SeededState
from polytask.aggregation.matrix import MatrixAggregator


@AGGREGATORS.register("graddrop")
class GradDrop(SeededState, MatrixAggregator):
    """Per coordinate, keep one sign of the task gradients, drawn by its sign purity.

    Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov (2020), "Just Pick a Sign:
    Optimizing Deep Multitask Models with Gradient Sign Dropout" (NeurIPS), Algorithm 1,
    lines 10–15: per coordinate ``j``, the positive sign purity
    ``P_j = ½ (1 + Σ_t g_tj / Σ_t |g_tj|)``; with ``U_j ~ U(0, 1)``, task ``t`` keeps its
    ``g_tj`` when ``P_j > U_j`` and ``g_tj > 0``, or ``P_j < U_j`` and ``g_tj < 0``; the update
    is ``Σ_t (ℓ + (1 − ℓ) M_tj) g_tj`` with ``ℓ = leak`` (0: the paper's and LibMTL's
    default; 1 is the sum). As torchjd's ``GradDrop`` (identity ``f``, one ``leak`` for every
    task), the purity is over the per-task gradients of the shared *parameters*; the paper
    and LibMTL apply it to the gradients at the shared activations, summed over the batch.
    ``U`` is drawn in float64 on the CPU from a private generator seeded by ``seed`` (one
    number per coordinate and step; checkpointed), so every dtype, device and rank draws
    the same; torchjd draws from the global RNG in the matrix's dtype (same numbers for a
    float64 CPU matrix after ``torch.manual_seed(seed)``). A coordinate where every task's
    gradient is 0 contributes 0. Logged weights: each task's mask
    ``ℓ + (1 − ℓ) M_tj`` averaged over the coordinates. Random, so not non-conflicting;
    permutation-equivariant for a given draw.

    >>> agg = GradDrop(n_tasks=2)
    >>> agg(torch.tensor([[1.0, 2.0], [3.0, 1.0]]))
    tensor([4., 3.])
    """

    weights_are_coefficients: ClassVar[bool] = False

    def __init__(self, n_tasks: int, leak: float = 0.0, seed: int = 0) -> None:
        super().__init__(n_tasks)
        if isinstance(leak, bool) or not isinstance(leak, int | float) or not 0 <= leak <= 1:
            raise ValueError(f"leak must be a number in [0, 1], got {leak!r}")
        self.leak = float(leak)
        self._init_rng(seed)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, leak={self.leak}"

    def _aggregate(self, G: Tensor, losses: Tensor | None) -> tuple[Tensor, Tensor]:
        with self._rng() as generator:
            U = torch.rand(G.shape[1], generator=generator, dtype=torch.float64)
        U = U.to(G)
        purity = 0.5 * (1.0 + G.sum(dim=0) / G.abs().sum(dim=0))  # NaN where every g_tj = 0
        keep = ((purity > U) & (G > 0)) | ((purity < U) & (G < 0))
        mask = self.leak + (1.0 - self.leak) * keep.to(G.dtype)
        return (mask * G).sum(dim=0), mask.mean(dim=1) if G.shape[1] else mask.sum(dim=1)
