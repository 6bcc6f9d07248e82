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
from polytask.segments import Segment, length_chunks
from polytask.tasks import TaskSpec, task_type

__all__ = [
    "Batch",
    "Draw",
    "TaskStream",
    "bucketed_batches",
    "collate",
    "eval_batches",
    "length_chunks",
]


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
    indices: list[int] = field(default_factory=list)  # the global batch's example indices
    epoch: int = 0


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
        return self.draw(indices, self.epoch)

    def draw(self, indices: list[int], epoch: int) -> Draw:
        """The examples ``indices`` of this task (this rank's slice), drawn in ``epoch``: a
        task reading another task's rows (``tasks.N.inputs``) takes that task's draw."""
        mine, counted = shard(indices, self.rank, self.world)
        rows: dict[str, list[Any]] = self.dataset[mine]
        if self.spec is not None:
            rows = task_type(self.spec.type).prepare(self.spec, rows, (self.seed, epoch))
        return Draw(rows, len(indices), counted, indices, epoch)

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


def collate(
    parts: list[tuple[TaskSpec, dict[str, list[Any]]]],
    pad_id: int,
    shares: dict[str, str] | None = None,
) -> Batch:
    """Pad and concatenate the micro-batches of several tasks into one :class:`Batch`.

    ``shares`` maps a task to the task whose rows it reads (``tasks.N.inputs``): it adds no
    rows, its segment is that task's (the rows are encoded once for both) and its labels are
    its own, row for row (a missing label masks that task only). Such a task comes after
    the task it reads in ``parts``.
    """
    shares = shares or {}
    own = [(spec, rows) for spec, rows in parts if spec.name not in shares]
    all_ids = [ids for _, rows in own for ids in rows["input_ids"]]
    width = max(len(ids) for ids in all_ids)
    input_ids = torch.full((len(all_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(all_ids), width), dtype=torch.long)
    has_types = "token_type_ids" in parts[0][1]
    types = torch.zeros((len(all_ids), width), dtype=torch.long) if has_types else None
    segments: list[Segment] = []
    spans: dict[str, Segment] = {}
    labels: dict[str, torch.Tensor] = {}
    extras: dict[str, dict[str, list[Any]]] = {}
    row = 0
    for spec, rows in parts:
        if spec.name in shares:
            read = spans[shares[spec.name]]
            if len(rows["input_ids"]) != read.stop - read.start:
                raise ValueError(f"task '{spec.name}' has other rows than '{read.task}'")
            segments.append(Segment(spec.name, read.start, read.stop))
        else:
            start = row
            for i, ids in enumerate(rows["input_ids"]):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
                if types is not None:
                    types[row, : len(ids)] = torch.tensor(rows["token_type_ids"][i])
                row += 1
            segments.append(spans.setdefault(spec.name, Segment(spec.name, start, row)))
        if "target" in rows:
            labels[spec.name] = task_type(spec.type).collate(spec, rows["target"])
        extras[spec.name] = {k: rows[k] for k in task_type(spec.type).extra_columns if k in rows}
    return Batch(input_ids, mask, types, segments, labels, extras)
