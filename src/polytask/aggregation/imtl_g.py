"""IMTL-G: impartial multi-task learning, gradient part (Liu et al., 2021)."""

from __future__ import annotations

import numpy as np

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array, normalized


@AGGREGATORS.register("imtl_g")
class IMTLG(Aggregator):
    """The combination whose projection onto every task's unit gradient is the same.

    Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang (2021), "Towards Impartial Multi-task
    Learning" (ICLR), IMTL-G: find ``c`` with ``Σ c_t = 1`` such that ``d = Σ c_t g_t``
    has equal projections ``d · g_t / ‖g_t‖`` on all tasks. On the Gramian that is
    ``G c ∝ (‖g_t‖)_t``, i.e. ``c = G⁺ n / Σ(G⁺ n)`` with ``n_t = ‖g_t‖`` — the paper's
    closed form when ``G`` is invertible, and torchjd's pseudo-inverse generalisation when
    tasks are linearly dependent (duplicates, zero gradients, ``T > P``). The
    pseudo-inverse cut-off is ``T · eps`` of the Gramian's precision, and a vanishing
    ``Σ(G⁺ n)`` gives zero weights (no update) instead of a division by zero.

    >>> import torch
    >>> IMTLG(n_tasks=2)(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    tensor([0.6667, 0.6667])
    """

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        G = normalized(gramian)
        norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
        v = np.linalg.pinv(G, rcond=self.n_tasks * eps, hermitian=True) @ norms
        total = float(v.sum())
        if abs(total) <= 1e-12 * max(float(np.abs(v).sum()), 1e-300):
            return np.zeros(self.n_tasks)
        return (v / total).astype(np.float64)
