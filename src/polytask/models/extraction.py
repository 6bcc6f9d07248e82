"""Extraction levels of shared and task-specific experts: what ``cgc`` and ``ple`` share.

Tang et al., RecSys 2020, "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
(MTL) Model for Personalized Recommendations". A level holds ``shared_experts`` experts every
task reads and ``task_experts`` experts of each task's own; task ``t``'s gate mixes the shared
experts and its own (Customized Gate Control, CGC). PLE stacks levels: below the top one,
each task's mixture is the input of its experts one level up, and a shared gate over every
expert of the level (the shared ones and every task's) is the input of the shared experts
one level up. ``cgc`` is one level, ``ple`` several (:class:`ExtractionModel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from transformers import PreTrainedModel

from polytask.models.experts import ExpertModel, Experts, check_count, mix
from polytask.models.routing import RoutingTally
from polytask.tasks import TaskSpec


class Level(nn.Module):
    """One extraction level on inputs of width ``width``: ``shared`` experts, ``own``
    experts per task, one bias-free softmax gate per task over ``[shared, own]`` (the
    paper's ``softmax(W x)``), and, below the top level, a shared gate over ``[shared,
    every task's own]``."""

    def __init__(
        self,
        tasks: list[str],
        sizes: tuple[int, int],  # width of the inputs, of the experts' outputs
        shared: int,
        own: int,
        dropout: float,
        shared_gate: bool,
    ) -> None:
        super().__init__()
        width, inner = sizes
        self.shared = Experts(shared, width, inner, dropout)
        self.own = nn.ModuleDict({t: Experts(own, width, inner, dropout) for t in tasks})
        self.gates = nn.ModuleDict({t: nn.Linear(width, shared + own, bias=False) for t in tasks})
        every = shared + own * len(tasks)
        self.shared_gate = nn.Linear(width, every, bias=False) if shared_gate else None

    def experts(self, task: str | None, x: torch.Tensor) -> torch.Tensor:
        """``task``'s own experts (None: the shared ones) on ``x`` → ``[..., n, inner]``."""
        bank = self.shared if task is None else self.own[task]
        out: torch.Tensor = bank(x)
        return out

    def gate(self, task: str | None, x: torch.Tensor) -> torch.Tensor:
        """``task``'s gate weights (None: the shared gate's) for ``x``."""
        linear = self.shared_gate if task is None else self.gates[task]
        assert linear is not None, "the top level has no shared gate"
        return torch.softmax(linear(x), dim=-1)


@dataclass
class Extracted:
    """Every row's inputs of the top level and the gate weights below it."""

    tasks: dict[str, torch.Tensor]  # task: its branch's input [N, (L,) D]
    shared: torch.Tensor  # the top level's shared experts [N, (L,) S, D]
    task_gates: dict[str, list[torch.Tensor]]  # task: its gate per lower level [N, (L,) S+K]
    shared_gates: list[torch.Tensor]  # the shared gate per lower level [N, (L,) S+T·K]


class ExtractionModel(ExpertModel):
    """``levels`` extraction levels between the shared encoder and the heads.

    Every level but the top one runs on every row of the batch, every task's branch and the
    shared one: the shared gate mixes all of them, so every task's loss reaches them (they
    are shared parameters, as full-batch ``nn.Linear`` calls). The top level's shared experts
    run on every row too; the top level's own experts and gate of task ``t``, and ``t``'s gate
    of the level below (whose mixture only ``t``'s top level reads), run on ``t``'s rows and
    are ``t``'s own parameters with its head. Gates put the shared experts first, then the
    task's own: the routing report's expert ``e < shared_experts`` is the same expert for every
    task, the rest are each task's own; ``shared_gates`` reports the shared gates (on each
    task's rows) over ``[shared, every task's own in task order]``.
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str,
        head_hidden: int | None,
        head_dropout: float,
        levels: int,
        shared_experts: int,
        task_experts: int,
        expert_hidden: int | None,
        expert_dropout: float,
    ) -> None:
        check_count("levels", levels)
        check_count("shared_experts", shared_experts)
        check_count("task_experts", task_experts)
        super().__init__(
            encoder, specs, pooling, head_hidden, head_dropout, expert_hidden, expert_dropout
        )
        self.n_levels, self.shared_experts, self.task_experts = levels, shared_experts, task_experts
        tasks = list(self.specs)
        self.levels = nn.ModuleList(
            Level(
                tasks,
                (self.width if i == 0 else self.inner, self.inner),
                shared_experts,
                task_experts,
                expert_dropout,
                shared_gate=i < levels - 1,
            )
            for i in range(levels)
        )
        self.build_heads()
        blocks = ["gate"] if levels == 1 else [f"level {i}" for i in range(levels)]
        measure = "mean gate weight per expert (shared experts first, then the task's own)"
        self.tally = RoutingTally(shared_experts + task_experts, blocks, measure)
        below = [f"level {i}" for i in range(levels - 1)]
        n_all = shared_experts + len(tasks) * task_experts
        self.shared_tally = RoutingTally(n_all, below, "mean shared-gate weight per expert")

    def stack(self) -> list[Level]:
        return [cast(Level, level) for level in self.levels]

    def shared_forward(self, x: torch.Tensor) -> Extracted:
        shared, tasks = x, dict.fromkeys(self.specs, x)
        task_gates: dict[str, list[torch.Tensor]] = {t: [] for t in self.specs}
        shared_gates = []
        *below, top = self.stack()
        for level in below:
            common = level.experts(None, shared)  # [N, (L,) S, D]
            own = {t: level.experts(t, v) for t, v in tasks.items()}
            step = {}
            for t, v in tasks.items():
                gate = level.gate(t, v)
                step[t] = mix(gate, torch.cat([common, own[t]], dim=-2))
                task_gates[t].append(gate)
            gate = level.gate(None, shared)
            shared = mix(gate, torch.cat([common, *own.values()], dim=-2))
            shared_gates.append(gate)
            tasks = step
        return Extracted(tasks, top.experts(None, shared), task_gates, shared_gates)

    def task_forward(
        self, task: str, state: Extracted, rows: slice, mask: torch.Tensor | None
    ) -> torch.Tensor:
        top = self.stack()[-1]
        x = state.tasks[task][rows]
        gate = top.gate(task, x)
        experts = torch.cat([state.shared[rows], top.experts(task, x)], dim=-2)
        gates = [g[rows] for g in state.task_gates[task]] + [gate]
        self.record(self.tally, task, torch.stack(gates, dim=-2), mask)
        if state.shared_gates:
            below = torch.stack([g[rows] for g in state.shared_gates], dim=-2)
            self.record(self.shared_tally, task, below, mask)
        return mix(gate, experts)

    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        top = len(self.levels) - 1
        mine = [f"levels.{top}.own.{task}.", f"levels.{top}.gates.{task}.", f"heads.{task}."]
        if top > 0:  # the gate whose mixture only this task's top level reads
            mine.append(f"levels.{top - 1}.gates.{task}.")
        return [(n, p) for n, p in self.named_parameters() if n.startswith(tuple(mine))]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "shared_experts": self.shared_experts,
            "task_experts": self.task_experts,
            "expert_hidden": self.expert_hidden,
            "expert_dropout": self.expert_dropout,
        }

    def routing_header(self) -> dict[str, Any]:
        return {
            "architecture": self.routing_name,
            "shared_experts": self.shared_experts,
            "task_experts": self.task_experts,
        }

    def report(self) -> dict[str, Any]:
        out = super().report()
        below = self.shared_tally.report()
        if out and below["tasks"]:
            out["routing"]["shared_gates"] = below
        return out

    def reset_report(self) -> None:
        super().reset_report()
        self.shared_tally.reset()
