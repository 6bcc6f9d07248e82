"""ExcessMTL: task weights from estimated excess risks (He, Zhou, Zhao & Ji, 2024)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from polytask.aggregation.base import AGGREGATORS
from polytask.aggregation.matrix import MatrixAggregator
from polytask.aggregation.modo import check_positive


@AGGREGATORS.register("excess_mtl")
class ExcessMTL(MatrixAggregator):
    """Exponentiated-gradient task weights driven by each task's excess-risk estimate.

    He, Zhou, Zhao & Ji (2024), "Robust Multi-Task Learning with Excess Risks" (ICML):
    ``S_t += g_t²`` (coordinate-wise, an AdaGrad-style diagonal Hessian, Eq. 7), the excess
    risk ``E_t = Σ_j g_tj² / √(S_tj + 1e-7)`` (Eq. 6), divided by its value at the first
    step after ``n_warmup_steps`` (scale processing, Sec. 3.2), and
    ``λ ← softmax(log λ + robust_step_size · E)`` from ``λ = 1/T`` (Eq. 9); the update is
    ``Σ_t λ_t g_t``. Follows torchjd's ``ExcessMTL`` (0.18), also for its conventions that
    differ from the official code (yifei-he/ExcessMTL, as LibMTL): ``λ`` sums to 1 there to
    ``T`` (an update ``T``× smaller here), and the first step already moves ``λ`` by the raw
    ``E`` (the official code only records it). Warm-up (torchjd's option): the first
    ``n_warmup_steps`` calls keep ``λ = 1/T`` and the baseline is their mean ``E``.
    ``robust_step_size = 1e-2`` is the official default (torchjd's is 1.0). ``S`` is a
    ``[T, P]`` buffer (P: the shared parameters' size; in checkpoints).

    >>> agg = ExcessMTL(n_tasks=2, robust_step_size=1.0)
    >>> agg(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    tensor([2.6424, 0.1192])
    """

    _state: ClassVar[tuple[str, ...]] = ("sq_grad_sum",)
    sq_grad_sum: Tensor
    lambd: Tensor
    baseline: Tensor
    warmup_sum: Tensor
    n_steps: Tensor

    def __init__(
        self, n_tasks: int, robust_step_size: float = 1e-2, n_warmup_steps: int = 0
    ) -> None:
        super().__init__(n_tasks)
        self.robust_step_size = check_positive("robust_step_size", robust_step_size)
        n = n_warmup_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n_warmup_steps must be an integer >= 0, got {n!r}")
        self.n_warmup_steps = n
        self._empty_state()
        T = n_tasks
        self.register_buffer("lambd", torch.full((T,), 1.0 / T, dtype=torch.float64))
        self.register_buffer("baseline", torch.full((T,), float("nan"), dtype=torch.float64))
        self.register_buffer("warmup_sum", torch.zeros(T, dtype=torch.float64))
        self.register_buffer("n_steps", torch.zeros((), dtype=torch.int64))

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, robust_step_size={self.robust_step_size}, "
            f"n_warmup_steps={self.n_warmup_steps}"
        )

    def _aggregate(self, G: Tensor, losses: Tensor | None) -> tuple[Tensor, Tensor]:
        squares = G * G
        S = self._matrix_state("sq_grad_sum", G) + squares
        self.sq_grad_sum = S
        excess = (squares / torch.sqrt(S + 1e-7)).sum(dim=1).to("cpu", torch.float64)
        step = int(self.n_steps)
        self.n_steps.fill_(step + 1)
        if step < self.n_warmup_steps:
            self.warmup_sum += excess
        else:
            if bool(self.baseline.isnan().any()):  # the first step after the warm-up
                if self.n_warmup_steps > 0:
                    self.baseline.copy_(self.warmup_sum / self.n_warmup_steps)
                    excess = excess / (self.baseline + 1e-7)
                else:  # the official code: the first step's excess is the baseline, used raw
                    self.baseline.copy_(excess)
            else:
                excess = excess / (self.baseline + 1e-7)
            self.lambd.copy_(torch.softmax(self.lambd.log() + self.robust_step_size * excess, 0))
        return self.lambd.to(G) @ G, self.lambd.clone()
