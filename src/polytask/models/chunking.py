"""A forward in length chunks: each chunk of a batch's rows at its own padded width.

A multi-task step concatenates every task's rows, and one padded tensor pads every row to
the longest row of the step: one long sentence-pair task made every tweet of the step cost
96 positions. :meth:`MultiTaskModel.forward` cuts the rows into chunks of similar length
(:func:`polytask.segments.plan_chunks`), runs the architecture's ``forward_rows`` once per
chunk on that chunk's rows trimmed to its width, and puts each task's outputs back in its
own row order: the same outputs (the encoder never mixes rows), at the cost of the real
tokens.

During a chunk's call the model's ``chunk_rows`` holds that chunk's rows of the whole batch,
so the per-task gradient engine (:mod:`polytask.autograd.hooks`) maps each shared layer's
call to the tasks' rows; one backward still gives exact per-task gradients.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from polytask.segments import Chunk, Segment, plan_chunks
from polytask.tasks import TaskSpec, task_type


class ChunkedModel(Protocol):
    """What a chunked forward needs of the model (``MultiTaskModel``, which calls it)."""

    specs: dict[str, TaskSpec]
    chunk_rows: Tensor | None

    def forward_rows(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None,
        segments: list[Segment],
    ) -> dict[str, Tensor]: ...


def row_extents(attention_mask: Tensor) -> list[int]:
    """Each row's last attended position + 1 (0 for an empty row): the width it needs."""
    attended = attention_mask.ne(0)
    last = attended.shape[1] - attended.flip(1).int().argmax(1)
    return torch.where(attended.any(1), last, 0).tolist()


def chunk_plan(attention_mask: Tensor, segments: list[Segment]) -> list[Chunk]:
    """The chunks of this batch; one chunk (the batch as it is) when chunking gains nothing."""
    if len({s.task for s in segments}) != len(segments):  # a task in two segments: as is
        return []
    chunks = plan_chunks(row_extents(attention_mask))
    return chunks if len(chunks) > 1 else []


def forward_in_chunks(
    model: ChunkedModel,
    chunks: list[Chunk],
    input_ids: Tensor,
    attention_mask: Tensor,
    token_type_ids: Tensor | None,
    segments: list[Segment],
) -> dict[str, Tensor]:
    """``model.forward_rows`` once per chunk; each task's outputs in its segment's row order."""
    pieces: dict[str, list[tuple[Tensor, Tensor]]] = {}  # task: (its rows' positions, output)
    try:
        for chunk in chunks:
            rows = torch.tensor(chunk.rows, device=input_ids.device)
            local: list[Segment] = []
            positions: dict[str, Tensor] = {}
            for seg in segments:
                inside = (rows >= seg.start) & (rows < seg.stop)
                if bool(inside.any()):
                    at = inside.nonzero().flatten()
                    local.append(Segment(seg.task, int(at[0]), int(at[-1]) + 1))
                    positions[seg.task] = rows[at] - seg.start
            if not local:
                continue
            cut = slice(0, chunk.width)
            model.chunk_rows = rows
            out = model.forward_rows(
                input_ids[rows, cut],
                attention_mask[rows, cut],
                None if token_type_ids is None else token_type_ids[rows, cut],
                local,
            )
            for task, value in out.items():
                pieces.setdefault(task, []).append((positions[task], value))
    finally:
        model.chunk_rows = None
    width = input_ids.shape[1]
    return {task: _merge(model, task, parts, width) for task, parts in pieces.items()}


def _merge(
    model: ChunkedModel, task: str, parts: list[tuple[Tensor, Tensor]], width: int
) -> Tensor:
    """One task's chunk outputs in its row order; token outputs ``[n, width, ...]`` as from
    one padded forward (zeros at the padding positions, which no loss reads)."""
    values = [v for _, v in parts]
    if task_type(model.specs[task].type).level == "token":
        values = [F.pad(v, (0, 0) * (v.dim() - 2) + (0, width - v.shape[1])) for v in values]
    if len(parts) == 1:
        return values[0]
    order = torch.cat([p for p, _ in parts]).to(values[0].device)
    return torch.cat(values).index_select(0, torch.argsort(order))
