"""CR-MOGM: smooth another aggregator's coefficients over steps (Zhou et al., 2022)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from polytask.aggregation.base import AGGREGATORS, Aggregator, Array
from polytask.registry import unknown_name


@AGGREGATORS.register("cr_mogm")
class CRMOGM(Aggregator):
    """An exponential moving average of an inner aggregator's coefficients across steps.

    Zhou, Zhang, Jiang, Zhong, Gu & Zhu (2022), "On the Convergence of Stochastic
    Multi-Objective Gradient Manipulation and Beyond" (NeurIPS), the correlation-reduced
    weights of CR-MOGM, as torchjd's ``CRMOGMWeighting``: with ``λ̂_k`` the coefficients
    the ``inner`` method gives at step ``k``, ``λ_k = α λ_{k−1} + (1 − α) λ̂_k`` and the
    update is ``λ_k @ G_k``; ``λ_0`` is ``initial_weights``, or ``λ̂_1`` when none are given
    (the first update is then the inner method's). ``alpha = 0.9`` is torchjd's default (the
    paper's Corollary 1 lets ``α_k`` grow toward 1 as the learning rate decays; here it is
    fixed); ``inner = "mgda"``, the method the paper analyses. ``λ`` is a buffer; the inner
    method is a submodule, so its own state is checkpointed with it.

    The inner method is built by name with ``n_tasks`` and its defaults (its
    hyperparameters cannot be set here). Refused: a Gramian-free inner (fixed coefficients:
    smoothing them changes nothing) and ``cr_mogm`` itself. Not non-conflicting even for a
    non-conflicting inner method (yesterday's ``λ`` need not suit today's gradients), and
    declared not permutation-equivariant because some inner methods are not (an
    equivariant inner one, such as MGDA, stays equivariant).

    >>> import torch
    >>> agg = CRMOGM(n_tasks=2, alpha=0.5)
    >>> agg.weights(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    tensor([0.5000, 0.5000])
    >>> agg.weights(torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    tensor([0.6500, 0.3500])
    """

    permutation_equivariant: ClassVar[bool] = False

    smoothed: Tensor
    started: Tensor

    def __init__(
        self,
        n_tasks: int,
        inner: str = "mgda",
        alpha: float = 0.9,
        initial_weights: list[float] | None = None,
    ) -> None:
        super().__init__(n_tasks)
        if not isinstance(inner, str) or inner not in AGGREGATORS:
            raise ValueError(unknown_name("inner aggregator", str(inner), AGGREGATORS.names()))
        cls = AGGREGATORS.get(inner)
        if cls is CRMOGM or cls.gramian_free or cls.needs_matrix:
            why = "it is cr_mogm itself" if cls is CRMOGM else "its coefficients are fixed"
            if cls.needs_matrix:
                why = "it needs the gradient matrix, not only its Gramian"
            raise ValueError(f"inner aggregator '{inner}' cannot be smoothed: {why}")
        if isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        if initial_weights is not None and (
            len(initial_weights) != n_tasks or not np.isfinite(initial_weights).all()
        ):
            raise ValueError(
                f"initial_weights needs {n_tasks} finite numbers (one per task), "
                f"got {initial_weights}"
            )
        self.inner, self.alpha, self.initial_weights = inner, alpha, initial_weights
        self.method = cls(n_tasks)
        start = torch.zeros(n_tasks, dtype=torch.float64)
        if initial_weights is not None:
            start = torch.tensor(initial_weights, dtype=torch.float64)
        self.register_buffer("smoothed", start)
        self.register_buffer("started", torch.tensor(initial_weights is not None))

    @property
    def needs_losses(self) -> bool:
        return self.method.needs_losses

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, inner={self.inner!r}, alpha={self.alpha}, "
            f"initial_weights={self.initial_weights}"
        )

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        current = self.method._weights(gramian, losses, eps)
        previous = self.smoothed.detach().cpu().numpy() if bool(self.started) else current
        smoothed = self.alpha * previous + (1.0 - self.alpha) * current
        self.smoothed.copy_(torch.from_numpy(smoothed))
        self.started.fill_(True)
        return smoothed
