"""Customized Gate Control: shared and task-specific experts, one gate per task over both."""

from __future__ import annotations

from transformers import PreTrainedModel

from polytask.models.base import ARCHITECTURES
from polytask.models.extraction import ExtractionModel
from polytask.tasks import TaskSpec


@ARCHITECTURES.register("cgc")
class CGC(ExtractionModel):
    """Shared experts and each task's own experts; each task's gate mixes the shared and its own.

    Shared encoder → ``shared_experts`` shared experts and ``task_experts`` experts per task
    → one softmax gate per task over the shared experts and its own → heads.

    Tang et al., RecSys 2020, "Progressive Layered Extraction (PLE): A Novel Multi-Task
    Learning (MTL) Model for Personalized Recommendations" (CGC, its single-level form; no
    official code: LibMTL's ``CGC`` is the reference, with no defaults for the expert
    counts). Experts are MMoE's (``Linear(H, expert_hidden) → GELU → Dropout``); task
    ``t``'s head reads ``Σ_e softmax(W_t x)_e · expert_e(x)`` over ``[shared, t's own]``.
    ``x`` is the pooled vector for sequence-level tasks, every token's hidden state for
    token-level ones. Shared: the encoder and the shared experts; task ``t``'s own: its
    experts, its gate and its head. The shared experts run on every row of the batch
    (full-batch ``nn.Linear`` calls: the per-task gradient engine splits them by segment),
    a task's own experts on its rows only.

    >>> arch = {"name": "cgc", "shared_experts": 2, "task_experts": 1}  # in the run config
    >>> import torch
    >>> from transformers import BertConfig, BertModel
    >>> from polytask.segments import Segment
    >>> bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
    ...                             num_attention_heads=2, intermediate_size=32))
    >>> ids = torch.ones(2, 4, dtype=torch.long)
    >>> model = CGC(bert, [TaskSpec(name="a", type="regression")], shared_experts=2)
    >>> model(ids, torch.ones_like(ids), None, [Segment("a", 0, 2)])["a"].shape
    torch.Size([2, 1])
    >>> routing = model.report()["routing"]  # 2 shared experts, then the task's own
    >>> routing["experts"], routing["tasks"]["a"]["count"]
    (3, 2)
    """

    routing_name = "cgc"

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
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
            1,
            shared_experts,
            task_experts,
            expert_hidden,
            expert_dropout,
        )
