"""UPGrad: unconflicting projection of gradients (Quinton & Rey, 2024)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import ClassVar

import numpy as np

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array, normalized

INSTALL_HINT = 'UPGrad needs the QP solver quadprog: pip install "quadprog==0.1.14"'


def load_quadprog() -> ModuleType:
    """Import quadprog lazily, failing with an install hint (never a silent fallback)."""
    try:
        return importlib.import_module("quadprog")
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error


def dual_cone_weights(gramian: Array, lower: Array, reg_eps: float, norm_eps: float) -> Array:
    """Rows ``v = argmin_{v ≥ u} vᵀ G v``, one per row ``u`` of ``lower`` (``[k, T]``).

    Quinton & Rey's Proposition 1: ``Σ_t v_t g_t`` is the projection of ``Σ_t u_t g_t``
    onto the dual cone ``{x : g_t · x ≥ 0 ∀t}``. The Gramian is divided by its trace (or
    zeroed when that is ``≤ norm_eps``) and ``reg_eps · I`` is added so it is positive
    definite, as in torchjd; one Cholesky serves every row (quadprog accepts ``R⁻¹`` with
    ``G = RᵀR`` and then skips its own factorisation). Shared by UPGrad and DualProj.
    """
    T = gramian.shape[0]
    G = normalized(gramian) if float(np.trace(gramian)) > norm_eps else 0.0 * gramian
    G = G + reg_eps * np.eye(T)
    r_inv = np.linalg.inv(np.linalg.cholesky(G).T)
    zeros, identity = np.zeros(T), np.eye(T)
    solve = load_quadprog().solve_qp  # cached in sys.modules after the first import
    return np.stack([solve(r_inv, zeros, identity, u, 0, True)[0] for u in lower])


class DualConeAggregator(Aggregator):
    """The arguments and solver set-up of the methods solved on the dual cone (UPGrad,
    DualProj): ``reg_eps`` (the ridge on the trace-normalised Gramian) and ``norm_eps``
    (a Gramian whose trace is at most this is treated as zero); quadprog checked at
    construction."""

    def __init__(self, n_tasks: int, reg_eps: float = 1e-4, norm_eps: float = 0.0) -> None:
        super().__init__(n_tasks)
        if not (reg_eps > 0.0 and norm_eps >= 0.0):
            raise ValueError(f"need reg_eps > 0 and norm_eps >= 0, got {reg_eps}, {norm_eps}")
        self.reg_eps = reg_eps
        self.norm_eps = norm_eps
        load_quadprog()  # fail at construction (config time), not at the first step

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, reg_eps={self.reg_eps}, norm_eps={self.norm_eps}"


@AGGREGATORS.register("upgrad")
class UPGrad(DualConeAggregator):
    """Project every task gradient onto the dual cone of all of them, then average.

    Quinton & Rey (2024), "Jacobian Descent for Multi-Objective Optimization", UPGrad as in
    torchjd: for each task ``i``, the projection of ``g_i / T`` onto the dual cone
    ``{x : g_t · x ≥ 0 ∀t}`` is ``Σ_t v_t g_t`` with ``v = argmin_{v ≥ e_i / T} vᵀ G v``
    (their Proposition 1, a ``T × T`` QP on the Gramian); ``c`` is the sum of the ``T``
    solutions. Non-conflicting (``G c ≥ 0`` up to ``reg_eps``) and permutation-equivariant.

    Solver: quadprog (Goldfarb–Idnani dual active set), imported lazily at construction; a
    missing package raises ``ImportError`` with the install hint. As in torchjd the
    Gramian is divided by its trace and ``reg_eps · I`` is added so it is positive
    definite (``reg_eps = 1e-4`` is torchjd's default). Unlike torchjd, a Gramian is only
    treated as zero when its trace is ``≤ norm_eps = 0``: torchjd's absolute threshold
    ``1e-4`` would silently turn UPGrad into the mean for small gradients.

    >>> import torch
    >>> UPGrad(n_tasks=2)(torch.tensor([[1.0, 0.0], [-1.0, 1.0]])).round(decimals=3)
    tensor([0.2500, 0.7500])
    """

    advised_for_conflict: ClassVar[bool] = True

    non_conflicting: ClassVar[bool] = True

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        T = self.n_tasks
        projections = dual_cone_weights(gramian, np.eye(T) / T, self.reg_eps, self.norm_eps)
        total = np.zeros(T)
        for v in projections:  # summed in task order, as before the helper was shared
            total += v
        return total
