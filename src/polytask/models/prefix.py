"""Prefix tuning: per-task learned key/value prefixes in every attention layer, frozen encoder.

Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation" (ACL). Each
task owns ``prefix_length`` key and value vectors per attention layer; every token of that
task's rows also attends to them. The pretrained encoder stays frozen (shared, not trained),
so a task costs its prefix plus its head.

Rows of different tasks in one batch need different prefixes, which PEFT's prefix tuning
(one active adapter per forward, injected through the KV cache) cannot do; here the prefix
enters through a transformers attention function (``AttentionInterface``) that prepends each
row's task prefix to that layer's keys and values and widens the attention mask: one encoder
forward for the whole multi-task batch, plain ``nn.Parameter`` s saved as safetensors.
See ``docs/architectures/prefix.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from polytask.models.base import ARCHITECTURES
from polytask.models.hard import HardSharing
from polytask.models.heads import pool
from polytask.segments import Segment, overlapping
from polytask.tasks import TaskSpec, task_type

ATTENTION = "polytask_prefix"  # the encoder's attention implementation while it has prefixes
CONTEXT = "polytask_prefix"  # the keyword argument that carries a forward's prefixes


class PrefixContext:
    """The prefixes of one encoder forward; the ``i``-th attention call gets layer ``i``'s.

    ``table`` is ``[K, layers, 2, P, hidden]`` (K tasks present, 2 = key/value) and ``rows``
    the task index of each batch row (None: one task for every row). With ``capture`` set
    the keys and values of the plain forward are recorded instead (real-token init).
    """

    def __init__(
        self,
        layers: int,
        table: Tensor | None = None,
        rows: Tensor | None = None,
        capture: list[tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        self.layers, self.table, self.rows, self.capture = layers, table, rows, capture
        self.calls = 0

    def extend(
        self, key: Tensor, value: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Prepend the layer's prefix to ``key``/``value`` ``[B, heads, L, d]``; widen the mask."""
        layer, self.calls = self.calls, self.calls + 1
        if layer >= self.layers:
            raise RuntimeError(f"prefix: more attention calls than the {self.layers} layers")
        if self.capture is not None:
            self.capture.append((key.detach(), value.detach()))
            return key, value, mask
        assert self.table is not None
        kv = self.table[:, layer]  # [K, 2, P, hidden]
        b, heads, _, d = key.shape
        length = kv.shape[2]
        if heads * d != kv.shape[-1]:
            raise RuntimeError(f"prefix: keys of width {heads}×{d}, prefixes of {kv.shape[-1]}")
        kv = kv.expand(b, *kv.shape[1:]) if self.rows is None else kv[self.rows]

        def split(t: Tensor) -> Tensor:  # [B, P, hidden] -> [B, heads, P, d]
            return t.reshape(b, length, heads, d).transpose(1, 2).to(key.dtype)

        key = torch.cat([split(kv[:, 0]), key], dim=2)
        value = torch.cat([split(kv[:, 1]), value], dim=2)
        if mask is not None:  # every row sees its whole prefix: True (bool) / 0.0 (additive)
            shape = (*mask.shape[:-1], length)
            seen = mask.new_ones(shape) if mask.dtype == torch.bool else mask.new_zeros(shape)
            mask = torch.cat([seen, mask], dim=-1)
        return key, value, mask


def prefix_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    """SDPA attention over ``[prefix; keys]`` when the forward carries a :class:`PrefixContext`."""
    context = kwargs.pop(CONTEXT, None)
    if isinstance(context, PrefixContext):
        key, value, attention_mask = context.extend(key, value, attention_mask)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTENTION, prefix_attention)
AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


class TaskPrefix(nn.Module):
    """One task's prefix: a ``[layers, 2, P, hidden]`` table, or (``reparameterize=r``) the
    paper's MLP ``P' [P, hidden] → Linear(hidden, r) → tanh → Linear(r, layers·2·hidden)``."""

    def __init__(self, layers: int, hidden: int, length: int, reparameterize: int | None) -> None:
        super().__init__()
        self.shape = (layers, 2, length, hidden)
        self.table: nn.Parameter | None = None
        self.mlp: nn.Sequential | None = None
        if reparameterize is None:
            self.table = nn.Parameter(torch.randn(self.shape) * 0.02)
        else:
            self.embedding = nn.Parameter(torch.randn(length, hidden))
            self.mlp = nn.Sequential(
                nn.Linear(hidden, reparameterize),
                nn.Tanh(),
                nn.Linear(reparameterize, 2 * layers * hidden),
            )

    def forward(self) -> Tensor:
        if self.table is not None:
            return self.table
        assert self.mlp is not None
        layers, _, length, hidden = self.shape
        flat: Tensor = self.mlp(self.embedding)  # [P, layers·2·hidden]
        return flat.view(length, layers, 2, hidden).permute(1, 2, 0, 3)


