"""Task-embedding conditioning: a learned vector per task added to its rows' input embeddings."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from transformers import PreTrainedModel

from polytask.models.base import ARCHITECTURES
from polytask.models.conditioning import TaskConditioned
from polytask.tasks import TaskSpec


@ARCHITECTURES.register("task_embedding")
class TaskEmbedding(TaskConditioned):
    """Hard sharing whose encoder is told the task: ``e_t`` is added to every token's input
    (word) embedding of task ``t``'s rows, where BERT adds its segment embeddings, before the
    embedding LayerNorm. ``e_t`` starts at zero: training starts from the pretrained encoder.

    ``mode="add"`` is the only mode (prepending ``e_t`` as an extra token is not built).
    Shared: the encoder. Task ``t``: its head and ``e_t`` (``hidden_size`` values).
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
        mode: Literal["add"] = "add",
    ) -> None:
        super().__init__(encoder, specs, pooling, head_hidden, head_dropout)
        if mode != "add":
            raise ValueError(f"mode must be 'add', got {mode!r}")
        self.mode = mode
        embeddings = encoder.get_input_embeddings()
        if not isinstance(embeddings, nn.Embedding):
            raise ValueError(
                f"the encoder's input embeddings are a {type(embeddings).__name__}, "
                "not an nn.Embedding"
            )
        width = embeddings.embedding_dim
        self.task_embedding = nn.ParameterDict(
            {s.name: nn.Parameter(torch.zeros(width)) for s in specs}
        )
        embeddings.register_forward_hook(self._add_task_vector)

    def _add_task_vector(self, module: nn.Module, args: Any, out: torch.Tensor) -> Any:
        if not self.conditioning:
            return None
        vectors = list(self.task_embedding.values())
        table = torch.stack([*vectors, torch.zeros_like(vectors[0])]).to(out.dtype)
        return out + self.per_row(table)[:, None, :]  # [B, 1, H]: every token of a row

    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        return [
            *super().task_parameters(task),
            (f"task_embedding.{task}", self.task_embedding[task]),
        ]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mode": self.mode}
