"""IMTL-L, the loss balance of Impartial Multi-Task Learning (Liu et al., 2021)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from polytask.weighting.base import WEIGHTINGS, LossWeighting


@WEIGHTINGS.register("imtl_l")
class IMTLL(LossWeighting):
    """Learned per-task scales ``s_t``: total ``Σ_t e^{s_t} L_t − s_t``.

    Liu et al. (2021), "Towards Impartial Multi-task Learning" (ICLR), the loss-balance
    part (IMTL-L; torchjd's ``IMTLL``). The weights ``e^{s_t}`` are differentiable in the
    learned ``log_scale`` (an ``nn.Parameter``, zero at the start so the first weights are
    1) and the regularizer is ``−Σ_t s_t``, so the caller's backward trains them;
    ``∂/∂s_t = e^{s_t} L_t − 1`` vanishes at ``e^{s_t} L_t = 1``: every scaled loss is
    driven to 1, whatever its raw scale. It is twice ``uncertainty`` of the regression kind
    at ``s = −log σ²`` (``2 (½ e^{s} L − ½ s)``): the same optimum, weights twice as large.

    Task ``t``'s weight and the gradient its scale gets read ``L_t`` alone, so a step that
    trains some of the tasks trains their scales only. ``lr`` is the learning rate of the
    scales (None: the run's ``head_lr``).

    >>> w = IMTLL(n_tasks=2)
    >>> losses = torch.tensor([2.0, 0.5])
    >>> ((w(losses) * losses).sum() + w.regularizer()).backward()
    >>> w.log_scale.grad  # e^s L − 1: the scale of the larger loss falls
    tensor([ 1.0000, -0.5000])
    """

    adapts_to_scale: ClassVar[bool] = True

    needs_all_tasks: ClassVar[bool] = False

    def __init__(self, n_tasks: int, init_log_scale: float = 0.0, lr: float | None = None) -> None:
        super().__init__(n_tasks)
        if lr is not None and not lr > 0.0:
            raise ValueError(f"lr must be > 0 (or null for the run's head_lr), got {lr}")
        number = isinstance(init_log_scale, int | float) and not isinstance(init_log_scale, bool)
        if not number or not math.isfinite(init_log_scale):
            raise ValueError(f"init_log_scale must be a finite number, got {init_log_scale!r}")
        self.params_lr = lr
        self.init_log_scale = float(init_log_scale)
        self.log_scale = nn.Parameter(torch.full((n_tasks,), self.init_log_scale))

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, init_log_scale={self.init_log_scale}, lr={self.params_lr}"

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        return torch.exp(self.log_scale).to(device=losses.device, dtype=losses.dtype)

    def regularizer(self, index: list[int] | None = None) -> Tensor:
        log_scale = self.log_scale if index is None else self.log_scale[index]
        return -log_scale.sum()
