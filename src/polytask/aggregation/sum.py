"""Sum: add the task gradients (what one backward of the summed loss gives)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array


@AGGREGATORS.register("sum")
class Sum(Aggregator):
    """Coefficients all ones: ``update = Σ_t g_t``, the baseline without gradient surgery.

    >>> import torch
    >>> Sum(n_tasks=2)(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    tensor([1., 1.])
    """

    gramian_free: ClassVar[bool] = True
    needs_all_tasks: ClassVar[bool] = False
    needs_shared_gradients: ClassVar[bool] = False

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        return np.ones(self.n_tasks)
