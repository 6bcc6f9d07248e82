"""Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, 2018)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from polytask.weighting.base import WEIGHTINGS, LossWeighting

Kind = Literal["regression", "classification"]


@WEIGHTINGS.register("uncertainty")
class Uncertainty(LossWeighting):
    """Learned per-task noise ``σ_t``: total ``Σ_t c_t exp(−s_t) L_t + ½ s_t``, ``s_t = log σ_t²``.

    Kendall, Gal & Cipolla (2018), "Multi-Task Learning Using Uncertainty to Weigh Losses
    for Scene Geometry and Semantics", eqs. 5–10: a Gaussian likelihood gives
    ``1/(2σ²) L + log σ`` (``c = ½``, ``kind="regression"``), a scaled softmax gives
    ``1/σ² L + log σ`` (``c = 1``, ``kind="classification"``); ``log σ = ½ s``. The weights
    ``c_t exp(−s_t)`` are differentiable in the learned ``log_vars`` (an ``nn.Parameter``),
    so the caller's backward of ``Σ w_t L_t + regularizer()`` trains them; the optimum is
    ``σ_t² = L_t`` (regression) or ``2 L_t`` (classification).

    ``kinds`` defaults to ``"classification"`` for every task, so the initial weights are 1.

    >>> w = Uncertainty(n_tasks=2, kinds=["regression", "classification"])
    >>> w(torch.tensor([1.0, 1.0])), w.regularizer()
    (tensor([0.5000, 1.0000], grad_fn=<MulBackward0>), tensor(0., grad_fn=<MulBackward0>))
    """

    adapts_to_scale: ClassVar[bool] = True

    needs_all_tasks: ClassVar[bool] = False

    factors: Tensor

    def __init__(
        self,
        n_tasks: int,
        kinds: list[Kind] | None = None,
        init_log_var: float = 0.0,
        lr: float | None = None,
    ) -> None:
        super().__init__(n_tasks)
        if lr is not None and not lr > 0.0:
            raise ValueError(f"lr must be > 0 (or null for the run's head_lr), got {lr}")
        self.params_lr = lr
        kinds = list(kinds) if kinds is not None else ["classification"] * n_tasks
        if len(kinds) != n_tasks:
            raise ValueError(f"uncertainty kinds: expected {n_tasks} values, got {len(kinds)}")
        bad = [k for k in kinds if k not in ("regression", "classification")]
        if bad:
            raise ValueError(
                f"uncertainty kinds must be 'regression' or 'classification', got {bad}"
            )
        self.kinds = kinds
        self.init_log_var = float(init_log_var)
        self.log_vars = nn.Parameter(torch.full((n_tasks,), self.init_log_var))
        factors = [0.5 if k == "regression" else 1.0 for k in kinds]
        self.register_buffer("factors", torch.tensor(factors))

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, kinds={self.kinds}, init_log_var={self.init_log_var}, "
            f"lr={self.params_lr}"
        )

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        weights = self.factors * torch.exp(-self.log_vars)
        return weights.to(device=losses.device, dtype=losses.dtype)

    def regularizer(self, index: list[int] | None = None) -> Tensor:
        log_vars = self.log_vars if index is None else self.log_vars[index]
        return 0.5 * log_vars.sum()
