"""Loss-scale normalisation: divide each loss by a running average of its own size."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from polytask.weighting.base import WEIGHTINGS, LossWeighting


@WEIGHTINGS.register("scale_norm")
class ScaleNorm(LossWeighting):
    """Weights ``1 / EMA_t(L_t)``, so every task contributes about 1 to the total.

    Tasks whose losses live on different scales (a cross-entropy near 1, a regression MSE
    in the hundreds) otherwise let the largest scale dominate the shared gradient. The
    exponential moving average ``m_t ← β m_t + (1 − β) L_t`` is updated in :meth:`observe`
    (after each optimiser step) and kept in buffers; before a task's first ``observe`` its
    current loss itself is its scale. Each task's weight reads only its own loss and
    average, so a step that trains some of the tasks updates theirs alone.

    >>> w = ScaleNorm(n_tasks=2)
    >>> w(torch.tensor([0.5, 200.0]))
    tensor([2.0000, 0.0050])
    """

    adapts_to_scale: ClassVar[bool] = True

    needs_all_tasks: ClassVar[bool] = False

    ema: Tensor
    initialised: Tensor  # [T] bool: which tasks' averages have seen a loss

    def __init__(self, n_tasks: int, momentum: float = 0.9, eps: float = 1e-8) -> None:
        super().__init__(n_tasks)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("ema", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("initialised", torch.zeros(n_tasks, dtype=torch.bool))

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, momentum={self.momentum}, eps={self.eps}"

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        own = losses.double().abs()
        scale = torch.where(self.initialised.to(losses.device), self.ema.to(losses.device), own)
        return (1.0 / scale.clamp(min=self.eps)).to(losses.dtype)

    def observe(self, losses: Tensor) -> None:
        self._update(self._check(losses), list(range(self.n_tasks)))

    def observe_subset(self, losses: Tensor, index: list[int]) -> None:
        self._update(losses.detach(), index)

    def _update(self, losses: Tensor, index: list[int]) -> None:
        new = losses.to(self.ema.device, torch.float64).abs()
        if not torch.isfinite(new).all():
            return  # a skipped (overflowed) step must not poison the running scale
        seen = self.initialised[index]
        old = self.ema[index]
        self.ema[index] = torch.where(seen, self.momentum * old + (1.0 - self.momentum) * new, new)
        self.initialised[index] = True

    def _load_from_state_dict(self, state: dict[str, Any], prefix: str, *args: Any) -> None:
        # checkpoints before per-task initialisation kept one flag for every task
        key = prefix + "initialised"
        if key in state and state[key].ndim == 0:
            state[key] = state[key].expand(self.n_tasks).clone()
        super()._load_from_state_dict(state, prefix, *args)
