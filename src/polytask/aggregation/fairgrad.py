"""FairGrad: α-fair resource allocation between tasks (Ban & Ji, 2024)."""

from __future__ import annotations

import math

import numpy as np

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array, normalized


def _barrier(w: Array, p: float) -> float:
    """``Σ φ(w_t)`` with ``φ' = w^(−p)``: ``log w`` for ``p = 1``, ``w^(1−p) / (1−p)`` else."""
    return float(np.sum(np.log(w))) if p == 1.0 else float(np.sum(w ** (1.0 - p)) / (1.0 - p))


def fair_weights(G: Array, p: float, ridge: float, max_iter: int = 100) -> Array:
    """The ``w > 0`` with ``((G + ρD) w)_t = w_t^(−p)`` for every ``t``, ``D = diag(G)``.

    The stationarity conditions of the strictly convex ``f(w) = ½ wᵀ (G + ρD) w − Σ φ(w_t)``
    (``φ`` concave, ``φ' = w^(−p)``), minimised by Newton's method with a fraction-to-the-
    boundary rule (``w`` stays positive) and Armijo backtracking; near the solution full
    steps converge quadratically, where ``f`` is too flat to compare values, so the loop
    stops when the Newton decrement stops falling. The ridge ``ρD`` gives each gradient a
    private orthogonal part of relative norm ``√ρ`` (``ρ`` for a zero one), so ``f`` is
    bounded below when a non-negative combination of gradients vanishes (a zero gradient,
    two opposed ones), where the exact ``w`` does not exist; relative to each task's own
    norm, it perturbs small gradients no more than large ones. Starts from the best
    multiple of ``1``.
    """
    diag = np.diag(G)
    H = G + ridge * np.diag(np.where(diag > 0.0, diag, 1.0))
    w = np.full(G.shape[0], (G.shape[0] / float(np.sum(H))) ** (1.0 / (1.0 + p)))

    def f(x: Array) -> float:
        return 0.5 * float(x @ H @ x) - _barrier(x, p)

    previous = math.inf
    for _ in range(max_iter):
        grad = H @ w - w**-p
        step = -np.linalg.solve(H + np.diag(p * w ** (-p - 1.0)), grad)
        decrement = math.sqrt(max(-float(grad @ step), 0.0))
        if decrement <= 1e-10 or (decrement <= 1e-6 and decrement >= previous):
            break  # converged, or full steps stopped helping: the rounding floor
        shrinking = step < 0.0
        t = (
            min(1.0, 0.99 * float(np.min(-w[shrinking] / step[shrinking])))
            if shrinking.any()
            else 1.0
        )
        if decrement > 1e-3:  # far from the solution: backtrack until f decreases enough
            value = f(w)
            while t > 1e-12 and f(w + t * step) > value - 0.25 * t * decrement**2:
                t *= 0.5
        w = w + t * step
        previous = decrement
    return w


@AGGREGATORS.register("fairgrad")
class FairGrad(Aggregator):
    """Maximise the α-fair utility of the tasks' first-order improvements.

    Ban & Ji (2024), "Fair Resource Allocation in Multi-Task Learning" (ICML), Algorithm 1:
    the update ``d = Σ_t w_t g_t`` maximises ``Σ_t (g_t · d)^(1−α) / (1−α)`` over a ball,
    whose optimum satisfies ``(G Gᵀ w)_t = w_t^(−1/α)`` (their Equation 4); ``α = 1`` is
    proportional fairness, Nash-MTL's bargaining solution. ``alpha = 1.0`` and the
    clipping of the update to norm ``max_norm = 1.0`` (``0`` = off) follow the official
    code, as for Nash-MTL; that code also multiplies the update by ``T`` before clipping
    ("to match the sum loss"), which changes nothing at ``α = 1`` (the update's norm is
    then ``√T ≥ 1``) and is left out. ``α = 0`` (linear scalarisation) is refused: use the
    ``mean`` aggregator.

    Solver: the official code and torchjd call SciPy's ``least_squares`` on the raw
    Gramian; here Newton's method solves the equations on the trace-normalised Gramian
    (:func:`fair_weights`, NumPy only) and ``w`` is rescaled exactly (``w ∝ s^(−2α/(1+α))``
    when the gradients scale by ``s``). ``ridge`` (relative to each task's squared norm) keeps
    ``w`` finite when no exact solution exists. Non-conflicting where the exact solution
    exists (``g_t · d = w_t^(−1/α) > 0``), which the ridge makes approximate, so not flagged.

    >>> import torch
    >>> FairGrad(n_tasks=2, max_norm=0.0)(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    tensor([1., 1.])
    """

    def __init__(
        self, n_tasks: int, alpha: float = 1.0, max_norm: float = 1.0, ridge: float = 1e-8
    ) -> None:
        super().__init__(n_tasks)
        if not (math.isfinite(alpha) and alpha > 0.0):
            raise ValueError(
                f"alpha must be a finite number > 0 (alpha = 0 is the 'mean' aggregator), "
                f"got {alpha}"
            )
        if not (math.isfinite(max_norm) and max_norm >= 0.0):
            raise ValueError(f"max_norm must be a finite number >= 0, got {max_norm}")
        if not ridge > 0.0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        self.alpha = alpha
        self.max_norm = max_norm
        self.ridge = ridge

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, alpha={self.alpha}, max_norm={self.max_norm}, "
            f"ridge={self.ridge}"
        )

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        trace = float(np.trace(gramian))
        if trace <= 0.0:
            return np.zeros(self.n_tasks)  # no gradient at all: nothing to allocate
        p = 1.0 / self.alpha
        # (trace · Ĝ) w = w^(−p) with w = k ŵ and Ĝ ŵ = ŵ^(−p) gives k = trace^(−1/(1+p))
        weights = fair_weights(normalized(gramian), p, self.ridge) * trace ** (-1.0 / (1.0 + p))
        norm = math.sqrt(max(float(weights @ gramian @ weights), 0.0))
        if self.max_norm > 0.0 and norm > self.max_norm:
            weights = weights * (self.max_norm / norm)
        return weights
