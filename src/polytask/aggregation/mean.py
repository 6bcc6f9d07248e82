"""Mean: average the task gradients."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array


@AGGREGATORS.register("mean")
class Mean(Aggregator):
    """Coefficients all ``1/T``: ``update = mean_t g_t``.

    >>> import torch
    >>> Mean(n_tasks=2)(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    tensor([0.5000, 0.5000])
    """

    gramian_free: ClassVar[bool] = True
    needs_all_tasks: ClassVar[bool] = False
    needs_shared_gradients: ClassVar[bool] = False

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        return np.full(self.n_tasks, 1.0 / self.n_tasks)
