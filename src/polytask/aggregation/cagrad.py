"""CAGrad: conflict-averse gradient descent (Liu, Liu, Jin, Stone & Liu, 2021)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array, Index, normalized
from polytask.aggregation.mgda import min_norm_weights


def _shifted(G: Array, a: Array, g0_sq: float, t: float) -> Array:
    """Gramian of the points ``g_k + t g0`` (the hull translated by ``t g0``)."""
    return G + t * (a[:, None] + a[None, :]) + t * t * g0_sq


def _face_root(
    G: Array, a: Array, face: Index, c: float, lo: float, hi: float
) -> tuple[float, Array] | None:
    """``(t, μ)`` with ``t ∈ (lo, hi)`` and ``‖Proj_{aff(face)}(−t g0)‖ = c t``, if any.

    On a fixed face the projection's affine weights are ``μ(t) = μ0 + t μ1`` (one KKT
    system, two right-hand sides), so the condition is the quadratic
    ``(C − c²) t² + 2 B t + A = 0`` with ``A, B, C`` the Gram forms of ``μ0, μ1``.
    """
    sub = G[face[:, None], face]
    n = len(face)
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n], kkt[:n, n], kkt[n, :n] = sub, 1.0, 1.0
    rhs = np.zeros((n + 1, 2))
    rhs[n, 0], rhs[:n, 1] = 1.0, -a[face]
    mu = np.asarray(np.linalg.lstsq(kkt, rhs, rcond=None)[0][:n], dtype=np.float64)
    forms = mu.T @ sub @ mu
    A, B, C = float(forms[0, 0]), float(forms[0, 1]), float(forms[1, 1]) - c * c
    if abs(C) > 1e-14 * max(abs(A), abs(B), c * c):
        disc = B * B - A * C
        if disc < 0.0:
            return None
        roots = [(-B - math.sqrt(disc)) / C, (-B + math.sqrt(disc)) / C]
    else:
        roots = [-A / (2.0 * B)] if B != 0.0 else []
    inside = [r for r in roots if lo < r < hi]
    if not inside:
        return None
    t = min(inside)
    weights: Array = mu[:, 0] + t * mu[:, 1]
    return t, weights


def _certified(shifted: Array, face: Index, mu: Array) -> bool:
    """Whether ``Σ μ_k q_k`` (``μ ≥ 0`` on ``face``) is the hull's min-norm point (Wolfe test)."""
    if np.any(mu < 0.0):
        return False
    dots = shifted[:, face] @ mu
    return bool(np.min(dots) >= mu @ dots[face] - 1e-12 * float(np.max(np.diag(shifted))))


