"""Aligned-MTL: align the principal components of the task gradients (Senushkin et al., 2023)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array

ScaleMode = Literal["min", "median", "rmse"]


@AGGREGATORS.register("aligned_mtl")
class AlignedMTL(Aggregator):
    """Rescale the gradient system so its principal components have equal magnitude.

    Senushkin, Patakin, Kuznetsov & Konushin (2023), "Independent Component Alignment for
    Multi-Task Learning" (CVPR), Algorithm 1: with ``G Gᵀ = V Λ Vᵀ`` (rank ``r``), the
    aligned gradients ``B G`` with ``B = √σ V Λ^{-1/2} Vᵀ`` have orthogonal, equal-norm
    principal components; the update is their sum, so ``c = B 1`` (the official code's
    ``weights.sum(-1)``; torchjd averages instead, a factor ``T``). ``σ`` is the smallest
    kept eigenvalue (``"min"``, the paper), the lower median (``"median"``) or the mean
    (``"rmse"``). Eigenvalues below ``max(λ) · T · eps`` of the Gramian's precision are
    dropped, as in the official code; an all-zero Gramian gives ``c = 1``.

    >>> import torch
    >>> AlignedMTL(n_tasks=2)(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    tensor([1., 1.])
    """

    def __init__(self, n_tasks: int, scale_mode: ScaleMode = "min") -> None:
        super().__init__(n_tasks)
        if scale_mode not in ("min", "median", "rmse"):
            raise ValueError(f"scale_mode must be 'min', 'median' or 'rmse', got {scale_mode!r}")
        self.scale_mode = scale_mode

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, scale_mode={self.scale_mode!r}"

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        values, vectors = np.linalg.eigh(gramian)
        values, vectors = values[::-1], vectors[:, ::-1]  # descending
        rank = int(np.sum(values > values[0] * self.n_tasks * eps))
        if values[0] <= 0.0 or rank == 0:
            return np.ones(self.n_tasks)
        values, vectors = values[:rank], vectors[:, :rank]
        if self.scale_mode == "min":
            sigma = values[-1]
        elif self.scale_mode == "median":
            sigma = np.sort(values)[(rank - 1) // 2]  # torch.median: the lower middle value
        else:
            sigma = values.mean()
        B = np.sqrt(sigma) * (vectors / np.sqrt(values)) @ vectors.T
        return B.sum(axis=1)
