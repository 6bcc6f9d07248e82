"""Loss-scale normalisation: divide each loss by a running average of its own size."""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.weighting.base import WEIGHTINGS, LossWeighting


@WEIGHTINGS.register("scale_norm")
class ScaleNorm(LossWeighting):
    """Weights ``1 / EMA_t(L_t)``, so every task contributes about 1 to the total.

    Tasks whose losses live on different scales (a cross-entropy near 1, a regression MSE
    in the hundreds) otherwise let the largest scale dominate the shared gradient. The
    exponential moving average ``m_t ← β m_t + (1 − β) L_t`` is updated in :meth:`observe`
    (after each optimiser step) and kept in buffers; before the first ``observe`` the
    current losses themselves are the scale.

    >>> w = ScaleNorm(n_tasks=2)
    >>> w(torch.tensor([0.5, 200.0]))
    tensor([2.0000, 0.0050])
    """

    ema: Tensor
    initialised: Tensor

    def __init__(self, n_tasks: int, momentum: float = 0.9, eps: float = 1e-8) -> None:
        super().__init__(n_tasks)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("ema", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("initialised", torch.tensor(False))

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, momentum={self.momentum}, eps={self.eps}"

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        scale = self.ema.to(losses.device) if bool(self.initialised) else losses.double().abs()
        return (1.0 / scale.clamp(min=self.eps)).to(losses.dtype)

    def observe(self, losses: Tensor) -> None:
        new = self._check(losses).to(self.ema.device, torch.float64).abs()
        if not torch.isfinite(new).all():
            return  # a skipped (overflowed) step must not poison the running scale
        if bool(self.initialised):
            self.ema.mul_(self.momentum).add_((1.0 - self.momentum) * new)
        else:
            self.ema.copy_(new)
            self.initialised.fill_(True)
