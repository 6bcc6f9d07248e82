"""Data parallel pieces of the per-task gradient engine (:mod:`polytask.autograd.engine`).

With ``torch.distributed`` initialised, every rank holds the per-task gradients of its own
rows; these helpers average them over ranks *before* the aggregator runs, so every rank
computes the same coefficients and applies the same update. Every tensor handed to a
collective lives on the parameters' device (NCCL reduces GPU tensors only; gloo, CPU ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from polytask.autograd.pieces import Piece


def world_size() -> int:
    """Ranks of the initialised default process group (1 when not distributed)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_pieces(pieces: dict[int, Piece], params: list[nn.Parameter], n_tasks: int) -> None:
    """Average every parameter's per-task gradients over ranks, in place, in ``params`` order.

    Ranks agree on each parameter's layout first (0 absent, 1 dense, 2 rows); an embedding's
    row sets differ per rank, so they are merged into their union before the all-reduce.
    """
    dist, world = torch.distributed, world_size()
    device = params[0].device if params else torch.device("cpu")
    kinds = torch.tensor([_kind(pieces.get(id(p))) for p in params], device=device)
    dist.all_reduce(kinds, op=dist.ReduceOp.MAX)
    for p, kind in zip(params, kinds.tolist(), strict=True):
        piece = pieces.get(id(p))
        if kind == 1:
            values = p.new_zeros(n_tasks, *p.shape) if piece is None else piece.values
            dist.all_reduce(values)
            pieces[id(p)] = Piece(values / world)
        elif kind == 2:
            pieces[id(p)] = _all_reduce_rows(piece, p, n_tasks, world)


def _kind(piece: Piece | None) -> int:
    return 0 if piece is None else 1 if piece.rows is None else 2


def _all_reduce_rows(piece: Piece | None, p: nn.Parameter, n_tasks: int, world: int) -> Piece:
    dist = torch.distributed
    device = p.device
    if piece is None:
        piece = Piece(p.new_zeros(n_tasks, 0, *p.shape[1:]), torch.zeros(0, dtype=torch.long))
    elif piece.rows is None:  # a rank that fell back holds it dense: every row
        piece = Piece(piece.values, torch.arange(p.shape[0]))
    assert piece.rows is not None
    size = torch.tensor([len(piece.rows)], device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    padded = torch.full((int(max(sizes).item()),), -1, dtype=torch.long, device=device)
    padded[: len(piece.rows)] = piece.rows.to(device)
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    union = torch.unique(torch.cat(gathered))
    union = union[union >= 0].to(piece.values.device)
    values = piece.values.new_zeros(n_tasks, len(union), *p.shape[1:])
    values[:, torch.searchsorted(union, piece.rows.to(union.device))] = piece.values
    dist.all_reduce(values)
    return Piece(values / world, union)


def all_reduce_grads(
    params: Sequence[nn.Parameter], grads: Sequence[Tensor | None]
) -> list[Tensor | None]:
    """Average gradients over ranks; None (unused) only where every rank had None."""
    dist, world = torch.distributed, world_size()
    device = params[0].device if params else torch.device("cpu")
    present = torch.tensor([float(g is not None) for g in grads], device=device)
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    out: list[Tensor | None] = []
    for p, g, flag in zip(params, grads, present.tolist(), strict=True):
        if flag == 0:
            out.append(None)
            continue
        g = torch.zeros_like(p) if g is None else g.clone()
        dist.all_reduce(g)
        out.append(g / world)
    return out
