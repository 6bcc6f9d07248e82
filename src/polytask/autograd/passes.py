"""Gradient passes and ``.grad`` writes behind :mod:`polytask.autograd.engine` (its only caller,
with the training objective's :func:`average_grads`): exact per-task passes over one graph,
rank-averaged accumulation into ``.grad``, and the module owning the shared parameters."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from polytask.autograd.dist import all_reduce_grads, world_size
from polytask.autograd.pieces import Piece


def per_task_passes(
    shared: list[nn.Parameter], weighted: list[Tensor], heads: list[list[nn.Parameter]]
) -> tuple[dict[int, Piece], list[list[Tensor | None]]]:
    """Exact: one ``autograd.grad`` per task over the same graph (same dropout masks)."""
    T = len(weighted)
    pieces: dict[int, Piece] = {}
    head_grads: list[list[Tensor | None]] = []
    for t, (loss, ps) in enumerate(zip(weighted, heads, strict=True)):
        grads = torch.autograd.grad(loss, [*shared, *ps], retain_graph=t < T - 1, allow_unused=True)
        for p, g in zip(shared, grads, strict=False):
            if g is not None:
                if id(p) not in pieces:  # rows of earlier tasks are zero, later ones filled
                    pieces[id(p)] = Piece(p.new_empty(T, *p.shape))
                    pieces[id(p)].values[:t] = 0
                pieces[id(p)].values[t] = g.to_dense() if g.is_sparse else g
            elif id(p) in pieces:
                pieces[id(p)].values[t] = 0
        head_grads.append(list(grads[len(shared) :]))
    return pieces, head_grads


def average_grads(params: Sequence[nn.Parameter]) -> None:
    """Average ``.grad`` over ranks in place (parameters outside the DDP-wrapped model, such
    as learned loss weights); nothing on one process."""
    params = list(params)
    if world_size() == 1 or not params:
        return
    for p, g in zip(params, all_reduce_grads(params, [p.grad for p in params]), strict=True):
        p.grad = None if g is None else g.detach().to(p.dtype)


def write_grads(params: list[list[nn.Parameter]], grads: list[list[Tensor | None]]) -> None:
    """Accumulate plain gradients (averaged over ranks first when distributed)."""
    for ps, gs in zip(params, grads, strict=True):
        for p, g in zip(ps, all_reduce_grads(ps, gs) if world_size() > 1 else gs, strict=True):
            if g is not None:
                accumulate(p, g)


def accumulate(p: nn.Parameter, g: Tensor) -> None:
    g = g.detach().to(p.dtype)
    if p.grad is None:
        p.grad = g if g.is_contiguous() else g.contiguous()
    else:
        p.grad.add_(g)


def owner_of(model: nn.Module, shared: set[int]) -> nn.Module:
    """The outermost module whose parameters are exactly the shared ones."""
    for module in model.modules():
        if {id(p) for p in module.parameters() if p.requires_grad} == shared:
            return module
    raise ValueError("no module owns exactly the shared parameters; pass `representation=`")
