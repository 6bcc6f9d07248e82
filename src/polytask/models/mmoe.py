"""Multi-gate Mixture-of-Experts between the shared encoder and the task heads."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from polytask.models.base import ARCHITECTURES
from polytask.models.experts import ExpertModel, Experts, check_count, mix
from polytask.models.routing import RoutingTally
from polytask.tasks import TaskSpec


@ARCHITECTURES.register("mmoe")
class MMoE(ExpertModel):
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

    routing_name = "mmoe"

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
        check_count("experts", experts)
        super().__init__(
            encoder, specs, pooling, head_hidden, head_dropout, expert_hidden, expert_dropout
        )
        self.n_experts = experts
        self.experts = Experts(experts, self.width, self.inner, expert_dropout)
        self.gates = nn.ModuleDict({s.name: self.build_gate() for s in specs})
        self.build_heads()
        self.tally = RoutingTally(experts, ["gate"], "mean gate weight per expert")

    def build_gate(self) -> nn.Module:
        """One task's gate: the paper's ``softmax(W_t x)``, no bias."""
        return nn.Linear(self.width, self.n_experts, bias=False)

    def gate_weights(self, task: str, features: torch.Tensor) -> torch.Tensor:
        """``task``'s weights over the experts ``[..., E]`` for ``features [..., H]``."""
        return torch.softmax(self.gates[task](features), dim=-1)

    def shared_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.experts(x)  # every expert on every row: [N, (L,) E, inner]

    def task_forward(
        self,
        task: str,
        state: tuple[torch.Tensor, torch.Tensor],
        rows: slice,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        features, expert_out = state[0][rows], state[1][rows]
        gate = self.gate_weights(task, features)  # [n, (L,) E]
        self.record(self.tally, task, gate.unsqueeze(-2), mask)
        return mix(gate, expert_out)

    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        return [(f"gates.{task}.{n}", p) for n, p in self.gates[task].named_parameters()] + [
            (f"heads.{task}.{n}", p) for n, p in self.heads[task].named_parameters()
        ]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "experts": self.n_experts,
            "expert_hidden": self.expert_hidden,
            "expert_dropout": self.expert_dropout,
        }
