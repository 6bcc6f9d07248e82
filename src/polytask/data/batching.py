"""Length-bucketed batches per task, dynamic padding, and the multi-task batch.

A :class:`TaskStream` yields a task's training batches forever: each epoch is a seeded
permutation cut into chunks of ``bucket_batches`` batches; inside a chunk examples are
sorted by length, so a batch holds similar lengths and pads little; batch order is then
shuffled. Its whole state is ``(epoch, cursor)``: the permutation of an epoch is a pure
function of (seed, task, epoch), so resuming needs no generator state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch

from polytask.distributed import shard
from polytask.segments import Segment
from polytask.tasks import TaskSpec, task_type


@dataclass
class Batch:
    """One padded batch of one or more tasks' micro-batches, concatenated row-wise."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    segments: list[Segment]
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, dict[str, list[Any]]] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        self.input_ids = self.input_ids.to(device)
        self.attention_mask = self.attention_mask.to(device)
        if self.token_type_ids is not None:
            self.token_type_ids = self.token_type_ids.to(device)
        self.labels = {k: v.to(device) for k, v in self.labels.items()}
        return self

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, bucket_batches: int, generator: torch.Generator
) -> list[list[int]]:
    """One epoch of batches: shuffled, bucketed by length inside chunks, batch order shuffled."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = batch_size * bucket_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


@dataclass
class Draw:
    """One step's rows of a task for this rank, and the global batch they were cut from."""

    rows: dict[str, list[Any]]
    global_rows: int  # rows of the global batch (every rank's slices together)
    counted: bool  # False: a stand-in row of a rank the batch was too short to reach


class TaskStream:
    """Endless length-bucketed training batches of one task, resumable from ``(epoch, cursor)``.

    ``batch_size`` is the global batch; with ``world`` > 1 processes, rank ``rank`` reads
    its contiguous slice of each batch (:func:`polytask.distributed.shard`). Every rank
    plans the same batches, so the state stays ``(epoch, cursor)``, the same on every rank.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        batch_size: int,
        bucket_batches: int,
        seed: int,
        spec: TaskSpec | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}")
        self.dataset, self.spec = dataset, spec
        self.lengths: list[int] = list(dataset["length"])
        self.batch_size, self.bucket_batches, self.seed = batch_size, bucket_batches, seed
        self.rank, self.world = rank, world
        self.epoch, self.cursor = 0, 0
        self._batches = self._plan(0)

    def _plan(self, epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return bucketed_batches(self.lengths, self.batch_size, self.bucket_batches, gen)

    def next_indices(self) -> list[int]:
        if self.cursor >= len(self._batches):
            self.epoch, self.cursor = self.epoch + 1, 0
            self._batches = self._plan(self.epoch)
        indices = self._batches[self.cursor]
        self.cursor += 1
        return indices

    def next_rows(self) -> dict[str, list[Any]]:
        """This rank's rows of the next batch (see :meth:`next_draw`)."""
        return self.next_draw().rows

    def next_draw(self) -> Draw:
        """The next batch: this rank's slice of its rows, through the task type's ``prepare``
        (e.g. MLM masks drawn from ``(seed, epoch)`` and each example's index, so resuming
        from ``(epoch, cursor)`` replays them and a slice gets the masks the whole batch
        would)."""
        indices = self.next_indices()
        mine, counted = shard(indices, self.rank, self.world)
        rows: dict[str, list[Any]] = self.dataset[mine]
        if self.spec is not None:
            rows = task_type(self.spec.type).prepare(self.spec, rows, (self.seed, self.epoch))
        return Draw(rows, len(indices), counted)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._batches = self._plan(self.epoch)


def eval_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Evaluation order: sorted by length (least padding), every example exactly once."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def collate(parts: list[tuple[TaskSpec, dict[str, list[Any]]]], pad_id: int) -> Batch:
    """Pad and concatenate the micro-batches of several tasks into one :class:`Batch`."""
    all_ids = [ids for _, rows in parts for ids in rows["input_ids"]]
    width = max(len(ids) for ids in all_ids)
    input_ids = torch.full((len(all_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(all_ids), width), dtype=torch.long)
    has_types = "token_type_ids" in parts[0][1]
    types = torch.zeros((len(all_ids), width), dtype=torch.long) if has_types else None
    segments: list[Segment] = []
    labels: dict[str, torch.Tensor] = {}
    extras: dict[str, dict[str, list[Any]]] = {}
    row = 0
    for spec, rows in parts:
        start = row
        for i, ids in enumerate(rows["input_ids"]):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            if types is not None:
                types[row, : len(ids)] = torch.tensor(rows["token_type_ids"][i])
            row += 1
        segments.append(Segment(spec.name, start, row))
        if "target" in rows:
            labels[spec.name] = task_type(spec.type).collate(spec, rows["target"])
        extras[spec.name] = {k: rows[k] for k in task_type(spec.type).extra_columns if k in rows}
    return Batch(input_ids, mask, types, segments, labels, extras)


CHUNK_SLACK = 1.3  # a chunk's padded tokens stay within 1.3x its real tokens ...
CHUNK_ROWS = 8  # ... once it holds this many rows (fewer: one call costs more than padding)


def length_chunks(lengths: list[int]) -> list[list[int]]:
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
