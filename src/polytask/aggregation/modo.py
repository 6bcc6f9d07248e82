"""MoDo: multi-objective gradient descent with double sampling (Chen, Fernando, Ying & Chen)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array


def project_to_simplex(y: Array) -> Array:
    """The Euclidean projection of ``y`` onto ``{w ≥ 0, Σ w = 1}`` (sort-based, exact).

    >>> project_to_simplex(np.array([2.0, 0.0])).tolist()
    [1.0, 0.0]
    """
    u = np.sort(y)[::-1]
    cumulative = np.cumsum(u) - 1.0
    k = np.arange(1, len(y) + 1)
    rho = int(np.nonzero(u - cumulative / k > 0)[0][-1])
    return np.maximum(y - cumulative[rho] / (rho + 1), 0.0)


def check_positive(name: str, value: object, zero: bool = False) -> float:
    """``value`` as a float if it is a real number > 0 (``≥ 0`` with ``zero``); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {'≥ 0' if zero else '> 0'}, got {value!r}")
    return float(value)


@AGGREGATORS.register("modo")
class MoDo(Aggregator):
    """Task weights ``λ`` on the simplex, moved each step by a stochastic gradient step.

    Chen, Fernando, Ying & Chen (2023/2024), "Three-Way Trade-Off in Multi-Objective
    Learning: Optimization, Generalization and Conflict-Avoidance" (NeurIPS 2023; JMLR 2024),
    Equation 2.9: with ``A = G₁ G₂ᵀ`` the cross-Gramian of two independent batches (an
    unbiased estimate of ``∇F ∇Fᵀ``, which one batch's ``G Gᵀ`` is not),
    ``λ ← Π_Δ(λ − γ (A λ + ρ λ))`` from ``λ₀ = 1/T``, and the update is
    ``Σ_t λ_t (g₁_t + g₂_t) / 2`` (:attr:`needs_two_batches`). ``gamma = 0.1`` and
    ``rho = 0.1`` are the official code's defaults (heshandevaka/Trade-Off-MOL; torchjd's
    ``MoDoWeighting`` too). The official code updates with the *sum* of the two batches'
    gradients ("handle averaging via the learning rate"): twice ours. ``λ`` is a buffer.
    Not scale-invariant (``γ`` multiplies the Gramian), as in the paper.

    >>> import torch
    >>> agg = MoDo(n_tasks=2, gamma=0.5, rho=0.0)
    >>> agg.weights(torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
    tensor([0.3750, 0.6250], dtype=torch.float64)
    """

    needs_two_batches: ClassVar[bool] = True

    lambd: Tensor

    def __init__(self, n_tasks: int, gamma: float = 0.1, rho: float = 0.1) -> None:
        super().__init__(n_tasks)
        self.gamma = check_positive("gamma", gamma)
        self.rho = check_positive("rho", rho, zero=True)
        self.register_buffer("lambd", torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64))

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, gamma={self.gamma}, rho={self.rho}"

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        lambd = self.lambd.detach().cpu().numpy()
        lambd = project_to_simplex(lambd - self.gamma * (gramian @ lambd + self.rho * lambd))
        self.lambd.copy_(torch.from_numpy(lambd))
        return lambd
