"""Expert networks on the shared encoder, and the forward every expert architecture shares.

``mmoe``, ``dselect_k``, ``cgc`` and ``ple`` put expert MLPs between the encoder and the task
heads. They differ in which experts exist and how each task mixes them; what they share
lives here: :class:`Experts` (a bank of ``Linear → GELU → Dropout`` experts), :func:`mix`
(a gate-weighted sum of expert outputs), the validation of their arguments, and
:class:`ExpertModel`, whose :meth:`~ExpertModel.forward_rows` feeds the experts the pooled
vector for sequence-level tasks and every token's hidden state for token-level ones, runs
the architecture's shared part on every row of the batch, then each task's own part on its
rows, and tallies the gate weights for the routing report.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel

from polytask.models.base import MultiTaskModel
from polytask.models.heads import Head, pool
from polytask.models.routing import RoutingTally
from polytask.segments import Segment
from polytask.tasks import TaskSpec, task_type


def check_count(name: str, value: object, low: int = 1) -> None:
    """``value`` is an int (not a bool) of at least ``low``; else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def check_rate(name: str, value: object) -> None:
    """``value`` is a number (not a bool) in ``[0, 1)``; else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


class Experts(nn.ModuleList):
    """``n`` expert MLPs ``Linear(width, inner) → GELU → Dropout``; called on ``x [..., width]``
    it returns every expert's output, stacked: ``[..., n, inner]``.

    >>> Experts(3, width=8, inner=4, dropout=0.0)(torch.zeros(2, 8)).shape
    torch.Size([2, 3, 4])
    """

    def __init__(self, n: int, width: int, inner: int, dropout: float) -> None:
        super().__init__(
            nn.Sequential(nn.Linear(width, inner), nn.GELU(), nn.Dropout(dropout)) for _ in range(n)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([expert(x) for expert in self], dim=-2)


def mix(weights: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """``Σ_e weights[..., e] · outputs[..., e, :]``: gate weights ``[..., E]`` over expert
    outputs ``[..., E, D]`` → ``[..., D]``."""
    return (weights.unsqueeze(-1) * outputs).sum(dim=-2)


class ExpertModel(MultiTaskModel):
    """Shared encoder → experts → per-task gates → heads (the ``mmoe`` family).

    A subclass builds its experts and gates, then :meth:`build_heads` and ``self.tally`` (a
    :class:`RoutingTally`), and implements :meth:`shared_forward` (on every row: the experts
    every task's loss reaches, kept full-batch ``nn.Linear`` calls so the per-task gradient
    engine splits their gradients by segment in one backward) and :meth:`task_forward` (on a
    task's rows: its gate, its mixture, what is its own) and :meth:`task_parameters`. Every
    parameter no task owns is shared (:meth:`shared_parameters`). Only the pretrained
    encoder trains at ``train.lr``; experts, gates and heads are new and train at
    ``train.head_lr`` (at the encoder's rate a token-level task barely moved through them
    in a 300-step run).
    """

    #: ``routing.architecture`` of the report: the registered name
    routing_name: ClassVar[str]
    tally: RoutingTally

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str,
        head_hidden: int | None,
        head_dropout: float,
        expert_hidden: int | None,
        expert_dropout: float,
    ) -> None:
        super().__init__()
        if expert_hidden is not None:
            check_count("expert_hidden", expert_hidden)
        check_rate("expert_dropout", expert_dropout)
        self.encoder = encoder
        self.pooling, self.head_hidden, self.head_dropout = pooling, head_hidden, head_dropout
        self.expert_hidden, self.expert_dropout = expert_hidden, expert_dropout
        self.specs = {s.name: s for s in specs}
        self.width = int(encoder.config.hidden_size)  # the experts' input: H
        self.inner = expert_hidden or self.width  # their output, which the heads read

    def build_heads(self) -> None:
        """One :class:`Head` per task over the experts' output width."""
        self.heads = nn.ModuleDict(
            {
                name: Head(
                    self.inner,
                    task_type(s.type).num_outputs(s),
                    self.head_hidden,
                    self.head_dropout,
                )
                for name, s in self.specs.items()
            }
        )

    def token_level(self, task: str) -> bool:
        return task_type(self.specs[task].type).level == "token"

    @abstractmethod
    def shared_forward(self, x: torch.Tensor) -> Any:
        """The shared part on features ``x [N, (L,) H]`` of every row of the batch."""

    @abstractmethod
    def task_forward(
        self, task: str, state: Any, rows: slice, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """What ``task``'s head reads ``[n, (L,) inner]`` on its ``rows`` of
        :meth:`shared_forward`'s ``state``; tallies its gate weights (``mask``: the rows'
        attention mask for a token-level task, None for a sequence-level one)."""

    def forward_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
    ) -> dict[str, torch.Tensor]:
        hidden = self.encode(self.encoder, input_ids, attention_mask, token_type_ids)
        token = {s.task: self.token_level(s.task) for s in segments}
        views: dict[bool, torch.Tensor] = {}  # token level? → features of every row
        if not all(token.values()):
            views[False] = pool(hidden, attention_mask, self.pooling)
        if any(token.values()):
            views[True] = hidden
        # the shared part on the whole batch (not per segment): see the class docstring
        states = {level: self.shared_forward(x) for level, x in views.items()}
        out = {}
        for seg in segments:
            rows = slice(seg.start, seg.stop)
            mask = attention_mask[rows] if token[seg.task] else None
            out[seg.task] = self.heads[seg.task](
                self.task_forward(seg.task, states[token[seg.task]], rows, mask)
            )
        return out

    @staticmethod
    @torch.no_grad()
    def record(
        tally: RoutingTally, task: str, gates: torch.Tensor, mask: torch.Tensor | None
    ) -> None:
        """Add gate weights ``[n, (L,) blocks, E]`` of real units to ``tally``: padding
        tokens never count."""
        if mask is None:
            tally.add(task, gates.sum(dim=0), gates.shape[0])
        else:
            keep = mask.to(gates.dtype)[:, :, None, None]
            tally.add(task, (gates * keep).sum(dim=(0, 1)), mask.sum())

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The encoder and every parameter no task owns (:meth:`task_parameters`)."""
        owned = {id(p) for task in self.specs for _, p in self.task_parameters(task)}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in owned]

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters()]

    def describe(self) -> dict[str, Any]:
        return {
            "pooling": self.pooling,
            "head_hidden": self.head_hidden,
            "head_dropout": self.head_dropout,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.describe().items())

    def routing_header(self) -> dict[str, Any]:
        """What the routing report says before the tally (``architecture``, expert layout)."""
        return {"architecture": self.routing_name}

    def report(self) -> dict[str, Any]:
        """Per task, the mean gate weight of each expert (over examples for sequence tasks,
        over real tokens for token tasks) since :meth:`reset_report`."""
        body = self.tally.report()
        for task, entry in body["tasks"].items():
            entry["unit"] = "tokens" if self.token_level(task) else "examples"
        return {"routing": {**self.routing_header(), **body}} if body["tasks"] else {}

    def reset_report(self) -> None:
        self.tally.reset()
