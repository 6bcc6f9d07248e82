"""The two one-backward methods of :class:`~polytask.autograd.engine.PerTaskGradients` that
need no segment hooks: ``"representation"`` (MGDA-UB, Sener & Koltun 2018) and ``"unshared"``
(a model without shared parameters). See the engine's docstring for when each runs."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from polytask.autograd.dist import world_size
from polytask.autograd.gramian import gramian_of
from polytask.autograd.passes import write_grads
from polytask.autograd.stats import Combine, GradStats, coefficients, grad_stats


def representation_step(
    z: Tensor,
    shared: list[nn.Parameter],
    tasks: list[str],
    weighted: list[Tensor],
    heads: list[list[nn.Parameter]],
    combine: Combine,
    keep: bool,
    unscale: float = 1.0,
) -> GradStats:
    """Gramian of ``∂(w_t L_t)/∂z``, then one backward of ``Σ_t c_t ∂(w_t L_t)/∂z``.

    ``∂L/∂z`` is held in float32 at least (``z`` is bfloat16 under autocast), so the
    coefficients are never rounded to ``z``'s precision before the combination."""
    dz: list[Tensor] = []
    head_grads: list[list[Tensor | None]] = []
    for loss, ps in zip(weighted, heads, strict=True):
        g = torch.autograd.grad(loss, [z, *ps], retain_graph=True, allow_unused=True)
        dz.append(torch.zeros_like(z) if g[0] is None else g[0])
        head_grads.append(list(g[1:]))
    Z = torch.stack(dz).to(torch.promote_types(z.dtype, torch.float32))
    gramian = gramian_of([Z.reshape(len(tasks), -1)], len(tasks))
    world = world_size()
    if world > 1:  # rows differ per rank: the global Gramian is the sum over ranks / W²
        gramian = gramian.to(Z.device)  # NCCL reduces device tensors only
        torch.distributed.all_reduce(gramian)
        gramian = gramian.cpu() / (world * world)
    c = coefficients(combine, gramian * unscale)
    cotangent = torch.tensordot(c.to(Z), Z, dims=1).to(z.dtype)
    grads: list[Tensor | None] = list(
        torch.autograd.grad(z, shared, grad_outputs=cotangent, allow_unused=True)
    )
    write_grads([shared, *heads], [grads, *head_grads])
    kept = {"representation": Z} if keep else None
    return grad_stats(tasks, gramian * unscale, c, "representation", kept)


def unshared_step(
    tasks: list[str], weighted: list[Tensor], heads: list[list[nn.Parameter]], keep: bool
) -> GradStats:
    """No shared parameters: ONE backward of ``Σ_t w_t L_t`` gives each task's own parameters
    exactly ``∇(w_t L_t)`` (no other loss reaches them). Nothing to combine: the Gramian of
    the (empty) shared gradients is zero and ``c = 1``; the aggregator is not called."""
    inputs = [p for ps in heads for p in ps]
    grads = torch.autograd.grad(torch.stack(weighted).sum(), inputs, allow_unused=True)
    sizes = [0, *itertools.accumulate(len(ps) for ps in heads)]
    write_grads(heads, [list(grads[a:b]) for a, b in itertools.pairwise(sizes)])
    T = len(tasks)
    gramian = torch.zeros(T, T, dtype=torch.float64)
    return grad_stats(
        tasks, gramian, torch.ones(T, dtype=torch.float64), "unshared", {} if keep else None
    )
