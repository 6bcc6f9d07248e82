"""Equal weighting: every task's loss counts once."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from polytask.weighting.base import WEIGHTINGS, LossWeighting


@WEIGHTINGS.register("equal")
class Equal(LossWeighting):
    """Weights all ones: the plain sum of the task losses (the usual baseline).

    >>> Equal(n_tasks=3)(torch.tensor([0.1, 2.0, 5.0]))
    tensor([1., 1., 1.])
    """

    needs_all_tasks: ClassVar[bool] = False

    def forward(self, losses: Tensor) -> Tensor:
        return torch.ones_like(self._check(losses))
