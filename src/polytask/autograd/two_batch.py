"""A step of a two-batch aggregator (``needs_two_batches``: MoDo, SDMGrad) on the per-task
gradient engine: the cross-Gramian ``A = G₁ G₂ᵀ`` of two independent batches, ``c`` from
``A``, and ``.grad = Σ_t c_t (g₁_t + g₂_t) / 2`` (heads: the mean of both batches' gradients).

The first batch's forward and backward run as for any aggregator, but with coefficient 0 on
the shared parameters (nothing is written there) and the per-task gradients kept
(``keep_task_grads``); then the second batch's forward (under the engine's capture) and
backward; then ``A`` and the update. Cost over a one-batch step: the second batch's forward
and per-task backward (≈ 2× the step), the ``T × T`` products of the two gradient sets, and
``T × P`` more memory while the first batch's gradients are held (embedding rows are held
dense). The loss weights ``w`` of both batches are the first batch's (one weighting call a
step); the architecture's own terms (``regularization``) come from the first forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from polytask.autograd.passes import accumulate
from polytask.autograd.stats import Combine, GradStats, coefficients, grad_stats

if TYPE_CHECKING:
    from polytask.autograd.engine import PerTaskGradients
    from polytask.segments import Segment


@dataclass
class SecondBatch:
    """The second batch of a two-batch step: its layout, and its forward: the per-task
    losses as they are backpropagated, or None when one is not finite (the step is skipped)."""

    segments: list[Segment]
    forward: Callable[[], dict[str, Tensor] | None]


def _zeros(gramian: Tensor) -> Tensor:
    return torch.zeros(gramian.shape[0], dtype=gramian.dtype)


def step_backward(
    engine: PerTaskGradients,
    scaled: dict[str, Tensor],
    scale: Tensor,
    combine: Combine,
    grad_scale: float,
    second: SecondBatch | None,
    two_batches: bool,
) -> GradStats | None:
    """The engine's backward of a step: one batch, or two for an aggregator that
    ``needs_two_batches`` (refused without its second batch, so none runs on one)."""
    if two_batches != (second is not None):
        raise RuntimeError("a second batch is given exactly to an aggregator needing two")
    if second is None:
        return engine.backward(scaled, combine, grad_scale=grad_scale)
    return two_batch_backward(engine, scaled, second, scale, combine, grad_scale)


def two_batch_backward(
    engine: PerTaskGradients,
    first: dict[str, Tensor],
    second: SecondBatch,
    scale: Tensor,
    combine: Combine,
    grad_scale: float = 1.0,
) -> GradStats | None:
    """``first``: the first batch's losses as backpropagated (``w_t L_t``, captured by the
    engine); ``scale``: the ``w_t`` that multiply the second batch's losses (tasks in
    ``first`` order); ``combine`` maps the cross-Gramian to ``c``. Returns the statistics of
    the applied per-task gradients ``(g₁_t + g₂_t) / 2``, or None (nothing written to the
    shared parameters; the heads hold half the first batch's gradients: zero them) when the
    second batch's loss is not finite."""
    tasks = list(first)
    half = dict.fromkeys(
        tasks, 0.5
    )  # each batch's per-task gradients at half: their sum is the mean
    one = engine.backward(first, _zeros, half, keep_task_grads=True, grad_scale=grad_scale)
    with engine.capture(second.segments):
        losses = second.forward()
    if losses is None:
        engine.discard()
        return None
    scaled = {t: losses[t] * scale[i] for i, t in enumerate(tasks)}
    two = engine.backward(scaled, _zeros, half, keep_task_grads=True, grad_scale=grad_scale)
    if "representation" in (one.method, two.method):
        raise RuntimeError("a two-batch aggregator needs the parameters' per-task gradients")
    held, kept = one.task_grads or {}, two.task_grads or {}
    T = len(tasks)
    cross = torch.zeros(T, T, dtype=torch.float64)
    for name in held.keys() & kept.keys():
        a, b = held[name].reshape(T, -1).double(), kept[name].reshape(T, -1).double()
        cross += (a @ b.T).cpu()
    cross *= 4.0 / (grad_scale * grad_scale)  # of the full, unscaled gradients g₁ and g₂
    c = coefficients(combine, cross)
    for name, p in engine.shared:
        parts = [g for g in (held.get(name), kept.get(name)) if g is not None]
        if parts:
            accumulate(p, torch.tensordot(c.to(parts[0]), sum(parts[1:], parts[0]), dims=1))
    # the Gramian of the applied gradients (g₁ + g₂) / 2, for the log and GradNorm's norms
    applied = one.gramian + two.gramian + (cross + cross.T) / 4.0
    return grad_stats(tasks, applied, c, f"{two.method}, two batches", None)
