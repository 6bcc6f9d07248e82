"""Token-level top-k expert routing inside the top encoder layers (switch style)."""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from polytask.models.base import ARCHITECTURES
from polytask.models.hard import HardSharing
from polytask.models.routing import RoutingTally
from polytask.segments import Segment
from polytask.tasks import TaskSpec


class Expert(nn.Module):
    """One copy of a BERT-style feed-forward block: ``dense_out(act(dense_in(x)))``."""

    def __init__(self, dense_in: nn.Linear, act: Any, dense_out: nn.Linear) -> None:
        super().__init__()
        self.dense_in, self.act, self.dense_out = dense_in, act, dense_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.dense_out(self.act(self.dense_in(x)))
        return out


class SwitchFFN(nn.Module):
    """A layer's feed-forward block as ``experts`` routed copies (replaces BERT's ``output``).

    The layer's ``intermediate`` becomes ``nn.Identity``, so this module receives the
    attention output twice (as BERT's ``output(intermediate(a), a)``) and returns
    ``LayerNorm(dropout(Σ_e w_e(a) · expert_e(a)) + a)``. Every expert runs densely on every
    token and ``w`` is zero outside each token's top-k experts: no capacity limit, no
    token dropping, and the experts stay full-batch ``nn.Linear`` calls.

    Gate values: the top-k router probabilities renormalised to sum to 1 (Shazeer et al.
    2017's softmax over the kept logits), so identical experts compute exactly the
    pretrained block; gradient: that of the raw probabilities, as in Switch (with k = 1 the
    renormalised gate is the constant 1 and the router would learn from the balance loss
    only). The last forward's router probabilities and choices stay in ``probs``/``chosen``
    for the model's bookkeeping.
    """

    def __init__(
        self, intermediate: nn.Module, output: nn.Module, experts: int, top_k: int, init_std: float
    ) -> None:
        super().__init__()
        dense_in, dense_out = intermediate.dense, output.dense
        assert isinstance(dense_in, nn.Linear) and isinstance(dense_out, nn.Linear)
        self.experts = nn.ModuleList(
            Expert(
                copy.deepcopy(dense_in),
                copy.deepcopy(intermediate.intermediate_act_fn),
                copy.deepcopy(dense_out),
            )
            for _ in range(experts)
        )
        self.router = nn.Linear(dense_in.in_features, experts, bias=False)
        nn.init.normal_(self.router.weight, std=init_std)
        self.dropout = cast(nn.Module, output.dropout)
        self.LayerNorm = cast(nn.Module, output.LayerNorm)  # BERT's name: same state-dict keys
        self.top_k = top_k
        self.probs: torch.Tensor | None = None  # [B, L, E] float32
        self.chosen: torch.Tensor | None = None  # [B, L, k] expert indices

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        x = hidden_states
        # router in float32 under mixed precision (Switch's selective precision)
        probs = torch.softmax(self.router(x).float(), dim=-1)
        top, chosen = probs.topk(self.top_k, dim=-1)
        kept = top / top.sum(dim=-1, keepdim=True)
        gate = top + (kept - top).detach()  # value: renormalised; gradient: raw probabilities
        weights = torch.zeros_like(probs).scatter(-1, chosen, gate).to(x.dtype)
        mixed = sum(
            (weights[..., e : e + 1] * expert(x) for e, expert in enumerate(self.experts)),
            torch.zeros_like(x),
        )
        self.probs, self.chosen = probs, chosen
        out: torch.Tensor = self.LayerNorm(self.dropout(mixed) + input_tensor)
        return out


