"""A step of an aggregator that ``needs_matrix`` (GradDrop, TrimmedMean, ExcessMTL, MoCo,
DB-MTL) on the per-task gradient engine: the ``[T, P]`` matrix of the shared parameters'
per-task gradients, the method's update of it, written to ``.grad``.

The engine computes the per-task pieces as for any aggregator (and all-reduces them under
data parallelism, so every rank forms the same matrix and keeps the same state); here they
are copied, parameter by parameter in the engine's fixed order, into one ``[T, P]`` matrix
(``P``: every trainable shared parameter, zeros where a task's loss does not reach one, so
a stateful method sees the same coordinates on every step; embedding rows are made dense).
Cost over a Gramian step: ``T × P`` floats (float32 at least) while the matrix is held and
the method's own ``O(T P)`` work; no extra backward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from polytask.autograd.passes import accumulate
from polytask.autograd.pieces import Piece

#: ``[T, P]`` unscaled gradient matrix → ``(update [P], weights [T])``
Aggregate = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass
class MatrixCombine:
    """What the engine's ``combine`` is for a matrix method: ``aggregate`` maps the matrix to
    the update and the per-task weights to log (e.g. ``MatrixAggregator.aggregate`` with
    the step's losses bound)."""

    aggregate: Aggregate

    def __call__(self, gramian: Tensor) -> Tensor:
        raise RuntimeError("a matrix aggregator needs the per-task gradients, not a Gramian")


def gradient_matrix(shared: list[nn.Parameter], pieces: dict[int, Piece], n_tasks: int) -> Tensor:
    """The ``[T, P]`` per-task gradients of ``shared`` (in that order; zeros where absent)."""
    some = next(iter(pieces.values()), None)
    dtype = torch.float32 if some is None else torch.promote_types(some.values.dtype, torch.float32)
    device = shared[0].device if some is None else some.values.device
    total = sum(p.numel() for p in shared)
    matrix = torch.zeros(n_tasks, total, dtype=dtype, device=device)
    offset = 0
    for p in shared:
        piece = pieces.get(id(p))
        if piece is not None:
            matrix[:, offset : offset + p.numel()] = piece.full(p.shape).reshape(n_tasks, -1)
        offset += p.numel()
    return matrix


def matrix_step(
    shared: list[nn.Parameter],
    pieces: dict[int, Piece],
    combine: MatrixCombine,
    n_tasks: int,
    grad_scale: float = 1.0,
) -> Tensor:
    """Write the method's update of the (unscaled) matrix to the shared parameters' ``.grad``
    (times ``grad_scale``, as the fp16 grad scaler expects); returns the weights to log. A
    parameter no task reached gets a gradient only where the update is non-zero there (a
    stateful method's estimate), so the optimiser skips it as before otherwise."""
    matrix = gradient_matrix(shared, pieces, n_tasks)
    if grad_scale != 1.0:
        matrix /= grad_scale
    update, weights = combine.aggregate(matrix)
    offset = 0
    for p in shared:
        part = update[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()
        if id(p) in pieces or bool(part.ne(0).any()):
            accumulate(p, part * grad_scale if grad_scale != 1.0 else part)
    return weights.detach().to("cpu", torch.float64)
