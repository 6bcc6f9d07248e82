"""Which rows of a multi-task batch belong to which task: the one record every floor shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Segment:
    """Rows ``start:stop`` of a multi-task batch belong to ``task``."""

    task: str
    start: int
    stop: int


def overlapping(segments: Sequence[Segment]) -> bool:
    """Whether two different tasks read a common row (a single-input batch)."""
    spans = sorted((s.start, s.stop, s.task) for s in segments if s.stop > s.start)
    return any(b[0] < a[1] and a[2] != b[2] for i, a in enumerate(spans) for b in spans[i + 1 :])
