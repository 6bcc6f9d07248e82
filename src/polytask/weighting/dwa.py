"""Dynamic Weight Average (Liu, Johns & Davison, 2019)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from polytask.weighting.base import WEIGHTINGS, LossWeighting


@WEIGHTINGS.register("dwa")
class DWA(LossWeighting):
    """Weights ``T · softmax(r / temperature)`` with ``r_t`` the rate of change of ``L_t``.

    Liu, Johns & Davison (2019), "End-to-End Multi-Task Learning with Attention" (CVPR),
    eq. 7: ``w_t(k) = T exp(r_t(k−1)/τ) / Σ_i exp(r_i(k−1)/τ)``, ``r_t(k−1) =
    L_t(k−1) / L_t(k−2)``, and ``w_t = 1`` for the first two periods. A task whose loss
    falls slowly gets more weight. The paper's period is an epoch and ``L`` the mean loss
    over it; here a period is ``window`` calls of :meth:`observe` (one per optimiser step),
    so ``window=steps_per_epoch`` reproduces the paper and the default ``window=1`` adapts
    every step. The two last period means and the running window are buffers.

    >>> w = DWA(n_tasks=2)
    >>> for losses in ([1.0, 1.0], [0.5, 1.0]):
    ...     w.observe(torch.tensor(losses))
    >>> w(torch.tensor([0.5, 1.0]))
    tensor([0.8756, 1.1244])
    """

    adapts_to_scale: ClassVar[bool] = True

    history: Tensor
    periods: Tensor
    window_sum: Tensor
    window_count: Tensor

    def __init__(self, n_tasks: int, temperature: float = 2.0, window: int = 1) -> None:
        super().__init__(n_tasks)
        if not temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.temperature = temperature
        self.window = window
        # history[0] = L(k−1), history[1] = L(k−2): means of the last two complete periods.
        self.register_buffer("history", torch.ones(2, n_tasks, dtype=torch.float64))
        self.register_buffer("periods", torch.tensor(0))
        self.register_buffer("window_sum", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("window_count", torch.tensor(0))

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, temperature={self.temperature}, window={self.window}"

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        if int(self.periods) < 2:
            return torch.ones_like(losses)
        rate = self.history[0] / self.history[1].clamp(min=torch.finfo(torch.float64).tiny)
        weights = self.n_tasks * torch.softmax(rate / self.temperature, dim=0)
        return weights.to(device=losses.device, dtype=losses.dtype)

    def observe(self, losses: Tensor) -> None:
        new = self._check(losses).to(self.window_sum.device, torch.float64)
        if not torch.isfinite(new).all():
            return
        self.window_sum.add_(new)
        self.window_count.add_(1)
        if int(self.window_count) == self.window:
            self.history[1] = self.history[0]
            self.history[0] = self.window_sum / self.window
            self.periods.add_(1)
            self.window_sum.zero_()
            self.window_count.zero_()
