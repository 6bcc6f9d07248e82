"""GradVac: gradient vaccine (Wang, Tsvetkov, Firat & Cao, 2021)."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array, SeededState, normalized


@AGGREGATORS.register("gradvac")
class GradVac(SeededState, Aggregator):
    """Pull each pair of task gradients toward their running average cosine similarity.

    Wang, Tsvetkov, Firat & Cao (2021), "Gradient Vaccine: Investigating and Improving
    Multi-task Optimization in Massively Multilingual Models" (ICLR), Algorithm 2, on the
    whole shared model: for each task ``i`` and each other task ``j`` in random order, with
    ``φ`` the cosine of the (already modified) ``g_i`` and the original ``g_j`` and
    ``φ̂_ij`` its EMA target, if ``φ < φ̂_ij`` then ``g_i += g_j ‖g_i‖ (φ̂ √(1−φ²) −
    φ √(1−φ̂²)) / (‖g_j‖ √(1−φ̂²))``; then ``φ̂_ij ← (1 − β) φ̂_ij + β φ``. The update is
    ``Σ_i g_i``. As in torchjd's Gramian form, ``g_i = Σ_k C_ik g_k`` so every quantity
    comes from the Gramian. ``beta = 0.5`` (torchjd's and LibMTL's default; the paper used
    1e-2); ``φ̂`` starts at 0 and is a buffer, the order comes from a seeded generator
    whose state is a buffer. Unlike torchjd the Gramian is trace-normalised first, so
    ``eps`` is relative (torchjd's absolute ``eps`` distorts cosines of tiny gradients).

    >>> agg = GradVac(n_tasks=2)
    >>> agg(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    tensor([0.5000, 1.5000])
    """

    permutation_equivariant: ClassVar[bool] = False

    targets: Tensor

    def __init__(self, n_tasks: int, beta: float = 0.5, eps: float = 1e-8, seed: int = 0) -> None:
        super().__init__(n_tasks)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.beta = beta
        self.eps = eps
        self._init_rng(seed)
        self.register_buffer("targets", torch.zeros(n_tasks, n_tasks, dtype=torch.float64))

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, beta={self.beta}, eps={self.eps}, seed={self.seed}"

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        G = normalized(gramian)
        T = self.n_tasks
        with self._rng() as generator:
            orders = [torch.randperm(T - 1, generator=generator).tolist() for _ in range(T)]
        phi_hat = self.targets.detach().cpu().numpy().copy()
        C = np.eye(T)
        for i in range(T):
            others = [j for j in range(T) if j != i]
            cg = C[i] @ G  # g_i · g_k for every original g_k
            for position in orders[i]:
                j = others[position]
                norm_i = math.sqrt(max(float(cg @ C[i]), 0.0))
                norm_j = math.sqrt(max(float(G[j, j]), 0.0))
                denominator = norm_i * norm_j + self.eps
                phi = float(cg[j]) / denominator if denominator > 0.0 else 0.0
                target = float(phi_hat[i, j])
                root_target = math.sqrt(max(1.0 - target * target, 0.0))
                if phi < target and norm_j * root_target + self.eps > 0.0:
                    root_phi = math.sqrt(max(1.0 - phi * phi, 0.0))
                    w = norm_i * (target * root_phi - phi * root_target)
                    w /= norm_j * root_target + self.eps
                    C[i, j] += w
                    cg = cg + w * G[j]
                phi_hat[i, j] = (1.0 - self.beta) * target + self.beta * phi
        self.targets.copy_(torch.from_numpy(phi_hat))
        return C.sum(axis=0)
