"""What every architecture provides, and the registry they join."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from polytask.data.batching import Segment
from polytask.registry import Registry
from polytask.tasks import TaskSpec


class MultiTaskModel(nn.Module, ABC):
    """Base class: maps a concatenated multi-task batch to each task's head output.

    ``forward`` returns ``{task: logits}`` for the tasks present in ``segments``: ``[n, C]``
    for sequence-level tasks, ``[n, L, C]`` for token-level ones (rows of that segment).
    """

    specs: dict[str, TaskSpec]

    @abstractmethod
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
    ) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters every task's loss can reach (the shared encoder)."""
        ...

    @abstractmethod
    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        """Parameters only ``task``'s loss reaches (its head)."""
        ...

    @staticmethod
    def encode(
        encoder: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """``encoder``'s last hidden states ``[B, L, H]``; ``token_type_ids`` only when given."""
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return out.last_hidden_state

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Pretrained parameters, trained at ``train.lr``; every other parameter (heads, new
        modules) gets ``train.head_lr``. Default: the shared parameters."""
        return self.shared_parameters()

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain arguments that rebuild this architecture (saved in ``polytask.json``)."""
        ...

    def regularization(self) -> dict[str, torch.Tensor]:
        """Extra loss terms of the architecture for the latest training forward, already
        scaled by their coefficients: ``{"soft_penalty": ..., "load_balance": ...}``.

        The training loop adds them to the objective (outside loss weighting and gradient
        aggregation: they belong to no task) and logs their values. Default: none.
        """
        return {}

    def report(self) -> dict[str, Any]:
        """JSON-ready diagnostics gathered since :meth:`reset_report` (e.g. MoE routing
        shares per task); written to ``report.json`` and shown by ``eval``. Default: none."""
        return {}

    def reset_report(self) -> None:
        """Start gathering :meth:`report` afresh (called before each evaluation)."""


ARCHITECTURES: Registry[type[MultiTaskModel]] = Registry("architecture")
