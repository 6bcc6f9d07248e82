"""Random Loss Weighting (Lin et al., 2022)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from polytask.rng import SeededState
from polytask.weighting.base import WEIGHTINGS, LossWeighting


@WEIGHTINGS.register("rlw")
class RLW(SeededState, LossWeighting):
    """Fresh random weights every step: ``softmax(z)``, ``z ~ N(0, I)``.

    Lin, Ye, Xu, Shi & Zhang (2022), "Reasonable Effectiveness of Random Weighting: A
    Litmus Test for Multi-Task Learning" (TMLR), with the paper's normal distribution; the
    weights sum to 1 as in the paper (so the total is a random convex combination). Draws
    come from a private generator seeded by ``seed`` whose state is a buffer, so a resumed
    run continues the same sequence.

    >>> w = RLW(n_tasks=3, seed=0)
    >>> float(w(torch.ones(3)).sum())
    1.0
    """

    permutation_equivariant: ClassVar[bool] = False

    def __init__(self, n_tasks: int, seed: int = 0) -> None:
        super().__init__(n_tasks)
        self._init_rng(seed)

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        with self._rng() as generator:
            z = torch.randn(self.n_tasks, generator=generator, dtype=torch.float64)
        return torch.softmax(z, dim=0).to(device=losses.device, dtype=losses.dtype)
