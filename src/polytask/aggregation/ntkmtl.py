"""NTKMTL: balance the tasks' convergence speeds by their NTK spectra (Qin, Wang, Liao & Yan)."""

from __future__ import annotations

import numpy as np

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array
from polytask.aggregation.modo import check_positive


@AGGREGATORS.register("ntkmtl")
class NTKMTL(Aggregator):
    """Each task weighted by ``(Σ_s λ_s / λ_t)^ntk_exp``, ``λ_t`` its NTK's top eigenvalue.

    Qin, Wang, Liao & Yan (2025), "NTKMTL: Mitigating Task Imbalance in Multi-Task Learning
    from Neural Tangent Kernel Perspective" (NeurIPS). Under gradient flow a task's loss
    falls at a rate set by the spectrum of its NTK; weighting task ``t`` by
    ``(Σ_s λ_s / λ_t)^½`` evens the rates. With one sub-batch per task (the paper's
    ``n = 1``, the official code's default, jianke0604/NTKMTL) each task's NTK is the
    scalar ``‖g_t‖²``, the Gramian's diagonal: ``c_t = (tr(G Gᵀ) / ‖g_t‖²)^ntk_exp``.
    ``ntk_exp = 0.5`` is the paper's and the official default (its README suggests up to
    0.75). On the parameter Gramian this is NTKMTL; under ``train.single_input:
    representation`` the engine's Gramian is that of the gradients at the shared
    representation, the kernel of NTKMTL-SR, with ``n = 1`` (the SR variant's ``n = 4``
    sub-batches need per-sub-batch norms no Gramian carries). The official code multiplies
    the update by ``T`` ("to match the sum loss"): ``T ×`` ours. A zero gradient (official:
    infinite weight) gets ``c_t = 0``; all zero: ``c = 1``.

    >>> import torch
    >>> NTKMTL(n_tasks=2).weights(torch.tensor([[4.0, 0.0], [0.0, 1.0]]))
    tensor([1.1180, 2.2361])
    """

    def __init__(self, n_tasks: int, ntk_exp: float = 0.5) -> None:
        super().__init__(n_tasks)
        self.ntk_exp = check_positive("ntk_exp", ntk_exp)

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, ntk_exp={self.ntk_exp}"

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        kernel = np.maximum(np.diag(gramian), 0.0)
        trace = float(kernel.sum())
        if trace <= 0.0:
            return np.ones(self.n_tasks)
        # a norm at rounding level of the others' is a zero gradient, not a tiny one
        live = kernel > eps * trace
        ratio = np.divide(trace, kernel, out=np.zeros_like(kernel), where=live)
        return np.where(live, ratio**self.ntk_exp, 0.0)
