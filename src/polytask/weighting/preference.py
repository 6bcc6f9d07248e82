"""The per-task vectors the scalarisations take: a preference and a reference point.

``stch``, ``pbi`` and ``cosmos`` scalarise the loss vector relative to a preference
``λ [T]`` (a direction or trade-off among the tasks, in task order) and, for ``stch`` and
``pbi``, a reference (ideal) point ``z [T]``. Both are checked here once, the same way.

>>> preference_vector(None, 4).tolist()
[0.25, 0.25, 0.25, 0.25]
>>> reference_vector([0.1, 0.0], 2).tolist()
[0.1, 0.0]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["preference_vector", "reference_vector"]


def _numbers(values: list[float], n_tasks: int, what: str) -> list[float]:
    """``values`` as floats, after checking they are ``n_tasks`` finite numbers."""
    if len(values) != n_tasks:
        raise ValueError(f"{what}: expected {n_tasks} values, got {len(values)}")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int | float)]
    if bad or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must be finite numbers, got {list(values)}")
    return [float(v) for v in values]


def preference_vector(values: list[float] | None, n_tasks: int) -> Tensor:
    """The preference ``[T]`` (float64): ``values`` (finite, ≥ 0, not all 0) as given, or the
    uniform ``1/T`` (on the probability simplex, as torchjd's default) when None."""
    if values is None:
        return torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64)
    numbers = _numbers(values, n_tasks, "preference")
    if any(v < 0 for v in numbers) or not any(numbers):
        raise ValueError(f"preference must be >= 0 and not all 0, got {numbers}")
    return torch.tensor(numbers, dtype=torch.float64)


def reference_vector(values: list[float] | None, n_tasks: int) -> Tensor:
    """The reference point ``[T]`` (float64) subtracted from the losses: ``values``, or the
    origin when None."""
    if values is None:
        return torch.zeros(n_tasks, dtype=torch.float64)
    return torch.tensor(_numbers(values, n_tasks, "reference"), dtype=torch.float64)
