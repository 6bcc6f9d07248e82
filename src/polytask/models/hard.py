"""Hard parameter sharing: one encoder for every task, one head per task."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from polytask.models.base import ARCHITECTURES, MultiTaskModel
from polytask.models.heads import build_head, pool
from polytask.segments import Segment
from polytask.tasks import TaskSpec, task_type


@ARCHITECTURES.register("hard")
class HardSharing(MultiTaskModel):
    """Shared encoder, masked mean (or CLS) pooling, a head per task (Caruana 1997).

    One encoder forward serves every task's rows of the batch; sequence tasks read the
    pooled vector, token tasks read every position.
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling, self.head_hidden, self.head_dropout = pooling, head_hidden, head_dropout
        self.specs = {s.name: s for s in specs}
        self.heads = nn.ModuleDict(
            {s.name: build_head(s, encoder, head_hidden, head_dropout) for s in specs}
        )

    def forward_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
    ) -> dict[str, torch.Tensor]:
        hidden = self.encode(self.encoder, input_ids, attention_mask, token_type_ids)
        out = {}
        for seg in segments:
            rows, mask = hidden[seg.start : seg.stop], attention_mask[seg.start : seg.stop]
            head = self.heads[seg.task]
            if task_type(self.specs[seg.task].type).level == "token":
                out[seg.task] = head(rows)
            else:
                out[seg.task] = head(pool(rows, mask, self.pooling))
        return out

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters()]

    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        # a head may reuse an encoder tensor (the lm head's decoder is the word-embedding
        # matrix): that one is shared, not the task's own
        shared = {id(p) for p in self.encoder.parameters()}
        return [
            (f"heads.{task}.{n}", p)
            for n, p in self.heads[task].named_parameters()
            if id(p) not in shared
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "pooling": self.pooling,
            "head_hidden": self.head_hidden,
            "head_dropout": self.head_dropout,
        }
