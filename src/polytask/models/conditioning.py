"""Task-conditioned hard sharing: the shared encoder is modulated row by row by task parameters.

:class:`TaskConditioned` is hard sharing (same encoder, pooling and heads; its ``forward`` is
reused as is) that records, for the duration of a forward, which task each row of the
concatenated batch belongs to. Subclasses register forward hooks on encoder modules that
read :meth:`TaskConditioned.per_row` and change those modules' outputs element-wise, row by
row. The hooks never run a shared layer on a subset of rows, so the per-task gradient
engine keeps its one-backward ``segments`` path.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from polytask.models.hard import HardSharing
from polytask.segments import Segment
from polytask.tasks import TaskSpec


class TaskConditioned(HardSharing):
    """Hard sharing plus per-task conditioning parameters applied by encoder hooks.

    A batch whose segments overlap (several tasks read the same rows) is run once per task,
    since each task conditions the encoder differently: ``T`` encoder forwards.
    """

    encodes_shared_rows_once = False  # conditioned on the task: one forward per task

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
    ) -> None:
        super().__init__(encoder, specs, pooling, head_hidden, head_dropout)
        self.task_index = {s.name: i for i, s in enumerate(specs)}
        self._rows: torch.Tensor | None = None  # task index per row during a forward

    def forward_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
    ) -> dict[str, torch.Tensor]:
        if shared_rows(segments):
            return self._forward_per_task(input_ids, attention_mask, token_type_ids, segments)
        none = len(self.task_index)  # rows of no task: identity conditioning
        rows = torch.full((input_ids.shape[0],), none, dtype=torch.long, device=input_ids.device)
        for seg in segments:
            rows[seg.start : seg.stop] = self.task_index[seg.task]
        return self._conditioned(rows, input_ids, attention_mask, token_type_ids, segments)

    def _conditioned(
        self,
        rows: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
    ) -> dict[str, torch.Tensor]:
        self._rows = rows
        try:
            return super().forward_rows(input_ids, attention_mask, token_type_ids, segments)
        finally:
            self._rows = None

    def _forward_per_task(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
    ) -> dict[str, torch.Tensor]:
        """Single-input batch (tasks share rows): one forward of the whole batch per task,
        conditioned on that task (each shared layer still sees every row, as the per-task
        gradient engine expects)."""
        out: dict[str, torch.Tensor] = {}
        for task in dict.fromkeys(s.task for s in segments):
            index = self.task_index[task]
            rows = torch.full_like(input_ids[:, 0], index, dtype=torch.long)
            own = [s for s in segments if s.task == task]
            out.update(self._conditioned(rows, input_ids, attention_mask, token_type_ids, own))
        return out

    @property
    def conditioning(self) -> bool:
        """Inside this model's forward (hooks do nothing when the encoder is run alone)."""
        return self._rows is not None

    def per_row(self, table: torch.Tensor) -> torch.Tensor:
        """``table[T + 1, ...]`` (one entry per task, then the no-task entry) → ``[B, ...]``,
        each row of the current forward's batch getting its task's entry."""
        if self._rows is None:
            raise RuntimeError("per_row is only defined inside the model's forward")
        return table[self._rows]


def shared_rows(segments: list[Segment]) -> bool:
    """Whether two different tasks claim a common row (a single-input batch)."""
    spans = sorted((s.start, s.stop, s.task) for s in segments if s.stop > s.start)
    return any(b[0] < a[1] and a[2] != b[2] for i, a in enumerate(spans) for b in spans[i + 1 :])


def replace_hidden(out: object, change: torch.Tensor) -> object:
    """A module output with its hidden states (the tensor, or a tuple's first item) replaced."""
    if isinstance(out, torch.Tensor):
        return change
    assert isinstance(out, tuple)
    return (change, *out[1:])


def hidden_of(out: object) -> torch.Tensor:
    """The hidden states of a module output (a tensor, or a tuple's first item)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"expected hidden states, got {type(out).__name__}")


def encoder_layers(encoder: PreTrainedModel) -> nn.ModuleList:
    """The encoder's stack of transformer layers: the first ``nn.ModuleList`` holding
    ``config.num_hidden_layers`` modules (``encoder.layer`` in BERT-like models)."""
    n = int(getattr(encoder.config, "num_hidden_layers", 0))
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n > 0:
            return module
    raise ValueError(f"cannot find the encoder's {n} transformer layers")
