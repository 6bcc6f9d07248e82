"""MGDA: the minimum-norm point in the convex hull of the task gradients (Sener & Koltun, 2018)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array, Index, normalized

Normalization = Literal["none", "l2", "loss", "loss+"]


def _affine_minimizer(gramian: Array) -> Array:
    """``μ`` minimising ``μᵀ G μ`` subject to ``Σ μ = 1`` (no sign constraint)."""
    n = gramian.shape[0]
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = gramian
    kkt[:n, n] = kkt[n, :n] = 1.0
    rhs = np.zeros(n + 1)
    rhs[n] = 1.0
    try:
        solution = np.linalg.solve(kkt, rhs)
    except np.linalg.LinAlgError:  # affinely dependent points: take the least-norm answer
        solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return solution[:n]


def _minor_cycles(gramian: Array, corral: Index, lam: Array) -> tuple[Index, Array]:
    """Move ``λ`` toward the corral's affine minimiser, dropping points whose weight hits 0."""
    for _ in range(len(corral) + 1):  # each pass drops at least one point
        mu = _affine_minimizer(gramian[corral[:, None], corral])
        if np.all(mu > 0.0):
            return corral, mu
        shrinking = mu <= 0.0
        gap = lam[shrinking] - mu[shrinking]  # ≥ 0 since λ ≥ 0 ≥ μ there
        steps = np.divide(lam[shrinking], gap, out=np.zeros_like(gap), where=gap > 0.0)
        lam = lam + float(np.min(steps)) * (mu - lam)
        lam[np.flatnonzero(shrinking)[np.argmin(steps)]] = 0.0
        keep = lam > 0.0
        corral, lam = corral[keep], lam[keep] / lam[keep].sum()
    return corral, lam


def min_norm_weights(
    gramian: Array, start: Index | None = None, tol: float = 1e-12, max_iter: int = 1000
) -> Array:
    """Convex weights ``λ`` of the point of ``conv{g_t}`` nearest the origin, from ``G Gᵀ``.

    Wolfe (1976), "Finding the nearest point in a polytope", in Gramian form: keep a
    *corral* of points whose affine hull's nearest point lies in their convex hull; a major
    cycle adds the point most opposed to the current ``x``, a minor cycle moves toward the
    affine minimiser until a weight hits zero and drops it. Exact in finitely many steps,
    so unlike Frank–Wolfe it has no accuracy/iterations trade-off; the stopping test
    ``x · g_k ≥ ‖x‖² − tol·max‖g‖²`` for every ``k`` certifies the answer. ``start``
    (indices) is a guess of the corral, used when its affine minimiser has positive
    weights: all tasks (one solve when the answer is interior), or the previous support of
    a nearby problem (CAGrad's inner loop); otherwise the search starts from one vertex.
    """
    T = gramian.shape[0]
    scale = float(np.max(np.diag(gramian))) if T else 0.0
    if scale <= 0.0:
        return np.full(T, 1.0 / T)  # all gradients are zero: any convex weights will do
    corral, lam = np.array([np.argmin(np.diag(gramian))]), np.ones(1)
    if start is not None and len(start) > 0:
        mu = _affine_minimizer(gramian[start[:, None], start])
        if np.all(mu > 0.0):  # the guess is a valid corral: skip the cycles that build it
            corral, lam = np.asarray(start), mu
    for _ in range(max_iter):
        dots = gramian[:, corral] @ lam  # x · g_k for every k
        norm_sq = float(lam @ dots[corral])
        k = int(np.argmin(dots))
        if dots[k] >= norm_sq - tol * scale or k in corral:
            break
        new_corral, new_lam = _minor_cycles(gramian, np.append(corral, k), np.append(lam, 0.0))
        sub = gramian[new_corral[:, None], new_corral]
        if float(new_lam @ sub @ new_lam) >= norm_sq:  # rounding stalled: optimal to precision
            break
        corral, lam = new_corral, new_lam
    weights = np.zeros(T)
    weights[corral] = lam
    return weights


@AGGREGATORS.register("mgda")
class MGDA(Aggregator):
    """Multiple-gradient descent: the min-norm convex combination of the task gradients.

    Sener & Koltun (2018), "Multi-Task Learning as Multi-Objective Optimization"
    (NeurIPS): ``update = Σ_t λ_t g_t`` with ``λ = argmin_{λ ∈ Δ} ‖Σ λ_t g_t‖²``, which is
    a common descent direction (``g_t · update ≥ ‖update‖² ≥ 0``) or zero at a Pareto-
    stationary point. Solved exactly on the Gramian by Wolfe's algorithm
    (:func:`min_norm_weights`, NumPy only) instead of the paper's Frank–Wolfe loop.

    ``normalization`` is the option of the paper's code (``gradient_normalizers``), not of
    the paper: task ``t``'s gradient is divided by ``n_t`` = 1 (``"none"``), ``‖g_t‖``
    (``"l2"``), ``L_t`` (``"loss"``) or ``L_t ‖g_t‖`` (``"loss+"``) before solving, and, as
    in that code, the resulting ``λ`` then weights the *unnormalised* gradients. The loss
    forms need the per-task losses: pass ``losses`` to ``forward``/``weights``
    (:attr:`needs_losses` says when). The non-conflict guarantee holds for ``"none"`` only.

    >>> import torch
    >>> MGDA(n_tasks=2)(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    tensor([0.5000, 0.5000])
    """

    non_conflicting: ClassVar[bool] = True

    def __init__(self, n_tasks: int, normalization: Normalization = "none") -> None:
        super().__init__(n_tasks)
        if normalization not in ("none", "l2", "loss", "loss+"):
            raise ValueError(
                f"normalization must be 'none', 'l2', 'loss' or 'loss+', got {normalization!r}"
            )
        self.normalization = normalization

    @property
    def needs_losses(self) -> bool:
        return self.normalization in ("loss", "loss+")

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, normalization={self.normalization!r}"

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        G = normalized(gramian)
        if self.normalization == "none":
            return min_norm_weights(G, start=np.arange(self.n_tasks))
        if self.needs_losses and losses is None:
            raise ValueError(f"MGDA normalization={self.normalization!r} needs the task losses")
        divisor = np.ones(self.n_tasks)
        if self.normalization in ("l2", "loss+"):
            divisor *= np.sqrt(np.clip(np.diag(G), 0.0, None))
        if losses is not None and self.needs_losses:
            divisor *= np.abs(losses)
        # A zero divisor means a zero gradient (l2) or a zero loss: leave that row unscaled.
        divisor = np.where(divisor > 0.0, divisor, 1.0)
        return min_norm_weights(G / np.outer(divisor, divisor), start=np.arange(self.n_tasks))
