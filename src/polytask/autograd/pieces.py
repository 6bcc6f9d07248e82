"""Every task's gradient of one shared parameter (:class:`Piece`) and how pieces add up.

The unit the segment hooks (:mod:`polytask.autograd.hooks`), the per-task passes and the
all-reduce (:mod:`polytask.autograd.dist`) hand to :mod:`polytask.autograd.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Piece:
    """Every task's gradient of one parameter: ``values[t]`` belongs to task ``t``.

    Dense when ``rows`` is None (``values`` is ``[T, *shape]``); for embeddings only the rows
    ``rows`` (sorted, unique) can be non-zero and ``values`` is ``[T, len(rows), *shape[1:]]``.
    """

    values: Tensor
    rows: Tensor | None = None

    def flat(self) -> Tensor:
        return self.values.reshape(self.values.shape[0], -1)

    def full(self, shape: torch.Size) -> Tensor:
        """The dense ``[T, *shape]`` per-task gradients."""
        if self.rows is None:
            return self.values
        out = self.values.new_zeros(self.values.shape[0], *shape)
        out[:, self.rows] = self.values
        return out

    def combine(self, c: Tensor, shape: torch.Size) -> Tensor:
        """``Σ_t c_t values[t]`` as a full gradient of a parameter of ``shape``."""
        mixed = torch.tensordot(c.to(self.values), self.values, dims=1)
        if self.rows is None:
            return mixed
        return mixed.new_zeros(shape).index_add_(0, self.rows, mixed)


def add_piece(pieces: dict[int, Piece], key: int, piece: Piece) -> None:
    """Accumulate ``piece`` into ``pieces[key]`` (a parameter used by several calls)."""
    old = pieces.get(key)
    if old is None:
        pieces[key] = piece
    elif old.rows is None and piece.rows is None:
        old.values += piece.values
    elif old.rows is None or piece.rows is None:  # a tied weight: a layer's and embedding rows
        dense, rows_piece = (old, piece) if old.rows is None else (piece, old)
        pieces[key] = Piece(dense.values + rows_piece.full(dense.values.shape[1:]))
    else:
        rows, inverse = torch.unique(torch.cat([old.rows, piece.rows]), return_inverse=True)
        values = old.values.new_zeros(old.values.shape[0], len(rows), *old.values.shape[2:])
        values.index_add_(1, inverse, torch.cat([old.values, piece.values], dim=1))
        pieces[key] = Piece(values, rows)


def same_layout(a: Tensor | None, b: Tensor | None) -> bool:
    """Both dense, or both the same embedding rows."""
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
