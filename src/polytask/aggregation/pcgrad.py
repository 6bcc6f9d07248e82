"""PCGrad: project conflicting gradients (Yu et al., 2020)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array, SeededState, normalized


@AGGREGATORS.register("pcgrad")
class PCGrad(SeededState, Aggregator):
    """Gradient surgery: remove from each task gradient its conflicting components.

    Yu, Kumar, Gupta, Levine, Hausman & Finn (2020), "Gradient Surgery for Multi-Task
    Learning" (NeurIPS), Algorithm 1: for each task ``i``, ``g_i^PC = g_i``; for each other
    task ``j`` in random order, if ``g_i^PC · g_j < 0`` then ``g_i^PC −= (g_i^PC · g_j) /
    ‖g_j‖² g_j``; the update is ``Σ_i g_i^PC``. Every ``g_i^PC`` stays a combination of the
    original gradients, so the algorithm runs on the Gramian alone: row ``i`` of a
    coefficient matrix ``C`` tracks ``g_i^PC = Σ_k C_ik g_k``, its dot with ``g_j`` is
    ``(C G)_ij``, and the update's coefficients are ``Σ_i C_i``. The orders are drawn from a
    private generator seeded by ``seed`` (``torch.randperm(T)`` per task, skipping ``i``,
    as torchjd does), checkpointed as a buffer. Not permutation-equivariant (random order);
    not non-conflicting for ``T > 2``.

    >>> agg = PCGrad(n_tasks=2)
    >>> agg(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    tensor([0.5000, 1.5000])
    """

    advised_for_conflict: ClassVar[bool] = True

    permutation_equivariant: ClassVar[bool] = False

    def __init__(self, n_tasks: int, seed: int = 0) -> None:
        super().__init__(n_tasks)
        self._init_rng(seed)

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        G = normalized(gramian)  # scale-free: coefficients do not depend on the scale
        T = self.n_tasks
        with self._rng() as generator:
            orders = [torch.randperm(T, generator=generator).tolist() for _ in range(T)]
        C = np.eye(T)
        for i, order in enumerate(orders):
            for j in order:
                if j == i or G[j, j] <= 0.0:
                    continue
                dot = C[i] @ G[:, j]
                if dot < 0.0:
                    C[i, j] -= dot / G[j, j]
        return C.sum(axis=0)
