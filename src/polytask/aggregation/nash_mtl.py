"""Nash-MTL: multi-task learning as a bargaining game (Navon et al., 2022)."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array


def nash_weights(G: Array, start: Array, ridge: float, max_iter: int, tol: float) -> Array:
    """The ``α > 0`` with ``(G α)_t = 1 / α_t`` for all ``t`` (the Nash bargaining solution).

    Those are the stationarity conditions of the strictly convex, self-concordant
    ``f(α) = ½ αᵀ (G + ρI) α − Σ_t log α_t``, minimised by damped Newton: step
    ``1 / (1 + λ)`` while the Newton decrement ``λ > ¼`` (feasible and decreasing by the
    self-concordance bounds, so no line search on ``f``, whose value drowns in rounding
    when ``α`` is large), full steps after (quadratic convergence). The ridge ``ρ`` keeps
    ``f`` bounded below when a non-negative combination of gradients vanishes (a zero
    gradient, or two exactly opposed ones), where the unregularised ``α`` would diverge.
    """
    H0 = G + ridge * np.eye(G.shape[0])
    alpha = np.where(start > 0.0, start, 1.0)
    alpha *= math.sqrt(len(alpha) / float(alpha @ H0 @ alpha))  # best multiple of the guess
    previous = math.inf
    for _ in range(max_iter):
        grad = H0 @ alpha - 1.0 / alpha
        step = np.linalg.solve(H0 + np.diag(1.0 / alpha**2), grad)
        decrement = math.sqrt(max(float(grad @ step), 0.0))
        if decrement <= tol or (decrement <= 0.25 and decrement >= previous):
            break  # converged, or full steps stopped helping: the rounding floor
        alpha = alpha - (step / (1.0 + decrement) if decrement > 0.25 else step)
        previous = decrement
    return alpha


@AGGREGATORS.register("nash_mtl")
class NashMTL(Aggregator):
    """The Nash bargaining solution between tasks: ``G α = 1 / α``, update ``Σ α_t g_t``.

    Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya (2022), "Multi-Task
    Learning as a Bargaining Game" (ICML), Algorithm 1: every task gets the same
    "bargaining" log-utility, ``α_t (g_t · d) = 1``, so ``g_t · d = 1 / α_t > 0``
    (non-conflicting). As in the official code the Gramian is first divided by its
    Frobenius norm, ``α`` is recomputed every ``update_weights_every`` calls (else
    reused), and the update is scaled down to norm ``max_norm`` when longer (``0`` = off;
    the official code clips the shared gradient to 1.0).

    Solver: the official code (and torchjd) iterate a sequence of convex problems with
    cvxpy/ECOS; here Newton's method solves the same equations directly
    (:func:`nash_weights`, NumPy only, warm-started from the previous ``α``) — no optional
    dependency. ``ridge`` (relative to the normalised Gramian) keeps ``α`` finite when tasks
    exactly cancel or a gradient is zero. ``α`` and the call counter are buffers.

    >>> agg = NashMTL(n_tasks=2, max_norm=0.0)
    >>> agg(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    tensor([2.0305, 2.0305])
    """

    non_conflicting: ClassVar[bool] = True

    alpha: Tensor
    calls: Tensor

    def __init__(
        self,
        n_tasks: int,
        max_norm: float = 1.0,
        update_weights_every: int = 1,
        ridge: float = 1e-8,
        max_iter: int = 100,
    ) -> None:
        super().__init__(n_tasks)
        if not (math.isfinite(max_norm) and max_norm >= 0.0):
            raise ValueError(f"max_norm must be a finite number >= 0, got {max_norm}")
        for name, value in (("update_weights_every", update_weights_every), ("max_iter", max_iter)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not ridge > 0.0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        self.max_norm = max_norm
        self.update_weights_every = update_weights_every
        self.ridge = ridge
        self.max_iter = max_iter
        self.register_buffer("alpha", torch.ones(n_tasks, dtype=torch.float64))
        self.register_buffer("calls", torch.tensor(0))

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, max_norm={self.max_norm}, "
            f"update_weights_every={self.update_weights_every}, ridge={self.ridge}, "
            f"max_iter={self.max_iter}"
        )

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        scale = float(np.linalg.norm(gramian))
        alpha = self.alpha.detach().cpu().numpy()
        if int(self.calls) % self.update_weights_every == 0 and scale > 0.0:
            alpha = nash_weights(gramian / scale, alpha, self.ridge, self.max_iter, tol=1e-10)
            self.alpha.copy_(torch.from_numpy(alpha))
        self.calls.add_(1)
        norm = math.sqrt(max(float(alpha @ gramian @ alpha), 0.0))
        if self.max_norm > 0.0 and norm > self.max_norm:
            alpha = alpha * (self.max_norm / norm)
        return alpha
