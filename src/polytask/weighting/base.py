"""What every loss weighting provides, and the registry they join.

A loss weighting maps the per-task losses ``L [T]`` to weights ``w [T]``; the caller forms
``Σ_t w_t L_t + regularizer()`` and backpropagates it once. The maths here never calls
autograd: weights are detached from the losses, and only methods with learned parameters
(``uncertainty``, ``gradnorm``) return tensors that the caller's single backward trains.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn

from polytask.registry import Registry

__all__ = ["WEIGHTINGS", "LossWeighting"]


class LossWeighting(nn.Module, ABC):
    """Base class: per-task losses ``[T]`` → weights ``[T]``.

    The training loop calls, every step: ``w = weighting(losses)``, adds
    ``Σ w_t L_t + weighting.regularizer()`` (plus ``weighting.balancing_loss(norms, losses)``
    when :attr:`needs_grad_norms`), steps the optimiser (which also holds
    ``weighting.parameters()``), then ``weighting.observe(new_losses)``.

    >>> WEIGHTINGS.get("equal")(n_tasks=2)(torch.tensor([0.3, 2.0]))
    tensor([1., 1.])
    """

    #: Whether the caller must pass per-task gradient norms to :meth:`balancing_loss`: the
    #: norms of each task's gradient on the *trainable shared* parameters, so the method
    #: needs an architecture that trains some (not ``soft``, not a frozen encoder).
    needs_grad_norms: ClassVar[bool] = False
    #: Whether the weights need every task's loss at every step (a loss history over all
    #: tasks, a softmax across tasks, random weights summing to 1). False only when task
    #: ``t``'s weight depends on task ``t``'s own loss and state alone: the method then also
    #: weighs a step that trains some of the tasks (``sampler.tasks_per_step`` < T), through
    #: :meth:`subset` and :meth:`observe_subset`. The contract suite checks that property.
    needs_all_tasks: ClassVar[bool] = True
    #: Whether :meth:`observe` wants the losses of the *same batch* re-evaluated after the
    #: optimiser step (FAMO's official update; costs one extra no-grad forward per step).
    #: An instance attribute: a method may decide it from its arguments.
    observes_same_batch: bool = False
    #: Whether the weights follow the tasks' loss scales (a task with 100× the loss does not
    #: take 100× the share of the update): ``polytask check`` advises such a method when the
    #: raw losses differ in scale.
    adapts_to_scale: ClassVar[bool] = False
    #: Whether a weight may be negative: the method's objective can raise a task's loss
    #: (``pbi`` and ``cosmos`` pull the loss vector toward a preference ray, so a loss too
    #: small for the ray is pushed up). Otherwise the contract suite checks ``w ≥ 0``.
    signed_weights: ClassVar[bool] = False
    #: Whether permuting the tasks' losses permutes the weights the same way.
    permutation_equivariant: ClassVar[bool] = True
    #: Learning rate of the method's learned parameters (``uncertainty``, ``gradnorm``);
    #: None trains them at the run's ``head_lr`` (or ``lr``).
    params_lr: float | None = None

    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1:
            raise ValueError(f"n_tasks must be a positive integer, got {n_tasks!r}")
        self.n_tasks = n_tasks

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}"

    @abstractmethod
    def forward(self, losses: Tensor) -> Tensor: ...

    def regularizer(self, index: list[int] | None = None) -> Tensor:
        """A scalar the caller adds to the weighted total (zero unless the method learns).

        ``index``: the tasks of a subset step (their terms only); None: every task."""
        return torch.zeros(())

    def observe(self, losses: Tensor) -> None:
        """Called once per step, after the optimiser step, with the new detached losses."""
        self._check(losses)

    def subset(self, losses: Tensor, index: list[int]) -> Tensor:
        """Weights ``[k]`` of the tasks ``index`` (in task order) from their losses ``[k]``.

        For a step that trains only those tasks. Only methods with ``needs_all_tasks`` false
        take it: their weight of task ``t`` depends on ``L_t`` alone, so the absent tasks'
        stand-in losses (the mean of the present ones) cannot change it.

        >>> WEIGHTINGS.get("static")(n_tasks=3, weights=[1.0, 0.1, 2.0]).subset(
        ...     torch.tensor([4.0]), [1])
        tensor([0.1000])
        """
        if self.needs_all_tasks:
            raise TypeError(f"{type(self).__name__} needs every task's loss at every step")
        return self(self._spread(losses, index))[index]

    def observe_subset(self, losses: Tensor, index: list[int]) -> None:
        """:meth:`observe` after a step that trained only the tasks ``index`` (losses ``[k]``).

        A method that keeps per-task state in :meth:`observe` updates the present tasks'
        state only (override both); stateless methods need nothing."""
        if self.needs_all_tasks:
            raise TypeError(f"{type(self).__name__} needs every task's loss at every step")
        if type(self).observe is not LossWeighting.observe:
            raise NotImplementedError(
                f"{type(self).__name__} keeps state in observe(): it must override observe_subset"
            )

    def _spread(self, losses: Tensor, index: list[int]) -> Tensor:
        """A ``[T]`` vector with ``losses`` at ``index`` and their mean elsewhere."""
        if losses.shape != (len(index),) or not index:
            raise ValueError(f"expected {len(index)} losses for tasks {index}, got {list(losses)}")
        full = losses.detach().mean().expand(self.n_tasks).clone()
        full[index] = losses.detach()
        return full

    def balancing_loss(self, grad_norms: Tensor, losses: Tensor) -> Tensor:
        """The extra objective of methods that balance gradient norms (see ``gradnorm``)."""
        raise NotImplementedError(f"{type(self).__name__} does not use gradient norms")

    def _check(self, losses: Tensor) -> Tensor:
        """``losses`` detached, after checking it is a vector of ``n_tasks`` values."""
        if losses.shape != (self.n_tasks,):
            raise ValueError(f"expected losses [{self.n_tasks}], got {list(losses.shape)}")
        return losses.detach()


WEIGHTINGS: Registry[type[LossWeighting]] = Registry("loss weighting")
