"""SDMGrad: stochastic direction-oriented multi-objective gradient descent (Xiao, Ban & Ji)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array
from polytask.aggregation.modo import check_positive, project_to_simplex


@AGGREGATORS.register("sdmgrad")
class SDMGrad(Aggregator):
    """The min-norm direction pulled toward the mean gradient, solved by projected SGD.

    Xiao, Ban & Ji (2023), "Direction-oriented Multi-objective Learning: Simple and Provable
    Stochastic Algorithms" (NeurIPS), Algorithm 1: with ``A = G₁ G₂ᵀ`` the cross-Gramian of
    two independent batches scaled by ``s² + 10⁻⁸`` (``s`` the mean of ``√max(A_tt, 0)``,
    LibMTL's and torchjd's form of the official ``mean √(A_tt + 10⁻⁴)``), ``n_iter`` steps
    of SGD with momentum on ``w`` from the previous step's ``w`` (``1/T`` at first),
    ``w ← Π_Δ(w − lr · v)``, ``v ← momentum · v + A (w + λ w̃)`` with ``w̃ = 1/T``; the
    coefficients are ``(w + λ w̃) / (1 + λ)`` and the update ``Σ_t c_t (g₁_t + g₂_t) / 2``
    (:attr:`needs_two_batches`). Defaults: ``lr = 10``, ``momentum = 0.5``, ``n_iter = 20``
    from the official code (OptMN-Lab/sdmgrad), ``lamda = 0.3`` from its experiment scripts
    (its class default is 0.6). The official update is ``T ×`` ours ("to match the sum
    loss") and takes a third batch ``ζ``; here the two batches of ``A`` make the update (one
    extra forward/backward per step, not two). ``w`` is a buffer.

    >>> import torch
    >>> agg = SDMGrad(n_tasks=2, n_iter=1, lamda=0.0)
    >>> agg.weights(torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
    tensor([0., 1.], dtype=torch.float64)
    """

    needs_two_batches: ClassVar[bool] = True

    w: Tensor

    def __init__(
        self,
        n_tasks: int,
        lr: float = 10.0,
        momentum: float = 0.5,
        n_iter: int = 20,
        lamda: float = 0.3,
    ) -> None:
        super().__init__(n_tasks)
        self.lr = check_positive("lr", lr)
        self.momentum = check_positive("momentum", momentum, zero=True)
        if self.momentum >= 1.0:
            raise ValueError(f"momentum must be < 1, got {momentum!r}")
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
            raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
        self.n_iter = n_iter
        self.lamda = check_positive("lamda", lamda, zero=True)
        self.register_buffer("w", torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64))

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, lr={self.lr}, momentum={self.momentum}, "
            f"n_iter={self.n_iter}, lamda={self.lamda}"
        )

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        T = self.n_tasks
        scale = float(np.mean(np.sqrt(np.maximum(np.diag(gramian), 0.0))))
        a = gramian / (scale**2 + 1e-8)
        target = np.full(T, self.lamda / T)  # λ w̃
        w = self.w.detach().cpu().numpy()
        velocity = np.zeros(T)
        for i in range(self.n_iter):
            grad = a @ (w + target)
            velocity = grad if i == 0 else self.momentum * velocity + grad
            w = project_to_simplex(w - self.lr * velocity)
        self.w.copy_(torch.from_numpy(w))
        return (w + target) / (1.0 + self.lamda)
