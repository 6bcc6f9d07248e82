"""What one per-task backward reports (:class:`GradStats`) and the checked coefficients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from polytask.autograd.gramian import gramian_to_cosine

Combine = Callable[[Tensor], Tensor]


@dataclass
class GradStats:
    """What one per-task backward saw: for logging and diagnostics (CPU tensors)."""

    tasks: list[str]
    gramian: Tensor  # [T, T] float64: g_s · g_t
    weights: Tensor  # [T] the coefficients c from ``combine``
    norms: Tensor  # [T] ‖g_t‖
    cosine: Tensor  # [T, T] cos(g_s, g_t); 0 where a gradient is zero
    method: str  # "segments" | "per-task" | "representation" | "unshared"
    # if asked for: parameter name -> [T, *shape]; "representation" -> [T, *z.shape]
    task_grads: dict[str, Tensor] | None = None


def coefficients(combine: Combine, gramian: Tensor) -> Tensor:
    """``c = combine(gramian)`` on the CPU in float64, checked to hold one weight per task."""
    c = torch.as_tensor(combine(gramian)).detach().to("cpu", torch.float64)
    if c.shape != (gramian.shape[0],):
        raise ValueError(f"combine must return {gramian.shape[0]} weights, got {list(c.shape)}")
    return c


def grad_stats(
    tasks: list[str],
    gramian: Tensor,
    c: Tensor,
    method: str,
    kept: dict[str, Tensor] | None,
) -> GradStats:
    """The :class:`GradStats` of a step: norms and cosines follow from the Gramian."""
    norms = gramian.diagonal().clamp(min=0).sqrt()
    return GradStats(tasks, gramian, c, norms, gramian_to_cosine(gramian), method, kept)
