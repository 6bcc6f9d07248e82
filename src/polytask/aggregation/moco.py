"""MoCo: multi-objective gradient correction with tracked gradients (Fernando et al., 2023)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from polytask.aggregation.base import AGGREGATORS
from polytask.aggregation.matrix import MatrixAggregator
from polytask.aggregation.modo import check_positive


@AGGREGATORS.register("moco")
class MoCo(MatrixAggregator):
    """Track each task's gradient with a moving estimate ``y_t`` and weigh the estimates.

    Fernando, Shen, Liu, Chaudhury, Murugesan & Chen (2023), "Mitigating Gradient Bias in
    Multi-objective Learning: A Provably Convergent Approach" (ICLR), as LibMTL's ``MoCo``
    (from the authors' code), at step ``k = 1, 2, …``: ``x_t = L_t g_t / (‖g_t‖ + 1e-8)``,
    ``y ← y − β_k (y − x)`` with ``β_k = beta / k^beta_sigma`` from ``y = 0``,
    ``λ ← softmax(λ − γ_k (y yᵀ + ρ I) λ)`` with ``γ_k = gamma / k^gamma_sigma`` from
    ``λ = 1/T``, and the update is ``Σ_t λ_t y_t``. The softmax is LibMTL's (the paper
    projects onto the simplex). Defaults are LibMTL's: ``beta = 0.5``, ``beta_sigma = 0.5``,
    ``gamma = 0.1``, ``gamma_sigma = 0.5``, ``rho = 0``. ``L_t``: the value of the term whose
    gradient is ``g_t`` (in training ``w_t L_t``; ones when no losses are given). ``y`` is a
    ``[T, P]`` buffer (in checkpoints). Not a combination of this step's gradients; not
    scale-invariant (``γ`` multiplies ``y yᵀ``).

    >>> agg = MoCo(n_tasks=2)
    >>> agg(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([1.0, 3.0]))
    tensor([0.2625, 0.7125])
    """

    _state: ClassVar[tuple[str, ...]] = ("y",)
    y: Tensor
    lambd: Tensor
    steps: Tensor

    def __init__(
        self,
        n_tasks: int,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
    ) -> None:
        super().__init__(n_tasks)
        self.beta = check_positive("beta", beta)
        self.beta_sigma = check_positive("beta_sigma", beta_sigma, zero=True)
        self.gamma = check_positive("gamma", gamma)
        self.gamma_sigma = check_positive("gamma_sigma", gamma_sigma, zero=True)
        self.rho = check_positive("rho", rho, zero=True)
        self._empty_state()
        self.register_buffer("lambd", torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    @property
    def needs_losses(self) -> bool:
        return True

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, beta={self.beta}, beta_sigma={self.beta_sigma}, "
            f"gamma={self.gamma}, gamma_sigma={self.gamma_sigma}, rho={self.rho}"
        )

    def _aggregate(self, G: Tensor, losses: Tensor | None) -> tuple[Tensor, Tensor]:
        k = int(self.steps) + 1
        self.steps.fill_(k)
        scale = torch.ones_like(G[:, 0]) if losses is None else losses
        x = G / (G.norm(dim=1, keepdim=True) + 1e-8) * scale[:, None]
        y = self._matrix_state("y", G)
        y = y - (self.beta / k**self.beta_sigma) * (y - x)
        self.y = y
        T = self.n_tasks
        gram = (y @ y.T).to("cpu", torch.float64) + self.rho * torch.eye(T, dtype=torch.float64)
        step = self.gamma / k**self.gamma_sigma
        self.lambd.copy_(torch.softmax(self.lambd - step * (gram @ self.lambd), 0))
        return self.lambd.to(G) @ y, self.lambd.clone()
