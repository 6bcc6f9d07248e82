"""PCD: priority-constrained descent (TMLR 2026, as torchjd 0.18 implements it)."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array


def priority_multipliers(G: Array, b: Array, tol: float, dependence: float) -> Array | None:
    """``μ ≥ 0`` with ``d = g_0 + Σ_j μ_j g_j`` solving ``min ½‖d − g_0‖²`` s.t.
    ``g_j · d ≥ b_j`` (``j ≥ 1``), or ``None`` when the constraints are infeasible.

    Goldfarb & Idnani (1983), "A numerically stable dual method for solving strictly convex
    quadratic programs", for the identity Hessian, on the Gramian ``G`` alone: ``d`` stays a
    combination of the gradients, so every slack is ``G[j, 0] + (G_s μ)_j − b_j``. Each
    outer pass adds the most violated constraint ``p``: the primal step is along the part of
    ``g_p`` orthogonal to the active gradients (norm² ``G_pp − G_pA r``, ``r`` the least-
    squares coefficients), the dual step lowers the active ``μ`` by ``r``; an active ``μ``
    reaching 0 drops that constraint first. A step that is infinite both ways means no
    feasible ``d``. ``tol`` (absolute) accepts slacks; a part orthogonal to the active set
    of norm² ``≤ dependence · G_pp`` counts as zero (dependent gradients).
    """
    Gs, m = G[1:, 1:], G.shape[0] - 1
    mu, active = np.zeros(m), list[int]()
    adding: int | None = None  # the violated constraint being added
    for _ in range(10 * m):  # about m changes in practice; the bound stops rounding cycles
        if adding is None:
            slack = G[1:, 0] + Gs @ mu - b
            slack[active] = 0.0
            adding = int(np.argmin(slack))
            if slack[adding] >= -tol:
                return mu
        p = adding
        gap = -float(G[1 + p, 0] + Gs[p] @ mu - b[p])
        idx = np.array(active, dtype=np.intp)
        r = np.linalg.solve(Gs[np.ix_(idx, idx)], Gs[idx, p]) if active else np.zeros(0)
        orthogonal = float(Gs[p, p] - Gs[p, idx] @ r)
        full = gap / orthogonal if orthogonal > dependence * Gs[p, p] else math.inf
        ratios = np.divide(mu[idx], r, out=np.full(len(r), math.inf), where=r > 0.0)
        k = int(np.argmin(ratios)) if active else -1
        partial = float(ratios[k]) if active else math.inf
        step = min(full, partial)
        if step == math.inf:
            return None
        mu[idx] -= step * r
        mu[p] += step
        if full <= partial:
            active.append(p)
            adding = None
        else:  # an active multiplier reached 0: drop its constraint, then retry p
            mu[active.pop(k)] = 0.0
    return np.clip(mu, 0.0, None)


@AGGREGATORS.register("pcd")
class PCD(Aggregator):
    """Follow the first task's gradient, guaranteeing every other task a share of progress.

    Priority-Constrained Descent, from "Not All Objectives Are Born Equal: Priority-
    Constrained Descent for Hierarchical Multi-Objective Optimization" (TMLR 2026,
    arXiv:2606.29521, code: github.com/DaraVaram/priority-constrained-descent), as torchjd
    0.18 implements it: task 0 (the first of the config) is primary; with ``g̃_t = s_t g_t``
    and ``s_t = 1 / √(v̂_t + eps)``, ``v̂_t`` the bias-corrected EMA (decay ``beta``) of
    ``‖g_t‖²`` over the calls, ``d̃ = argmin ½‖d − g̃_0‖²`` subject to ``g̃_j · d ≥ τ_j ‖g̃_j‖²``
    for every other task, a QP solved exactly on the Gramian
    (:func:`priority_multipliers`); the update is ``d̃`` rescaled to ``‖g_0‖``. Zero when
    ``g_0 = 0`` or ``d̃ = 0`` to rounding; ``g_0`` when the constraints are infeasible.

    ``tau`` (one value, or one per secondary task) ``= 0.02``, ``beta = 0.999``,
    ``eps = 1e-8``: torchjd's defaults. The EMA and the call count are buffers. Neither
    permutation-equivariant (task 0 is special) nor non-conflicting (the primary task can
    be pushed back, and infeasible constraints are dropped).

    >>> import torch
    >>> PCD(n_tasks=2, tau=0.5)(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    tensor([0.1691, 0.9856])
    """

    permutation_equivariant: ClassVar[bool] = False

    ema: Tensor
    steps: Tensor

    def __init__(
        self,
        n_tasks: int,
        tau: float | list[float] = 0.02,
        beta: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(n_tasks)
        taus = [tau] if isinstance(tau, int | float) else tau
        if isinstance(tau, list) and len(tau) != n_tasks - 1:
            raise ValueError(f"tau needs one value per secondary task ({n_tasks - 1}), got {tau}")
        if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in taus) or not all(
            0.0 <= t <= 1.0 for t in taus
        ):
            raise ValueError(f"tau must be a number in [0, 1] or a list of them, got {tau!r}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if not (math.isfinite(eps) and eps >= 0.0):
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        self.tau, self.beta, self.eps = tau, beta, eps
        self.register_buffer("ema", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("steps", torch.tensor(0))

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, tau={self.tau}, beta={self.beta}, eps={self.eps}"

    def _scales(self, squared_norms: Array) -> Array:
        """Update the EMA of ``‖g_t‖²`` and return ``s_t`` (0 for a gradient always zero)."""
        ema = self.beta * self.ema.detach().cpu().numpy() + (1.0 - self.beta) * squared_norms
        steps = int(self.steps) + 1
        self.ema.copy_(torch.from_numpy(ema))
        self.steps.fill_(steps)
        root = np.sqrt(ema / (1.0 - self.beta**steps) + self.eps)
        return np.divide(1.0, root, out=np.zeros_like(root), where=root > 0.0)

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        T = self.n_tasks
        squared_norms = np.diag(gramian).copy()
        scales = self._scales(squared_norms)
        if squared_norms[0] <= 0.0:
            return np.zeros(T)
        G = gramian * np.outer(scales, scales)
        taus = np.broadcast_to(np.asarray(self.tau, dtype=np.float64), (T - 1,))
        precision = 10.0 * eps  # below it, gradients count as dependent and d̃ as zero
        tol = 1e-9 * max(float(np.max(np.diag(G))), np.finfo(np.float64).tiny)
        mu = priority_multipliers(G, taus * np.diag(G)[1:], tol, max(1e-9, precision))
        w = np.concatenate([[1.0], np.zeros(T - 1) if mu is None else mu])
        squared = float(w @ G @ w)
        rounding = float(np.abs(w) @ np.sqrt(np.clip(np.diag(G), 0.0, None))) ** 2
        if squared <= precision * rounding:
            return np.zeros(T)
        return w * scales * math.sqrt(squared_norms[0] / squared)
