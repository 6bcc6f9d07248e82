"""DB-MTL: dual balancing of loss scales and gradient magnitudes (Lin et al., 2023)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from polytask.aggregation.base import AGGREGATORS
from polytask.aggregation.matrix import MatrixAggregator
from polytask.aggregation.modo import check_positive


@AGGREGATORS.register("db_mtl")
class DBMTL(MatrixAggregator):
    """Log-transform each loss, average its gradient over steps, scale all to the largest norm.

    Lin, Ye, Xu, Shi & Zhang (2023), "Dual-Balancing for Multi-Task Learning" (arXiv
    2308.12029), as LibMTL's ``DB_MTL``, at step ``k = 1, 2, …``: the gradient of
    ``log(L_t + 1e-8)``, ``x_t = g_t / (L_t + 1e-8)`` (loss-scale balancing), its moving
    average ``m ← x + β_k (m − x)`` with ``β_k = beta / k^beta_sigma`` from ``m = 0``, and the
    update ``Σ_t α_t m_t`` with ``α_t = max_s ‖m_s‖ / (‖m_t‖ + 1e-8)`` (gradient-magnitude
    balancing: every task's term has the largest norm). Defaults are LibMTL's: ``beta =
    0.9``, ``beta_sigma = 0`` (a constant 0.9). ``L_t``: the value of the term whose gradient
    is ``g_t`` (in training ``w_t L_t``, so ``x_t = ∇ log L_t`` whatever the weights; ones
    when no losses are given); losses must be positive. ``m`` is a ``[T, P]`` buffer (in
    checkpoints). Scale-invariant in the losses, not in the gradients.

    >>> agg = DBMTL(n_tasks=2)
    >>> agg(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([1.0, 0.5]))
    tensor([0.2000, 0.2000])
    """

    _state: ClassVar[tuple[str, ...]] = ("grad_average",)
    grad_average: Tensor
    steps: Tensor

    def __init__(self, n_tasks: int, beta: float = 0.9, beta_sigma: float = 0.0) -> None:
        super().__init__(n_tasks)
        self.beta = check_positive("beta", beta, zero=True)
        if self.beta > 1:
            raise ValueError(f"beta must be in [0, 1], got {beta!r}")
        self.beta_sigma = check_positive("beta_sigma", beta_sigma, zero=True)
        self._empty_state()
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    @property
    def needs_losses(self) -> bool:
        return True

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, beta={self.beta}, beta_sigma={self.beta_sigma}"

    def _aggregate(self, G: Tensor, losses: Tensor | None) -> tuple[Tensor, Tensor]:
        k = int(self.steps) + 1
        self.steps.fill_(k)
        scale = torch.ones_like(G[:, 0]) if losses is None else losses
        x = G / (scale[:, None] + 1e-8)
        m = self._matrix_state("grad_average", G)
        m = x + (self.beta / k**self.beta_sigma) * (m - x)
        self.grad_average = m
        norms = m.norm(dim=1)
        alpha = norms.max() / (norms + 1e-8)
        return alpha @ m, alpha.clone()
