"""Progressive Layered Extraction: stacked CGC levels joined by shared gates."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from polytask.models.base import ARCHITECTURES
from polytask.models.extraction import ExtractionModel
from polytask.tasks import TaskSpec


@ARCHITECTURES.register("ple")
class PLE(ExtractionModel):
    """Stacked CGC levels of shared and per-task experts, joined by shared gates below the top.

    Shared encoder → ``levels`` extraction levels of shared and per-task experts → heads.

    Tang et al., RecSys 2020, "Progressive Layered Extraction (PLE): A Novel Multi-Task
    Learning (MTL) Model for Personalized Recommendations". Each level is a CGC
    (``shared_experts`` shared experts, ``task_experts`` per task, task ``t``'s gate over
    the shared ones and its own); below the top level a shared gate over every expert of the
    level feeds the shared experts of the next, and task ``t``'s mixture feeds its own
    experts of the next, as in the paper (LibMTL's ``PLE`` has no shared gate: its shared
    experts read each task's mixture). ``levels=1`` is ``cgc``. The levels below the top
    run on every row of the batch, every task's branch included (all of them reach every
    task's loss through the shared gates): ``levels - 1`` times ``T · task_experts +
    shared_experts`` experts per row, on every token when a token-level task is present.

    >>> arch = {"name": "ple", "levels": 2, "shared_experts": 2, "task_experts": 1}
    >>> import torch
    >>> from transformers import BertConfig, BertModel
    >>> from polytask.segments import Segment
    >>> bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
    ...                             num_attention_heads=2, intermediate_size=32))
    >>> ids = torch.ones(2, 4, dtype=torch.long)
    >>> tasks = [TaskSpec(name="a", type="regression"), TaskSpec(name="b", type="regression")]
    >>> model = PLE(bert, tasks, levels=2)
    >>> model(ids, torch.ones_like(ids), None, [Segment("a", 0, 1), Segment("b", 1, 2)])["b"].shape
    torch.Size([1, 1])
    >>> routing = model.report()["routing"]
    >>> list(routing["tasks"]["a"]["shares"]), routing["shared_gates"]["experts"]
    (['level 0', 'level 1'], 4)
    """

    routing_name = "ple"

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
        levels: int = 2,
        shared_experts: int = 2,
        task_experts: int = 1,
        expert_hidden: int | None = None,
        expert_dropout: float = 0.1,
    ) -> None:
        super().__init__(
            encoder,
            specs,
            pooling,
            head_hidden,
            head_dropout,
            levels,
            shared_experts,
            task_experts,
            expert_hidden,
            expert_dropout,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "levels": self.n_levels}
