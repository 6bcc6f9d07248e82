"""Multi-gate Mixture-of-Experts between the shared encoder and the task heads."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from polytask.models.base import ARCHITECTURES, MultiTaskModel
from polytask.models.heads import Head, pool
from polytask.models.routing import RoutingTally
from polytask.segments import Segment
from polytask.tasks import TaskSpec, task_type


@ARCHITECTURES.register("mmoe")
class MMoE(MultiTaskModel):
    """Shared encoder → ``experts`` shared expert MLPs → one softmax gate per task → heads.

    Ma et al., KDD 2018, "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts". Each expert is ``Linear(H, expert_hidden) → GELU → Dropout``; task
    ``t``'s head reads ``Σ_e softmax(W_t x)_e · expert_e(x)``. ``x`` is the pooled vector for
    sequence-level tasks and every token's hidden state for token-level tasks (a tagging
    task gates each token on its own). Encoder and experts are shared; gates and heads
    belong to their task.

    The experts run on every row of the batch (pooled and, when a token task is present,
    token features): that keeps them full-batch ``nn.Linear`` calls, so the per-task gradient
    engine splits their gradients by segment in one backward. They cost about
    ``experts · H · expert_hidden`` multiply-adds per token, a few percent of the encoder.

    >>> arch = {"name": "mmoe", "experts": 4, "expert_hidden": 256}  # in the run config
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
        experts: int = 4,
        expert_hidden: int | None = None,
        expert_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if experts < 1:
            raise ValueError(f"experts must be >= 1, got {experts}")
        if expert_hidden is not None and expert_hidden < 1:
            raise ValueError(f"expert_hidden must be >= 1, got {expert_hidden}")
        if not 0.0 <= expert_dropout < 1.0:
            raise ValueError(f"expert_dropout must be in [0, 1), got {expert_dropout}")
        self.encoder = encoder
        self.pooling, self.head_hidden, self.head_dropout = pooling, head_hidden, head_dropout
        self.n_experts, self.expert_hidden, self.expert_dropout = (
            experts,
            expert_hidden,
            expert_dropout,
        )
        self.specs = {s.name: s for s in specs}
        hidden = int(encoder.config.hidden_size)
        inner = expert_hidden or hidden
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), nn.Dropout(expert_dropout))
            for _ in range(experts)
        )
        # the paper's gate: softmax(W_t x), no bias
        self.gates = nn.ModuleDict({s.name: nn.Linear(hidden, experts, bias=False) for s in specs})
        self.heads = nn.ModuleDict(
            {
                s.name: Head(inner, task_type(s.type).num_outputs(s), head_hidden, head_dropout)
                for s in specs
            }
        )
        self.tally = RoutingTally(experts, ["gate"], "mean gate weight per expert")

    def _token_level(self, task: str) -> bool:
        return task_type(self.specs[task].type).level == "token"

    def _mix(self, features: torch.Tensor) -> torch.Tensor:
        """Every expert on ``features [..., H]`` → ``[..., E, expert_hidden]``."""
        return torch.stack([expert(features) for expert in self.experts], dim=-2)

    def forward_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
    ) -> dict[str, torch.Tensor]:
        hidden = self.encode(self.encoder, input_ids, attention_mask, token_type_ids)
        token = {s.task: self._token_level(s.task) for s in segments}
        pooled = pool(hidden, attention_mask, self.pooling) if not all(token.values()) else None
        # experts on the whole batch (not per segment): see the class docstring
        by_example = self._mix(pooled) if pooled is not None else None
        by_token = self._mix(hidden) if any(token.values()) else None
        out = {}
        for seg in segments:
            rows = slice(seg.start, seg.stop)
            if token[seg.task]:
                assert by_token is not None
                features, expert_out = hidden[rows], by_token[rows]
            else:
                assert pooled is not None and by_example is not None
                features, expert_out = pooled[rows], by_example[rows]
            gate = torch.softmax(self.gates[seg.task](features), dim=-1)  # [n, (L,) E]
            out[seg.task] = self.heads[seg.task]((gate.unsqueeze(-1) * expert_out).sum(dim=-2))
            self._tally(seg.task, gate, attention_mask[rows] if token[seg.task] else None)
        return out

    @torch.no_grad()
    def _tally(self, task: str, gate: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Gate weights of real units only: padding tokens never count."""
        if mask is None:
            self.tally.add(task, gate.sum(dim=0)[None], gate.shape[0])
        else:
            keep = mask.to(gate.dtype).unsqueeze(-1)
            self.tally.add(task, (gate * keep).sum(dim=(0, 1))[None], mask.sum())

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters()] + [
            (f"experts.{n}", p) for n, p in self.experts.named_parameters()
        ]

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Only the pretrained encoder trains at ``train.lr``: the experts are new, randomly
        initialised layers and train at ``train.head_lr`` like the gates and heads (at the
        encoder's rate a token-level task barely moved through them in a 300-step run)."""
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters()]

    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        return [(f"gates.{task}.{n}", p) for n, p in self.gates[task].named_parameters()] + [
            (f"heads.{task}.{n}", p) for n, p in self.heads[task].named_parameters()
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "pooling": self.pooling,
            "head_hidden": self.head_hidden,
            "head_dropout": self.head_dropout,
            "experts": self.n_experts,
            "expert_hidden": self.expert_hidden,
            "expert_dropout": self.expert_dropout,
        }

    def report(self) -> dict[str, Any]:
        """Per task, the mean gate weight of each expert (over examples for sequence tasks,
        over real tokens for token tasks) since :meth:`reset_report`."""
        body = self.tally.report()
        for task, entry in body["tasks"].items():
            entry["unit"] = "tokens" if self._token_level(task) else "examples"
        return {"routing": {"architecture": "mmoe", **body}} if body["tasks"] else {}

    def reset_report(self) -> None:
        self.tally.reset()
