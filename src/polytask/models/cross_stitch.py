"""Cross-stitch networks: one encoder column per task, hidden states mixed between layers."""

from __future__ import annotations

import copy
import warnings
from functools import partial
from typing import Any, cast

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from polytask.models.base import ARCHITECTURES, MultiTaskModel
from polytask.models.conditioning import encoder_layers, hidden_of, replace_hidden
from polytask.models.heads import build_head, pool
from polytask.models.soft import MANY_TASKS
from polytask.segments import Segment
from polytask.tasks import TaskSpec, task_type


def stitch_init(tasks: int, self_weight: float) -> Tensor:
    """``α`` at the start: ``self_weight`` on the diagonal, the rest of each row shared
    equally by the other columns, so every row sums to 1 (a single task: ``[[1]]``).

    >>> stitch_init(3, 0.9)
    tensor([[0.9000, 0.0500, 0.0500],
            [0.0500, 0.9000, 0.0500],
            [0.0500, 0.0500, 0.9000]])
    """
    if tasks == 1:
        return torch.ones(1, 1)
    return torch.full((tasks, tasks), (1.0 - self_weight) / (tasks - 1)).fill_diagonal_(self_weight)


@ARCHITECTURES.register("cross_stitch")
class CrossStitch(MultiTaskModel):
    """One encoder column per task; learned cross-stitch units mix the columns between layers.

    Misra et al., CVPR 2016, "Cross-stitch Networks for Multi-task Learning"; placed as in
    LibMTL's ``Cross_stitch``: after every layer but the last, column ``t``'s next layer reads
    ``Σ_u α_tu h_u`` of every column's hidden states ``h_u`` (one learned ``T × T`` matrix
    per gap between layers, a bias-free ``nn.Linear`` over the column axis, so the per-task
    gradient engine splits it by segment). ``α`` starts at ``self_weight`` on the diagonal,
    the rest of each row shared equally (the paper's best start for two tasks, α_S = 0.9,
    α_D = 0.1; LibMTL starts every α at 1, which sums ``T`` hidden states into a pretrained
    layer that expects one); ``self_weight=1`` starts from ``T`` copies of the pretrained
    encoder. Task ``t``'s head reads column ``t``'s last layer.

    Cost: ``T`` encoder copies (memory, and parameters to train: ``T ×`` the encoder), and
    every row of the batch runs through all ``T`` columns, whichever task it belongs to:
    ``≈ T ×`` hard sharing's compute per step. Tasks reading the same rows (``inputs:``,
    serving ``"*"``) share that one ``T``-column pass. Shared parameters: every column's
    embeddings and layers below the last (each reaches every task's loss through the
    stitches), the stitches, and (as in hard sharing) each column's unused pooler; task
    ``t``'s own: its column's last layer and its head. Needs a BERT-family encoder whose
    layers take the previous layer's hidden states and whose output is its last layer's
    (checked on every forward).

    >>> arch = {"name": "cross_stitch", "self_weight": 0.9}  # in the run config
    >>> from transformers import BertConfig, BertModel
    >>> from polytask.segments import Segment
    >>> bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
    ...                             num_attention_heads=2, intermediate_size=32))
    >>> ids = torch.ones(2, 4, dtype=torch.long)
    >>> tasks = [TaskSpec(name="a", type="regression"), TaskSpec(name="b", type="regression")]
    >>> model = CrossStitch(bert, tasks)  # two columns, one stitch between the two layers
    >>> model(ids, torch.ones_like(ids), None, [Segment("a", 0, 1), Segment("b", 1, 2)])["a"].shape
    torch.Size([1, 1])
    >>> model.report()["cross_stitch"]["stitches"]["layer 0 → 1"]
    [[0.9, 0.1], [0.1, 0.9]]
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
        self_weight: float = 0.9,
    ) -> None:
        super().__init__()
        if isinstance(self_weight, bool) or not isinstance(self_weight, int | float):
            raise ValueError(f"self_weight must be a number, got {self_weight!r}")
        if not 0.0 <= self_weight <= 1.0:
            raise ValueError(f"self_weight must be in [0, 1], got {self_weight}")
        layers = encoder_layers(encoder)
        if len(layers) < 2:
            raise ValueError(
                "cross_stitch needs an encoder of at least 2 layers (a stitch between)"
            )
        if not isinstance(getattr(encoder, "embeddings", None), nn.Module):
            raise ValueError(f"encoder {type(encoder).__name__} has no `embeddings` module")
        if len(specs) > MANY_TASKS:
            warnings.warn(
                f"polytask: cross_stitch keeps one encoder column per task and runs every row "
                f"through all {len(specs)}: ≈{len(specs)}× the memory and compute of hard "
                "sharing",
                RuntimeWarning,
                stacklevel=2,
            )
        self.pooling, self.head_hidden, self.head_dropout = pooling, head_hidden, head_dropout
        self.self_weight = float(self_weight)
        self.specs = {s.name: s for s in specs}
        names = list(self.specs)
        columns = [encoder] + [copy.deepcopy(encoder) for _ in names[1:]]
        self.columns = nn.ModuleDict(dict(zip(names, columns, strict=True)))
        stitches = [nn.Linear(len(names), len(names), bias=False) for _ in layers[1:]]
        with torch.no_grad():
            for stitch in stitches:
                stitch.weight.copy_(stitch_init(len(names), self.self_weight))
        self.stitches = nn.ModuleList(stitches)
        self.heads = nn.ModuleDict(
            {
                n: build_head(self.specs[n], c, head_hidden, head_dropout)
                for n, c in zip(names, columns, strict=True)
            }
        )
        # plain lists (already registered above): each column's layers and embeddings
        self._stacks = [encoder_layers(c) for c in columns]
        self._embeddings = [cast(nn.Module, c.embeddings) for c in columns]
        self._mix = stitches
        self._states: list[Tensor] | None = None  # during a forward: each column's states
        self._embeddings[0].register_forward_hook(self._embedded, with_kwargs=True)
        for i, layer in enumerate(layers):
            layer.register_forward_hook(partial(self._layer, i), with_kwargs=True)

    @property
    def encoder(self) -> nn.Module:
        """The first task's column: every column has its architecture (saved as ``encoder/``)."""
        return self.columns[next(iter(self.specs))]

    def _embedded(self, module: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        """The first column's embeddings ran: run every other column's on the same inputs."""
        if self._states is None:
            return
        others = self._embeddings[1:]
        self._states = [hidden_of(out)] + [hidden_of(e(*args, **kwargs)) for e in others]

    def _layer(self, i: int, module: nn.Module, args: Any, kwargs: Any, out: Any) -> Any:
        """The first column's layer ``i`` ran: run it in every other column, then stitch."""
        states = self._states
        if states is None:
            return None
        if not states or not args or args[0] is not states[0]:
            raise RuntimeError(
                "cross_stitch: the encoder's layers do not read the previous layer's hidden "
                "states as their first argument; use a BERT-family encoder"
            )
        outs = [hidden_of(out)] + [
            hidden_of(stack[i](h, *args[1:], **kwargs))
            for stack, h in zip(self._stacks[1:], states[1:], strict=True)
        ]
        if i == len(self._mix):  # the last layer: each column's output, unmixed
            self._states = outs
            return None
        mixed = self._mix[i](torch.stack(outs, dim=-1))  # [B, L, H, T] over the columns
        self._states = list(mixed.movedim(-1, 0).contiguous().unbind(0))
        return replace_hidden(out, self._states[0])

    def column_states(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None
    ) -> list[Tensor]:
        """Every column's last hidden states ``[B, L, H]``, in task order: the first column's
        encoder forward drives the others layer by layer (its hooks run them)."""
        self._states = []
        try:
            last = self.encode(self.encoder, input_ids, attention_mask, token_type_ids)
            states = self._states
        finally:
            self._states = None
        if not states or last is not states[0]:
            raise RuntimeError(
                "cross_stitch: the encoder's output is not its last layer's hidden states "
                "(a projection or norm after the layers?); use a BERT-family encoder"
            )
        return states

    def forward_rows(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None,
        segments: list[Segment],
    ) -> dict[str, Tensor]:
        states = self.column_states(input_ids, attention_mask, token_type_ids)
        column = dict(zip(self.specs, states, strict=True))
        out = {}
        for seg in segments:
            rows = slice(seg.start, seg.stop)
            hidden, head = column[seg.task][rows], self.heads[seg.task]
            if task_type(self.specs[seg.task].type).level == "token":
                out[seg.task] = head(hidden)
            else:
                out[seg.task] = head(pool(hidden, attention_mask[rows], self.pooling))
        return out

    def _own(self, task: str) -> set[int]:
        """Column ``task``'s parameters only its task reaches: its last layer."""
        return {id(p) for p in self._stacks[list(self.specs).index(task)][-1].parameters()}

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        own = set().union(*(self._own(t) for t in self.specs))
        return [
            (f"columns.{t}.{n}", p)
            for t, column in self.columns.items()
            for n, p in column.named_parameters()
            if id(p) not in own
        ] + [(f"stitches.{n}", p) for n, p in self.stitches.named_parameters()]

    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        own = self._own(task)
        # a head may reuse a column tensor (the lm head's decoder): that one is shared
        columns = {id(p) for p in self.columns.parameters()}
        return [
            (f"columns.{task}.{n}", p)
            for n, p in self.columns[task].named_parameters()
            if id(p) in own
        ] + [
            (f"heads.{task}.{n}", p)
            for n, p in self.heads[task].named_parameters()
            if id(p) not in columns
        ]

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every column trains at ``train.lr``; stitches and heads at ``train.head_lr`` (the
        paper trains its α at a larger rate than the network)."""
        return [(f"columns.{n}", p) for n, p in self.columns.named_parameters()]

    def describe(self) -> dict[str, Any]:
        return {
            "pooling": self.pooling,
            "head_hidden": self.head_hidden,
            "head_dropout": self.head_dropout,
            "self_weight": self.self_weight,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.describe().items())

    def report(self) -> dict[str, Any]:
        """The stitches' ``α``: per gap between layers, row ``t`` is what column ``t``'s next
        layer reads of each column (tasks in column order)."""
        units = {
            f"layer {i} → {i + 1}": [[round(v, 6) for v in row] for row in s.weight.tolist()]
            for i, s in enumerate(self._mix)
        }
        return {"cross_stitch": {"columns": list(self.specs), "stitches": units}}