@ARCHITECTURES.register("prefix")
class PrefixTuning(HardSharing):
    """Hard sharing with a frozen encoder and a learned key/value prefix per task and layer.

    ``prefix_length`` virtual tokens per layer and task (Li & Liang 2021); the table prefix
    starts as the keys/values of random vocabulary tokens (the paper's real-word init);
    ``reparameterize=r`` trains it through an ``r``-wide MLP instead (more parameters, the
    paper's more stable optimisation). ``freeze_encoder=False`` also fine-tunes the encoder.

    >>> model = PrefixTuning(encoder, specs, prefix_length=10)            # doctest: +SKIP
    """

    encodes_shared_rows_once = False  # each task its own prefix: one forward per task

    @classmethod
    def trains_shared(cls, kwargs: dict[str, Any]) -> bool:
        # the prefixes are per task; the encoder is shared but trains only when unfrozen
        return not kwargs.get("freeze_encoder", True)

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
        prefix_length: int = 10,
        reparameterize: int | None = None,
        freeze_encoder: bool = True,
    ) -> None:
        if prefix_length < 1:
            raise ValueError(f"prefix_length must be >= 1, got {prefix_length}")
        if reparameterize is not None and reparameterize < 1:
            raise ValueError(
                f"reparameterize must be >= 1 (the MLP width) or null, got {reparameterize}"
            )
        super().__init__(encoder, specs, pooling, head_hidden, head_dropout)
        config = encoder.config
        self.layers = int(config.num_hidden_layers)
        hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of {heads} attention heads")
        self.prefix_length, self.reparameterize = prefix_length, reparameterize
        self.freeze_encoder = freeze_encoder
        config._attn_implementation = ATTENTION
        encoder.requires_grad_(not freeze_encoder)
        self.prefixes = nn.ModuleDict(
            {s.name: TaskPrefix(self.layers, hidden, prefix_length, reparameterize) for s in specs}
        )
        start = self._token_activations(len(specs), int(config.vocab_size))
        if reparameterize is None:
            with torch.no_grad():
                for prefix, value in zip(self.prefixes.values(), start, strict=True):
                    assert isinstance(prefix, TaskPrefix) and prefix.table is not None
                    prefix.table.copy_(value)

    def _token_activations(self, n: int, vocab: int) -> Tensor:
        """Keys/values ``[n, layers, 2, P, hidden]`` of ``n`` rows of random vocabulary tokens;
        also proves that every attention layer of this encoder goes through the prefix."""
        ids = torch.randint(0, vocab, (n, self.prefix_length))
        device = next(self.encoder.parameters()).device
        capture: list[tuple[Tensor, Tensor]] = []
        context = PrefixContext(self.layers, capture=capture)
        was_training = self.encoder.training
        self.encoder.eval()
        with torch.no_grad():
            self.encoder(input_ids=ids.to(device), **{CONTEXT: context})
        self.encoder.train(was_training)
        if len(capture) != self.layers:
            raise ValueError(
                f"{type(self.encoder).__name__} routes {len(capture)} of its {self.layers} "
                "attention layers through transformers' AttentionInterface; prefix needs all"
            )
        # [B, heads, P, d] -> [B, P, hidden] per layer and key/value
        flat = [
            [t.transpose(1, 2).reshape(n, self.prefix_length, -1) for t in kv] for kv in capture
        ]
        return torch.stack([torch.stack(kv, dim=1) for kv in flat], dim=1)

    def forward_rows(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None,
        segments: list[Segment],
    ) -> dict[str, Tensor]:
        if overlapping(segments):  # tasks reading the same rows need their own forward each
            out: dict[str, Tensor] = {}
            for seg in segments:
                span = slice(seg.start, seg.stop)
                types = None if token_type_ids is None else token_type_ids[span]
                part = [Segment(seg.task, 0, seg.stop - seg.start)]
                out.update(self.forward_rows(input_ids[span], attention_mask[span], types, part))
            return out
        tasks = list(dict.fromkeys(s.task for s in segments))
        table = torch.stack([self.prefixes[t]() for t in tasks])
        rows: Tensor | None = None
        if len(tasks) > 1:
            rows = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
            for seg in segments:
                rows[seg.start : seg.stop] = tasks.index(seg.task)
        context = PrefixContext(self.layers, table, rows)
        kwargs: dict[str, Any] = {CONTEXT: context}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, **kwargs
        ).last_hidden_state
        if context.calls != self.layers:
            raise RuntimeError(f"prefix reached {context.calls} of {self.layers} attention layers")
        out = {}
        for seg in segments:  # as HardSharing: token tasks read every position, others pool
            states, mask = hidden[seg.start : seg.stop], attention_mask[seg.start : seg.stop]
            head = self.heads[seg.task]
            if task_type(self.specs[seg.task].type).level == "token":
                out[seg.task] = head(states)
            else:
                out[seg.task] = head(pool(states, mask, self.pooling))
        return out

    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        own = [(f"prefixes.{task}.{n}", p) for n, p in self.prefixes[task].named_parameters()]
        return [*own, *super().task_parameters(task)]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "prefix_length": self.prefix_length,
            "reparameterize": self.reparameterize,
            "freeze_encoder": self.freeze_encoder,
        }

    def report(self) -> dict[str, Any]:
        """Trainable parameters per task (prefix + head) and their share of the encoder's."""
        encoder = sum(p.numel() for p in self.encoder.parameters())
        per_task = {
            t: sum(p.numel() for _, p in self.task_parameters(t) if p.requires_grad)
            for t in self.specs
        }
        prefix = {t: sum(p.numel() for p in self.prefixes[t].parameters()) for t in self.specs}
        return {
            "prefix": {
                "encoder_parameters": encoder,
                "encoder_frozen": self.freeze_encoder,
                "prefix_parameters": prefix,
                "trainable_per_task": per_task,
                "trainable_percent_of_encoder": {
                    t: round(100 * n / encoder, 4) for t, n in per_task.items()
                },
            }
        }
