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


CHUNK_SLACK = 1.3  # a chunk's padded tokens stay within 1.3x its real tokens ...
CHUNK_ROWS = 8  # ... once it holds this many rows (fewer: one call costs more than padding)


def length_chunks(lengths: Sequence[int]) -> list[list[int]]:
    """Cut rows sorted by length into consecutive chunks that pad little.

    A batch padded to its longest row computes on every padded position: 32 tweets of 4-30
    tokens padded to 30 do about twice the work of their real tokens. A new chunk starts
    when the next (longest so far) row would make the chunk's padded size exceed
    ``CHUNK_SLACK`` times its real tokens, but never before ``CHUNK_ROWS`` rows (and a tail
    shorter than that joins the last chunk): each call costs about as much as 10 tokens.

    >>> length_chunks([5, 5, 6, 6, 6, 7, 7, 8] + [20] * 8)
    [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15]]
    >>> length_chunks([5, 5, 6, 6, 6, 7, 7, 8, 20, 21, 22])
    [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    """
    chunks: list[list[int]] = []
    current: list[int] = []
    real = 0
    for j, n in enumerate(lengths):
        if len(current) >= CHUNK_ROWS and n * (len(current) + 1) > CHUNK_SLACK * (real + n):
            chunks.append(current)
            current, real = [], 0
        current.append(j)
        real += n
    if chunks and len(current) < CHUNK_ROWS:  # a short tail joins the chunk before it
        chunks[-1] += current
    elif current:
        chunks.append(current)
    return chunks


@dataclass
class Chunk:
    """Rows of a batch computed together at their own padded ``width``: ``rows`` are
    indices into the batch, ascending, so each segment's rows stay one contiguous run."""

    rows: list[int]
    width: int


def plan_chunks(lengths: Sequence[int]) -> list[Chunk]:
    """The encoder calls of one forward: the batch's rows (``lengths`` = real tokens of
    each row) cut by :func:`length_chunks` after a stable sort by length, each chunk padded
    to its own longest row — so one long task no longer pads every short task of the step.

    >>> [(c.rows, c.width) for c in plan_chunks([30] * 8 + [5] * 8)]
    [([8, 9, 10, 11, 12, 13, 14, 15], 5), ([0, 1, 2, 3, 4, 5, 6, 7], 30)]
    >>> [(c.rows, c.width) for c in plan_chunks([7, 5, 6])]
    [([0, 1, 2], 7)]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks = []
    for part in length_chunks([lengths[i] for i in order]):
        rows = sorted(order[j] for j in part)
        chunks.append(Chunk(rows, max(1, max(lengths[i] for i in rows))))
    return chunks


def computed_tokens(lengths: Sequence[int]) -> int:
    """Token positions the encoder computes for rows of these lengths (padding included)."""
    return sum(len(c.rows) * c.width for c in plan_chunks(lengths))
