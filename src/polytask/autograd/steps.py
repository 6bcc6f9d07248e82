"""The one-backward methods of :class:`~polytask.autograd.engine.PerTaskGradients` that need
no segment hooks: ``"representation"`` (MGDA-UB, Sener & Koltun 2018), ``"unshared"`` (a model
without shared parameters) and :func:`fixed_step` (given coefficients, no per-task gradients).
See the engine's docstring for when each runs."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from polytask.autograd.dist import world_size
from polytask.autograd.gramian import gramian_of
from polytask.autograd.passes import write_grads
from polytask.autograd.stats import Combine, GradStats, coefficients, grad_stats


def representation_step(
    zs: list[Tensor],
    shared: list[nn.Parameter],
    tasks: list[str],
    weighted: list[Tensor],
    heads: list[list[nn.Parameter]],
    combine: Combine,
    keep: bool,
    unscale: float = 1.0,
) -> GradStats:
    """Gramian of ``∂(w_t L_t)/∂z``, then one backward of ``Σ_t c_t ∂(w_t L_t)/∂z``.

    ``zs``: the representation of every encoder call of the forward (one per length chunk);
    their per-task gradients together are ``∂L/∂z``. ``∂L/∂z`` is held in float32 at least
    (``z`` is bfloat16 under autocast), so the coefficients are never rounded to ``z``'s
    precision before the combination."""
    dz: list[list[Tensor]] = []  # per task, per call
    head_grads: list[list[Tensor | None]] = []
    for loss, ps in zip(weighted, heads, strict=True):
        g = torch.autograd.grad(loss, [*zs, *ps], retain_graph=True, allow_unused=True)
        dz.append([torch.zeros_like(z) if d is None else d for z, d in zip(zs, g, strict=False)])
        head_grads.append(list(g[len(zs) :]))
    dtype = torch.promote_types(zs[0].dtype, torch.float32)
    Zs = [torch.stack([d[i] for d in dz]).to(dtype) for i in range(len(zs))]  # [T, *z_i]
    gramian = gramian_of([Z.reshape(len(tasks), -1) for Z in Zs], len(tasks))
    world = world_size()
    if world > 1:  # rows differ per rank: the global Gramian is the sum over ranks / W²
        gramian = gramian.to(Zs[0].device)  # NCCL reduces device tensors only
        torch.distributed.all_reduce(gramian)
        gramian = gramian.cpu() / (world * world)
    c = coefficients(combine, gramian * unscale)
    cotangents = [
        torch.tensordot(c.to(Z), Z, dims=1).to(z.dtype) for Z, z in zip(Zs, zs, strict=True)
    ]
    grads: list[Tensor | None] = list(
        torch.autograd.grad(zs, shared, grad_outputs=cotangents, allow_unused=True)
    )
    write_grads([shared, *heads], [grads, *head_grads])
    kept = None
    if keep:
        flat = Zs[0] if len(Zs) == 1 else torch.cat([Z.reshape(len(tasks), -1) for Z in Zs], 1)
        kept = {"representation": flat}
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


def fixed_step(
    shared: list[nn.Parameter], weighted: list[Tensor], heads: list[list[nn.Parameter]], c: Tensor
) -> None:
    """``.grad`` as the engine writes it for the coefficients ``c``, without per-task gradients:
    ONE backward of ``Σ_t c_t w_t L_t`` into the shared parameters (exactly ``Σ_t c_t g_t``),
    then one of ``Σ_t w_t L_t`` into the task parameters, which only their own task's loss
    reaches (``∇(w_t L_t)``, as after a solve; a head-only pass: autograd runs only the part
    of the graph between the losses and the heads)."""
    combined = torch.stack([loss * k for loss, k in zip(weighted, c.tolist(), strict=True)]).sum()
    inputs = [p for ps in heads for p in ps]
    grads: list[Tensor | None] = []
    if shared:
        grads = list(torch.autograd.grad(combined, shared, retain_graph=True, allow_unused=True))
    own: list[Tensor | None] = []
    if inputs:
        own = list(torch.autograd.grad(torch.stack(weighted).sum(), inputs, allow_unused=True))
    sizes = [0, *itertools.accumulate(len(ps) for ps in heads)]
    write_grads([shared, *heads], [grads, *(own[a:b] for a, b in itertools.pairwise(sizes))])
