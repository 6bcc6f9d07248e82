"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, 2018)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from polytask.weighting.base import WEIGHTINGS, LossWeighting


@WEIGHTINGS.register("gradnorm")
class GradNorm(LossWeighting):
    """Learned weights that equalise each task's gradient norm, scaled by its training rate.

    Chen, Badrinarayanan, Lee & Rabinovich (2018), "GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks" (ICML), eqs. 1–2:
    ``L_grad = Σ_t | w_t n_t − mean_i(w_i n_i) · r_t^α |`` with ``n_t = ‖∇_W L_t‖`` the
    gradient norm of the *unweighted* task loss on the shared parameters ``W`` (the paper
    uses the last shared layer), ``r_t = L̃_t / mean(L̃)``, ``L̃_t = L_t / L_t(0)``; the
    target ``mean(w n) r^α`` is a constant. ``α = 1.5`` is the paper's default.

    Extra contract (``needs_grad_norms = True``): the caller computes ``n`` (no autograd
    here), and adds :meth:`balancing_loss` to the total it backpropagates. :meth:`forward`
    returns the weights *detached*, so the task losses do not train them and only
    ``L_grad`` does: its gradient in ``w`` is ``sign(w_t n_t − target_t) n_t``, which the
    caller's single backward deposits in ``weights.grad`` (an ``nn.Parameter`` held by the
    optimiser, ideally in its own parameter group with its own learning rate). This module
    never calls autograd; it only builds the small differentiable expression in ``w``.
    :meth:`observe` renormalises after each optimiser step so ``Σ w = T`` (paper, §3.2),
    first clamping at ``min_weight`` (a safeguard, not in the paper, against a large step
    driving a weight negative). ``L(0)`` is recorded at the first :meth:`balancing_loss`.

    >>> w = GradNorm(n_tasks=2)
    >>> w.balancing_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]))
    tensor(2., grad_fn=<SumBackward0>)
    """

    adapts_to_scale: ClassVar[bool] = True

    needs_grad_norms: ClassVar[bool] = True

    initial_losses: Tensor
    initialised: Tensor

    def __init__(
        self,
        n_tasks: int,
        alpha: float = 1.5,
        min_weight: float = 1e-3,
        lr: float | None = None,
    ) -> None:
        super().__init__(n_tasks)
        if lr is not None and not lr > 0.0:
            raise ValueError(f"lr must be > 0 (or null for the run's head_lr), got {lr}")
        self.params_lr = lr
        if not alpha >= 0.0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not 0.0 < min_weight < 1.0:
            raise ValueError(f"min_weight must be in (0, 1), got {min_weight}")
        self.alpha = alpha
        self.min_weight = min_weight
        self.weights = nn.Parameter(torch.ones(n_tasks))
        self.register_buffer("initial_losses", torch.ones(n_tasks, dtype=torch.float64))
        self.register_buffer("initialised", torch.tensor(False))

    def extra_repr(self) -> str:
        return (
            f"n_tasks={self.n_tasks}, alpha={self.alpha}, min_weight={self.min_weight}, "
            f"lr={self.params_lr}"
        )

    def forward(self, losses: Tensor) -> Tensor:
        losses = self._check(losses)
        return self.weights.detach().to(device=losses.device, dtype=losses.dtype)

    def balancing_loss(self, grad_norms: Tensor, losses: Tensor) -> Tensor:
        """``L_grad`` (differentiable in :attr:`weights` only) from unweighted gradient norms."""
        if grad_norms.shape != (self.n_tasks,):
            raise ValueError(f"expected grad_norms [{self.n_tasks}], got {list(grad_norms.shape)}")
        current = self._check(losses).to(self.initial_losses.device, torch.float64)
        if not bool(self.initialised) and torch.isfinite(current).all():
            self.initial_losses.copy_(current)
            self.initialised.fill_(True)
        tiny = torch.finfo(torch.float64).tiny
        ratio = current / self.initial_losses.clamp(min=tiny)
        rate = ratio / ratio.mean().clamp(min=tiny)
        norms = grad_norms.detach().to(self.weights.device, self.weights.dtype)
        weighted = self.weights * norms
        target = (weighted.mean().detach() * rate.pow(self.alpha).to(weighted.dtype)).detach()
        return (weighted - target).abs().sum()

    def observe(self, losses: Tensor) -> None:
        self._check(losses)
        with torch.no_grad():
            self.weights.clamp_(min=self.min_weight)
            self.weights.mul_(self.n_tasks / self.weights.sum())
