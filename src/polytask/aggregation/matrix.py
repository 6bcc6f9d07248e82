"""Aggregators that need the per-task gradient matrix itself, not only its Gramian.

Coordinate-wise rules (GradDrop's sign dropout, a trimmed mean) and methods whose state is a
``[T, P]`` matrix (ExcessMTL's squared-gradient sums, MoCo's tracked gradients, DB-MTL's
averaged gradients) cannot be computed from ``G Gᵀ``. They declare :attr:`needs_matrix`;
the per-task gradient engine then forms the ``[T, P]`` matrix of the shared parameters'
gradients (every shared parameter, in the same order on every step, zeros where a task's
loss does not reach it) and writes the update this class returns
(:mod:`polytask.autograd.matrix`). Memory: the matrix is ``T × P`` floats (float32 in
training) on the gradients' device, besides the per-task pieces it is built from; a
stateful method holds one or two ``[T, P]`` buffers more, which checkpoints carry.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from polytask.aggregation.base import Aggregator, Array

__all__ = ["MatrixAggregator"]


class MatrixAggregator(Aggregator):
    """Base class: ``G [T, P]`` (and the losses) → ``(update [P], weights [T])``.

    Subclasses implement :meth:`_aggregate` on a detached float32/float64 matrix.
    ``weights`` are what the training log shows per task: the coefficients where the update
    is ``Σ_t c_t x_t`` of some per-task vectors ``x_t`` (ExcessMTL: the gradients; MoCo,
    DB-MTL: their tracked estimates), else each task's mask averaged over the coordinates
    (GradDrop, TrimmedMean). :meth:`weights` on a Gramian is refused with one line.
    ``_state`` names buffers of shape ``[T, P]``, created at the first call (``P`` is not
    known before) and resized when a checkpoint is loaded into a fresh instance.

    >>> from polytask.aggregation import AGGREGATORS
    >>> AGGREGATORS.get("trimmed_mean")(n_tasks=3, trim_number=1)(
    ...     torch.tensor([[1.0, 5.0], [2.0, -1.0], [9.0, 0.0]]))
    tensor([2., 0.])
    """

    needs_matrix: ClassVar[bool] = True
    #: Whether the logged weights are coefficients of the update (else mask shares).
    weights_are_coefficients: ClassVar[bool] = True
    _state: ClassVar[tuple[str, ...]] = ()

    def forward(self, G: Tensor, losses: Tensor | None = None) -> Tensor:
        """The update, in ``G``'s dtype (see :meth:`aggregate`)."""
        return self.aggregate(G, losses)[0]

    def aggregate(self, G: Tensor, losses: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(update [P] in G's dtype, weights [T] float64 on the CPU)``.

        ``losses`` (``[T]``): the values of the terms whose gradients are ``G``'s rows (read
        by methods whose :attr:`needs_losses` is true; None: ones). A non-finite ``G`` or loss
        gives NaN and leaves the method's state untouched (a grad scaler then skips the step).
        """
        T = self.n_tasks
        if G.ndim != 2 or G.shape[0] != T:
            raise ValueError(f"expected a gradient matrix [{T}, P], got {list(G.shape)}")
        if losses is not None and losses.shape != (T,):
            raise ValueError(f"expected losses [{T}], got {list(losses.shape)}")
        with torch.no_grad():
            work = G.detach()
            if work.dtype not in (torch.float32, torch.float64):
                work = work.float()
            values = None if losses is None else losses.detach().to(work)
            if not (
                bool(torch.isfinite(work).all())
                and (values is None or bool(values.isfinite().all()))
            ):
                nan = torch.full((G.shape[1],), float("nan"), dtype=G.dtype, device=G.device)
                return nan, torch.full((T,), float("nan"), dtype=torch.float64)
            update, weights = self._aggregate(work, values)
            return update.to(G.dtype), weights.detach().to("cpu", torch.float64)

    @abstractmethod
    def _aggregate(self, G: Tensor, losses: Tensor | None) -> tuple[Tensor, Tensor]:
        """The method: a finite detached matrix (and losses) → ``(update, weights)``."""
        ...

    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        raise ValueError(
            f"{type(self).__name__} needs the per-task gradient matrix, not its Gramian: "
            "call aggregate(G)"
        )

    def _matrix_state(self, name: str, G: Tensor) -> Tensor:
        """The ``[T, P]`` buffer ``name`` on ``G``'s device and dtype: zeros at the first call;
        a matrix with another number of columns than the state's is refused."""
        state: Tensor = getattr(self, name)
        if state.shape[1] == 0:
            state = G.new_zeros(G.shape)
        elif state.shape[1] != G.shape[1]:
            raise ValueError(
                f"{type(self).__name__} holds state for {state.shape[1]} gradient coordinates, "
                f"got {G.shape[1]}: the shared parameters changed since it was built"
            )
        return state.to(G)

    def _empty_state(self) -> None:
        for name in self._state:
            self.register_buffer(name, torch.zeros(self.n_tasks, 0, dtype=torch.float64))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for name in self._state:
            saved = state_dict.get(prefix + name)
            if isinstance(saved, Tensor) and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved))
        super()._load_from_state_dict(state_dict, prefix, *args)
