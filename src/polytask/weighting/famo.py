"""Fast Adaptive Multitask Optimization (Liu, Liu, Stone & Liu, 2023)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from polytask.weighting.base import WEIGHTINGS, LossWeighting


@WEIGHTINGS.register("famo")
class FAMO(LossWeighting):
    """Balances the *rate* at which every task's log-loss falls, at O(1) cost per step.

    Liu, Liu, Stone & Liu (2023), "FAMO: Fast Adaptive Multitask Optimization" (NeurIPS),
    Algorithm 1, hyperparameters from the official code (``lr=0.025``, ``gamma=0.01``).
    Task logits ``ξ`` give ``z = softmax(ξ)``; the official objective is
    ``Σ_t z_t log(L_t − m_t) / c`` with ``c = Σ_t z_t / (L_t − m_t)`` held constant, whose
    gradient equals that of ``Σ_t w_t L_t`` with ``w_t = z_t / (c (L_t − m_t))``, so
    :meth:`forward` returns those weights (they sum to 1). :meth:`observe` receives the
    losses after the optimiser step, forms ``δ_t = log(L_t^before − m_t) − log(L_t^after −
    m_t)``, and takes one Adam step (weight decay ``gamma``) on ``ξ`` along the
    softmax-Jacobian product ``Jᵀδ = z ⊙ (δ − z·δ)``: closed form, no autograd. The logits
    and Adam moments are buffers (they are not trained by the model's optimiser).

    ``update="same_batch"`` (the default) evaluates the "after" losses on the same batch
    with one extra no-grad forward, as the paper and its official code do; polytask's
    training loop runs it when ``observes_same_batch`` is true. That forward keeps the
    model in train mode (dropout on), so "before" and "after" are losses of the same
    stochastic function; on CPU it costs about 40% of a training step (see the step-cost
    benchmark). ``update="next_batch"`` is polytask's cheaper variant: ``δ`` compares the
    losses of consecutive batches, which the loop computes anyway, so it costs no extra
    forward. Batch-to-batch differences add noise to ``δ`` but no bias (batches are drawn
    independently), which the slow logit learning rate averages out. ``min_losses`` (``m``,
    default 0) are known lower bounds of the losses; ``L − m`` is clamped at 0 so the
    logarithm stays finite.

    >>> w = FAMO(n_tasks=2)
    >>> w(torch.tensor([1.0, 3.0]))
    tensor([0.7500, 0.2500])
    """

    adapts_to_scale: ClassVar[bool] = True

    logits: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    steps: Tensor
    min_losses: Tensor
    last_gap: Tensor
    pending: Tensor

    def __init__(
        self,
        n_tasks: int,
        lr: float = 0.025,
        gamma: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        min_losses: list[float] | None = None,
        update: Literal["same_batch", "next_batch"] = "same_batch",
    ) -> None:
        super().__init__(n_tasks)
        if update not in ("same_batch", "next_batch"):
            raise ValueError(f"update must be 'same_batch' or 'next_batch', got {update!r}")
        if not lr > 0.0 or not gamma >= 0.0 or not adam_eps > 0.0:
            raise ValueError(
                f"need lr > 0, gamma >= 0, adam_eps > 0; got {lr}, {gamma}, {adam_eps}"
            )
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two values in [0, 1), got {betas}")
        minimum = [0.0] * n_tasks if min_losses is None else [float(m) for m in min_losses]
        if len(minimum) != n_tasks:
            raise ValueError(f"min_losses: expected {n_tasks} values, got {len(minimum)}")
        self.lr, self.gamma, self.adam_eps, self.update = lr, gamma, adam_eps, update
        self.observes_same_batch = update == "same_batch"
        self.betas = (float(betas[0]), float(betas[1]))
        f64 = torch.float64
        self.register_buffer("logits", torch.zeros(n_tasks, dtype=f64))
        self.register_buffer("exp_avg", torch.zeros(n_tasks, dtype=f64))
        self.register_buffer("exp_avg_sq", torch.zeros(n_tasks, dtype=f64))
        self.register_buffer("steps", torch.tensor(0))
        self.register_buffer("min_losses", torch.tensor(minimum, dtype=f64))
        self.register_buffer("last_gap", torch.ones(n_tasks, dtype=f64))
        self.register_buffer("pending", torch.tensor(False))

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, lr={self.lr}, gamma={self.gamma}, betas={self.betas}, "
            f"adam_eps={self.adam_eps}, min_losses={self.min_losses.tolist()}, "
            f"update={self.update!r}"
        )

    def _gap(self, losses: Tensor) -> Tensor:
        """``L − m + 1e-8`` as in the official code, with ``L − m`` clamped at 0 (finite log)."""
        gap = losses.to(self.logits.device, torch.float64) - self.min_losses
        return gap.clamp(min=0.0) + 1e-8

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        gap = self._gap(losses)
        if not self.observes_same_batch:  # next_batch: these losses are the "after" ones
            self._update(gap)
        z = torch.softmax(self.logits, dim=0)
        weights = (z / gap) / (z / gap).sum()
        if torch.isfinite(gap).all():
            self.last_gap.copy_(gap)
            self.pending.fill_(True)
        return weights.to(device=losses.device, dtype=losses.dtype)

    def observe(self, losses: Tensor) -> None:
        gap = self._gap(self._check(losses))
        if self.observes_same_batch:
            self._update(gap)

    def _update(self, gap: Tensor) -> None:
        """One Adam step on the logits from the "before" gap kept by :meth:`forward`."""
        if not bool(self.pending) or not torch.isfinite(gap).all():
            return
        self.pending.fill_(False)
        delta = torch.log(self.last_gap) - torch.log(gap)
        z = torch.softmax(self.logits, dim=0)
        grad = z * (delta - (z * delta).sum()) + self.gamma * self.logits
        beta1, beta2 = self.betas
        self.steps.add_(1)
        step = int(self.steps)
        self.exp_avg.mul_(beta1).add_((1 - beta1) * grad)
        self.exp_avg_sq.mul_(beta2).add_((1 - beta2) * grad * grad)
        denom = (self.exp_avg_sq / (1 - beta2**step)).sqrt() + self.adam_eps
        self.logits.sub_(self.lr * (self.exp_avg / (1 - beta1**step)) / denom)
