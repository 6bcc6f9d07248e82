"""ConFIG: conflict-free updates (Liu, Chen & Thuerey, 2025)."""

from __future__ import annotations

import numpy as np

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array


@AGGREGATORS.register("config")
class ConFIG(Aggregator):
    """Move along the direction equally aligned with every task, as far as their projections sum.

    Liu, Chen & Thuerey (2025), "ConFIG: Towards Conflict-free Training of Physics Informed
    Neural Networks" (ICLR), Equation 2, as in torchjd and the official code: with ``U`` the
    row-normalised gradients, the direction is ``u = U⁺ 1 / ‖U⁺ 1‖`` (equal cosine with
    every ``g_t`` when the gradients are linearly independent) and its length is the sum of
    the projections, ``Σ_t g_t · u``. On the Gramian: with ``D = diag(‖g_t‖)`` and
    ``K = D⁻¹ G Gᵀ D⁻¹`` (the cosines), ``U⁺ 1 = Uᵀ K⁺ 1``, so the update is
    ``c @ G`` with ``c = (dᵀ K K⁺ 1) / (1ᵀ K⁺ 1) · D⁻¹ K⁺ 1``. A zero gradient is a zero row
    of ``U`` (as torchjd's ``nan_to_num``). When ``1`` is orthogonal to ``K``'s range (two
    exactly opposed gradients and nothing else), ``U⁺ 1 = 0`` and so is the update, as
    torchjd's normalisation makes it; the test is ``‖K K⁺ 1‖² ≤ T · eps · ‖1‖²``, since
    near it the direction is a ratio of two vanishing quantities, decided by rounding.

    ``K⁺`` drops the eigenvalues below ``max(λ) · T · eps`` of the Gramian's precision: the
    Gramian squares the singular values of ``U``, so those below ``√(T · eps)`` of the
    largest, which torchjd's SVD of the matrix still resolves, are rounding noise here.
    Non-conflicting when the gradients are linearly independent (then ``g_t · update ∝
    ‖g_t‖ > 0``), not in general (rank-deficient ``K``: the least-squares ``U⁺ 1`` can
    leave a task behind), so the flag is false. The preference vector of the paper and
    torchjd is fixed to ``1`` (equal weights, their default).

    >>> import torch
    >>> ConFIG(n_tasks=2)(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    tensor([1.5000, 1.5000])
    """

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        T = self.n_tasks
        norms = np.sqrt(np.clip(np.diag(gramian), 0.0, None))
        inverse = np.divide(1.0, norms, out=np.zeros(T), where=norms > 0.0)
        values, vectors = np.linalg.eigh(gramian * np.outer(inverse, inverse))
        keep = values > max(float(values[-1]), 0.0) * T * eps
        if not keep.any():
            return np.zeros(T)  # every gradient is zero
        values, vectors = values[keep], vectors[:, keep]
        along = vectors.T @ np.ones(T)  # 1 in the eigenbasis of K's range
        if float(along @ along) <= T * T * eps:  # 1 ⊥ range(K) up to rounding: U⁺ 1 = 0
            return np.zeros(T)
        pinv_ones = vectors @ (along / values)  # K⁺ 1
        length = float(norms @ (vectors @ along))  # dᵀ K K⁺ 1: Σ_t g_t · (U⁺ 1)
        squared = float(along @ (along / values))  # 1ᵀ K⁺ 1 = ‖U⁺ 1‖²
        return (length / squared) * inverse * pinv_ones
