"""DualProj: project the mean gradient onto the dual cone of the task gradients."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from polytask.aggregation.base import AGGREGATORS, Array
from polytask.aggregation.upgrad import DualConeAggregator, dual_cone_weights


@AGGREGATORS.register("dualproj")
class DualProj(DualConeAggregator):
    """The projection of the average gradient onto the dual cone ``{x : g_t · x ≥ 0 ∀t}``.

    The projection of Lopez-Paz & Ranzato (2017), "Gradient Episodic Memory for Continual
    Learning" (NeurIPS), Equation 11, applied to the mean of the task gradients, as torchjd's
    ``DualProj``: ``c = argmin_{v ≥ 1/T} vᵀ G v`` (Quinton & Rey's Proposition 1, one
    ``T × T`` QP on the Gramian), so the update is the point of the dual cone nearest the
    mean gradient. Non-conflicting (``G c ≥ 0`` up to ``reg_eps``) and permutation-
    equivariant; equal to the mean when the mean conflicts with no task.

    Solver and regularisation are UPGrad's (:func:`~polytask.aggregation.upgrad.dual_cone_weights`:
    quadprog, imported lazily at construction, the trace-normalised Gramian plus
    ``reg_eps · I``; ``reg_eps = 1e-4`` is torchjd's default). As for UPGrad, the Gramian is
    only treated as zero when its trace is ``≤ norm_eps = 0``, where torchjd's absolute
    ``1e-4`` would turn DualProj into the mean for small gradients.

    The mean ``(−0.5, 0.5)`` of ``(1, 0)`` and ``(−2, 1)`` conflicts with the first; its
    projection is ``(0, 0.5)`` (``reg_eps`` leaves ``−6e-4`` of conflict):

    >>> import torch
    >>> DualProj(n_tasks=2)(torch.tensor([[1.0, 0.0], [-2.0, 1.0]])).abs().round(decimals=2)
    tensor([0.0000, 0.5000])
    """

    non_conflicting: ClassVar[bool] = True

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        mean = np.full((1, self.n_tasks), 1.0 / self.n_tasks)
        return dual_cone_weights(gramian, mean, self.reg_eps, self.norm_eps)[0]
