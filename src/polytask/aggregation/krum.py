"""Krum and Multi-Krum: Byzantine-robust selection (Blanchard et al., 2017)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array


def _count(name: str, value: int, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


@AGGREGATORS.register("krum")
class Krum(Aggregator):
    """Average the ``n_selected`` gradients closest to their nearest neighbours.

    Blanchard, El Mhamdi, Guerraoui & Stainer (2017), "Machine Learning with Adversaries:
    Byzantine Tolerant Gradient Descent" (NeurIPS): with ``f = n_byzantine``, each gradient's
    score is the sum of its squared distances to its ``T − f − 2`` nearest other gradients
    (``s(i) = Σ_{i→j} ‖g_i − g_j‖²``); Krum returns the best-scored gradient, Multi-Krum
    (``n_selected = m``, same paper) the mean of the ``m`` best. Distances come from the
    Gramian, ``‖g_i − g_j‖² = G_ii + G_jj − 2 G_ij`` (clipped at 0).

    ``squared_distances = False`` sums the distances themselves, as torchjd's ``Krum`` does
    (a different selection when squares and plain sums rank the scores differently).
    ``n_byzantine = 0`` by default (torchjd has no default: in multi-task learning no task
    is adversarial, and Krum then picks the most central gradient); ``n_selected = 1``.
    Needs ``T ≥ n_byzantine + 3`` (at least one neighbour) and ``T ≥ n_selected``, checked at
    construction (the paper's guarantee needs ``T > 2f + 2``). Ties are broken by task
    order, so not permutation-equivariant: with ``T = f + 3`` every score is a distance to
    the nearest neighbour and the closest pair always ties. Not non-conflicting.

    >>> import torch
    >>> Krum(n_tasks=3)(torch.tensor([[1.0, 0.0], [1.0, 0.2], [-3.0, 4.0]]))
    tensor([1., 0.])
    """

    permutation_equivariant: ClassVar[bool] = False

    def __init__(
        self,
        n_tasks: int,
        n_byzantine: int = 0,
        n_selected: int = 1,
        squared_distances: bool = True,
    ) -> None:
        super().__init__(n_tasks)
        _count("n_byzantine", n_byzantine, 0)
        _count("n_selected", n_selected, 1)
        if not isinstance(squared_distances, bool):
            raise ValueError(f"squared_distances must be true or false, got {squared_distances!r}")
        if n_tasks < n_byzantine + 3 or n_tasks < n_selected:
            raise ValueError(
                f"krum needs n_tasks >= n_byzantine + 3 and >= n_selected, got n_tasks="
                f"{n_tasks}, n_byzantine={n_byzantine}, n_selected={n_selected}"
            )
        self.n_byzantine = n_byzantine
        self.n_selected = n_selected
        self.squared_distances = squared_distances

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, n_byzantine={self.n_byzantine}, "
            f"n_selected={self.n_selected}, squared_distances={self.squared_distances}"
        )

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        T = self.n_tasks
        diag = np.diag(gramian)
        distances = np.clip(diag[:, None] + diag[None, :] - 2.0 * gramian, 0.0, None)
        if not self.squared_distances:
            distances = np.sqrt(distances)
        others = distances[~np.eye(T, dtype=bool)].reshape(T, T - 1)  # row i without j = i
        neighbours = T - self.n_byzantine - 2
        scores = np.sort(others, axis=1)[:, :neighbours].sum(axis=1)
        chosen = np.argsort(scores, kind="stable")[: self.n_selected]
        weights = np.zeros(T)
        weights[chosen] = 1.0 / self.n_selected
        return weights
