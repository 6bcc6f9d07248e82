"""Task heads and pooling."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import PreTrainedModel

from polytask.models.lm_head import MaskedLMHead
from polytask.tasks import TaskSpec, task_type


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over real (non-padding) tokens."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """``mean`` (masked mean) or ``cls`` (the first token)."""
    if how == "cls":
        return hidden[:, 0]
    return mean_pool(hidden, mask)


class Head(nn.Module):
    """dropout → linear → GELU → linear: the default per-task head."""

    def __init__(
        self, hidden: int, outputs: int, inner: int | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__()
        inner = inner or max(1, hidden // 2)
        self.net = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden, inner), nn.GELU(), nn.Linear(inner, outputs)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(features)
        return out


def build_head(
    spec: TaskSpec, encoder: PreTrainedModel, inner: int | None = None, dropout: float = 0.1
) -> nn.Module:
    """A task's head on ``encoder``: the task type's own head when it has one (``lm``: the
    MLM head tied to the word embeddings), else :class:`Head` over its ``num_outputs``.

    Every architecture builds its heads here, so a new task type brings its head to all.
    """
    ttype = task_type(spec.type)
    if ttype.head != "default":
        return HEADS[ttype.head](encoder)
    return Head(int(encoder.config.hidden_size), ttype.num_outputs(spec), inner, dropout)


#: the heads a task type can ask for by name (``TaskType.head``), built on the encoder
HEADS: dict[str, Callable[[PreTrainedModel], nn.Module]] = {"mlm": MaskedLMHead.for_encoder}