def feed_forward_layers(encoder: PreTrainedModel) -> nn.ModuleList:
    """The encoder's transformer layers, if each has a BERT-style feed-forward block."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)

    def bert_style(layer: nn.Module) -> bool:
        inter, out = getattr(layer, "intermediate", None), getattr(layer, "output", None)
        return (
            isinstance(getattr(inter, "dense", None), nn.Linear)
            and callable(getattr(inter, "intermediate_act_fn", None))
            and isinstance(getattr(out, "dense", None), nn.Linear)
            and isinstance(getattr(out, "LayerNorm", None), nn.LayerNorm)
            and isinstance(getattr(out, "dropout", None), nn.Dropout)
        )

    if not isinstance(layers, nn.ModuleList) or not all(bert_style(m) for m in layers):
        raise ValueError(
            f"encoder {type(encoder).__name__} has no BERT-style feed-forward layers "
            "(encoder.layer[i].intermediate/output); use a BERT-family encoder "
            "(BERT, MiniLM, RoBERTa, ELECTRA)"
        )
    return layers


@ARCHITECTURES.register("switch")
class SwitchSharing(HardSharing):
    """Hard sharing whose top ``layers`` encoder layers route each token to ``top_k`` of
    ``experts`` feed-forward experts.

    Fedus et al. 2021, "Switch Transformers" (top-1 routing, load-balancing loss
    ``E · Σ_e f_e · P_e``); top-k as in Shazeer et al. 2017, "Outrageously Large Neural
    Networks". Experts start as copies of the pretrained feed-forward block, so training
    starts from the pretrained function. Router and experts are shared by every task; the
    routing report shows each task's share of tokens per expert and layer. Padding tokens
    count in neither the balance loss nor the report. Experts run densely on every token
    (``experts`` × the feed-forward cost of those layers): no capacity limit, so examples
    never interact and per-task gradients keep the one-backward segment split.

    >>> arch = {"name": "switch", "experts": 4, "layers": 2, "top_k": 1, "balance": 0.01}
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
        experts: int = 4,
        layers: int = 1,
        top_k: int = 1,
        balance: float = 0.01,
    ) -> None:
        blocks = feed_forward_layers(encoder)
        if experts < 1:
            raise ValueError(f"experts must be >= 1, got {experts}")
        if not 1 <= layers <= len(blocks):
            raise ValueError(f"layers must be in 1..{len(blocks)} (the encoder's layers)")
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k must be in 1..experts ({experts}), got {top_k}")
        if balance < 0:
            raise ValueError(f"balance must be >= 0, got {balance}")
        super().__init__(encoder, specs, pooling, head_hidden, head_dropout)
        self.n_experts, self.layers, self.top_k, self.balance = experts, layers, top_k, balance
        self.routed = list(range(len(blocks) - layers, len(blocks)))
        init_std = float(getattr(encoder.config, "initializer_range", 0.02))
        self.moe: list[SwitchFFN] = []  # also registered inside the encoder's layers
        for i in self.routed:
            block = blocks[i]
            ffn = SwitchFFN(
                cast(nn.Module, block.intermediate),
                cast(nn.Module, block.output),
                experts,
                top_k,
                init_std,
            )
            block.output, block.intermediate = ffn, nn.Identity()
            self.moe.append(ffn)
        self.tally = RoutingTally(
            experts, [f"layer {i}" for i in self.routed], "share of tokens per expert"
        )
        self._balance_loss: torch.Tensor | None = None
        self._sums: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """The batch's forward (in length chunks, see :class:`MultiTaskModel`), then the
        load-balancing loss over every real token of the batch, whatever the chunks."""
        self._sums = []
        try:
            out = super().forward(input_ids, attention_mask, token_type_ids, segments, **kwargs)
            self._balance_loss = None
            if self.training and torch.is_grad_enabled() and self.balance > 0 and self._sums:
                self._balance_loss = self.balance * self._balance(self._sums)
        finally:
            self._sums = []
        return out

    def forward_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
    ) -> dict[str, torch.Tensor]:
        out = super().forward_rows(input_ids, attention_mask, token_type_ids, segments)
        mask = attention_mask.to(torch.float32)  # padding never counts
        keep = mask.unsqueeze(-1)
        hits = []
        for i, layer in enumerate(self.moe):
            assert layer.chosen is not None and layer.probs is not None
            onehot = F.one_hot(layer.chosen, self.n_experts).sum(dim=-2).float()
            hits.append(onehot)
            # per layer: Σ of top-k hits, Σ of router probabilities, tokens (real only)
            part = ((onehot * keep).sum(dim=(0, 1)), (layer.probs * keep).sum(dim=(0, 1)))
            if len(self._sums) <= i:
                self._sums.append((*part, mask.sum()))
            else:
                f, p, n = self._sums[i]
                self._sums[i] = (f + part[0], p + part[1], n + mask.sum())
        stacked = torch.stack(hits)  # [layers, B, L, E]: tokens' top-k choices
        for seg in segments:
            rows = mask[seg.start : seg.stop]
            counts = (stacked[:, seg.start : seg.stop] * rows[None, :, :, None]).sum(dim=(1, 2))
            self.tally.add(seg.task, counts.detach(), rows.sum())
        for layer in self.moe:  # do not keep the graph alive past this forward
            layer.probs = layer.chosen = None
        return out

    def _balance(self, sums: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Switch's ``E · Σ_e f_e · P_e`` over real tokens, summed over the routed layers:
        ``f_e`` the share of top-k assignments to expert ``e``, ``P_e`` its mean router
        probability (1 when uniform)."""
        terms = []
        for hits, probs, n in sums:
            tokens = n.clamp(min=1.0)
            terms.append(self.n_experts * ((hits / (tokens * self.top_k)) * (probs / tokens)).sum())
        return torch.stack(terms).sum()

    def regularization(self) -> dict[str, torch.Tensor]:
        """The load-balancing loss of the latest training forward, times ``balance``,
        summed over the routed layers."""
        return {} if self._balance_loss is None else {"load_balance": self._balance_loss}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "experts": self.n_experts,
            "layers": self.layers,
            "top_k": self.top_k,
            "balance": self.balance,
        }

    def report(self) -> dict[str, Any]:
        """Per task and routed layer, the share of its (real) tokens' top-k assignments each
        expert received since :meth:`reset_report`."""
        body = self.tally.report()
        for entry in body["tasks"].values():
            entry["unit"] = "tokens"
        return (
            {"routing": {"architecture": "switch", "top_k": self.top_k, **body}}
            if body["tasks"]
            else {}
        )

    def reset_report(self) -> None:
        self.tally.reset()