def cagrad_direction(G: Array, c: float, floor: float) -> tuple[float, Array] | None:
    """``(t, λ)`` with ``Proj_H(−t g0) = Σ λ_k g_k`` and ``‖·‖ = c t``; ``None`` if ``p* ≈ 0``.

    ``H = conv{g_k}``, ``g0`` their mean. The CAGrad dual ``min_{λ ∈ Δ} g0·g_λ + c‖g_λ‖``
    has the KKT conditions of ``min_λ ‖g_λ + t g0‖²`` with ``t = ‖g_λ‖ / c``, so its solution
    is the projection of ``−t g0`` onto the hull at the ``t`` where ``φ(t) = ‖p(t)‖ − c t``
    vanishes. ``φ(‖p0‖/c) ≥ 0`` and ``φ(max‖g‖/c) ≤ 0`` bracket the root; on the current
    face the root is a quadratic's, accepted once Wolfe's optimality test certifies it,
    else the face is refreshed by a warm-started min-norm solve at that root (a Newton
    jump on the piecewise-quadratic ``φ``) or, when jumps stall, at the bracket midpoint.
    An optimum with ``‖p*‖ < floor · max‖g‖`` is indistinguishable from ``p* = 0`` at the
    Gramian's precision (and ``λ / t`` would amplify its rounding), so it returns ``None``.
    """
    T = G.shape[0]
    a = G.mean(axis=1)  # g_k · g0
    g0_sq = float(a.mean())

    def probe(t: float, start: Index) -> tuple[float, Array]:
        lam = min_norm_weights(_shifted(G, a, g0_sq, t), start=start)
        return math.sqrt(max(float(lam @ G @ lam), 0.0)) - c * t, lam

    lam = min_norm_weights(G, start=np.arange(T))
    hi = math.sqrt(float(np.max(np.diag(G)))) / c
    lo = math.sqrt(max(float(lam @ G @ lam), 0.0)) / c
    if lo < floor * hi:  # 0 is (numerically) in the hull: φ must be positive at the floor
        lo = floor * hi
        phi, lam = probe(lo, np.flatnonzero(lam > 0.0))
        if phi < 0.0:
            return None
    stalled = False
    for _ in range(100):
        face = np.flatnonzero(lam > 0.0)
        root = _face_root(G, a, face, c, lo, hi)
        if root is not None and _certified(_shifted(G, a, g0_sq, root[0]), face, root[1]):
            weights = np.zeros(T)
            weights[face] = root[1]
            return root[0], weights
        # Probe at the face's root (a Newton jump) unless the last jump barely shrank the
        # bracket, then bisect: the bracket at least halves every other probe.
        t = root[0] if root is not None and not stalled else (lo + hi) / 2.0
        width = hi - lo
        phi, lam = probe(t, face)
        if abs(phi) <= 1e-12 * c * t or hi - lo <= 1e-12 * hi:
            return t, lam
        lo, hi = (t, hi) if phi > 0.0 else (lo, t)
        stalled = hi - lo > 0.5 * width
    return (lo + hi) / 2.0, lam


@AGGREGATORS.register("cagrad")
class CAGrad(Aggregator):
    """Maximise the worst task's improvement within a ball around the average gradient.

    Liu, Liu, Jin, Stone & Liu (2021), "Conflict-Averse Gradient Descent for Multi-task
    Learning" (NeurIPS): ``max_d min_t g_t·d`` subject to ``‖d − g0‖ ≤ c‖g0‖`` with
    ``g0 = mean_t g_t``; its dual ``min_{w ∈ Δ} g0·g_w + c‖g0‖‖g_w‖`` gives
    ``d = g0 + c‖g0‖ g_w / ‖g_w‖``. ``c = 0.4`` and ``rescale = 1`` (divide by ``1 + c²``;
    ``0``: none, ``2``: divide by ``1 + c``) follow the official code. The paper's code
    solves the dual with SciPy's SLSQP, torchjd with cvxpy; here it is solved exactly, NumPy
    only, by a root search over projections onto the gradients' hull
    (:func:`cagrad_direction`). When the optimum is ``g_w = 0`` the update is ``g0``, as in
    the official code's limit. Coefficients are scale-invariant (computed on the trace-
    normalised Gramian).

    >>> import torch
    >>> CAGrad(n_tasks=2, rescale=0)(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    tensor([0.7000, 0.7000])
    """

    advised_for_conflict: ClassVar[bool] = True

    def __init__(self, n_tasks: int, c: float = 0.4, rescale: Literal[0, 1, 2] = 1) -> None:
        super().__init__(n_tasks)
        if not (math.isfinite(c) and c >= 0.0):
            raise ValueError(f"c must be a finite number >= 0, got {c}")
        if rescale not in (0, 1, 2):
            raise ValueError(f"rescale must be 0, 1 or 2, got {rescale!r}")
        self.c = c
        self.rescale = rescale

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, c={self.c}, rescale={self.rescale}"

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        G = normalized(gramian)
        T = self.n_tasks
        weights = np.full(T, 1.0 / T)
        radius = self.c * math.sqrt(max(float(G.mean()), 0.0))  # c ‖g0‖
        if radius > 0.0:
            solution = cagrad_direction(G, radius, floor=math.sqrt(eps))
            if solution is not None:
                t, lam = solution
                weights = weights + lam / t  # g0 + (c‖g0‖ / ‖g_w‖) g_w, and ‖g_w‖ = c‖g0‖ t
        divisor = {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        return weights / divisor
