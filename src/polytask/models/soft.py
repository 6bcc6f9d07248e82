"""Soft parameter sharing: one encoder per task, pulled together by an L2 penalty."""

from __future__ import annotations

import copy
import re
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from polytask.models.base import ARCHITECTURES, MultiTaskModel
from polytask.models.heads import Head, pool
from polytask.segments import Segment
from polytask.tasks import TaskSpec, task_type

# "encoder.layer.3.", "layers.3.", "h.3.", "block.3.": the index of a transformer layer
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
MANY_TASKS = 4  # beyond this, T encoder copies dominate memory and time: warn


def layer_index(name: str) -> int | None:
    """The transformer layer a parameter belongs to, or None (embeddings, pooler).

    >>> layer_index("encoder.layer.5.attention.self.query.weight"), layer_index("embeddings.word_embeddings.weight")
    (5, None)
    """  # noqa: E501
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def penalised_names(encoder: nn.Module, top_k_layers: int | None) -> list[str]:
    """Names of the encoder parameters the penalty ties: all, or those of the top k layers."""
    names = [n for n, p in encoder.named_parameters() if p.requires_grad]
    if top_k_layers is None:
        return names
    layers = {i for n in names if (i := layer_index(n)) is not None}
    if not layers:
        raise ValueError("top_k_layers: found no numbered transformer layers in the encoder")
    if top_k_layers > len(layers):
        raise ValueError(f"top_k_layers={top_k_layers} but the encoder has {len(layers)} layers")
    first = max(layers) + 1 - top_k_layers
    return [n for n in names if (i := layer_index(n)) is not None and i >= first]


_CHUNK = 1 << 16


class SoftPenalty(torch.autograd.Function):
    """``λ Σ_{i<j} ‖θ_i − θ_j‖² = λ T Σ_i ‖θ_i − θ̄‖²`` with its closed-form gradient
    ``2λT (θ_i − θ̄)``, in O(T) foreach passes over the parameters (no pairs, no autograd graph).

    ``forward(ctx, penalty, scratch, n, *params)``: ``params`` are T copies of ``n`` tensors,
    copy-major; ``scratch`` holds ``n`` preallocated tensors shaped like one copy (reused for
    the scaled mean every call). The gradients are computed in the forward, in the tensors
    that then become ``.grad`` (autograd takes them over when ``.grad`` is unset), so a step
    allocates nothing beyond the gradients themselves.
    """

    @staticmethod
    def forward(ctx: Any, penalty: float, scratch: list[Tensor], n: int, *params: Tensor) -> Tensor:
        T = len(params) // n
        copies = [list(params[i * n : (i + 1) * n]) for i in range(T)]
        c = 2.0 * penalty * T
        torch._foreach_copy_(scratch, copies[0])
        for other in copies[1:]:
            torch._foreach_add_(scratch, other)
        torch._foreach_mul_(scratch, -c / T)  # scratch = −c θ̄
        grads = [torch._foreach_add(scratch, copy_, alpha=c) for copy_ in copies]  # c (θ_i − θ̄)
        # Norms of 2^16-element views: one fp32 accumulation over a whole embedding matrix
        # (11.7 M values) loses ~5e-4 relative; per chunk, summed in float64, ~4e-7.
        chunks = [c for gs in grads for g in gs for c in g.reshape(-1).split(_CHUNK)]
        norms = torch.stack(torch._foreach_norm(chunks))
        value = norms.double().square().sum() / (c * c) * (penalty * T)  # λ T Σ ‖θ_i − θ̄‖²
        ctx.grads = [g for gs in grads for g in gs]
        return value.to(params[0].dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grads, ctx.grads = ctx.grads, None
        if float(grad_output) != 1.0:  # the objective sums terms: almost always exactly 1
            torch._foreach_mul_(grads, grad_output)
        return (None, None, None, *grads)


@ARCHITECTURES.register("soft")
class SoftSharing(MultiTaskModel):
    """One encoder copy and one head per task; an L2 penalty keeps the copies close.

    Duong et al. 2015, "Low Resource Dependency Parsing: Cross-lingual Parameter Sharing in
    a Neural Network Parser" (ACL). Every copy starts from the given pretrained weights (the
    first task keeps ``encoder`` itself); each task's rows go through its own copy only.
    :meth:`regularization` returns ``penalty · Σ_{i<j} ‖θ_i − θ_j‖²`` over corresponding
    parameters (all, or the top ``top_k_layers`` transformer layers). Nothing is shared, so
    every task's parameters are its encoder and its head.
    """

    encodes_shared_rows_once = False  # one encoder per task

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
        penalty: float = 1e-3,
        top_k_layers: int | None = None,
    ) -> None:
        super().__init__()
        if not penalty >= 0.0:  # also rejects NaN
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        if top_k_layers is not None and top_k_layers < 1:
            raise ValueError(f"top_k_layers must be >= 1 or null, got {top_k_layers}")
        if len(specs) > MANY_TASKS:
            warnings.warn(
                f"polytask: soft sharing keeps one encoder per task: {len(specs)} copies cost "
                f"≈{len(specs)}× the memory and compute of hard sharing",
                RuntimeWarning,
                stacklevel=2,
            )
        self.pooling, self.head_hidden, self.head_dropout = pooling, head_hidden, head_dropout
        self.penalty, self.top_k_layers = float(penalty), top_k_layers
        self.specs = {s.name: s for s in specs}
        self._tied = penalised_names(encoder, top_k_layers)
        names = list(self.specs)
        self.encoders = nn.ModuleDict(
            {n: encoder if i == 0 else copy.deepcopy(encoder) for i, n in enumerate(names)}
        )
        hidden = int(encoder.config.hidden_size)
        self.heads = nn.ModuleDict(
            {
                s.name: Head(hidden, task_type(s.type).num_outputs(s), head_hidden, head_dropout)
                for s in specs
            }
        )
        self._scratch: list[Tensor] = []

    @property
    def encoder(self) -> nn.Module:
        """The first task's copy: every copy has its architecture (saved as ``encoder/``)."""
        return self.encoders[next(iter(self.specs))]

    def forward_rows(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None,
        segments: list[Segment],
    ) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for seg in segments:
            rows = slice(seg.start, seg.stop)
            mask = attention_mask[rows]
            used = mask.any(0).nonzero()  # drop padding columns no row of this task uses
            width = int(used.max()) + 1 if used.numel() else 1
            kwargs: dict[str, Tensor] = {}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids[rows, :width]
            hidden = self.encoders[seg.task](
                input_ids=input_ids[rows, :width], attention_mask=mask[:, :width], **kwargs
            ).last_hidden_state
            head = self.heads[seg.task]
            if task_type(self.specs[seg.task].type).level == "token":
                logits = head(hidden)
                out[seg.task] = F.pad(logits, (0, 0, 0, mask.shape[1] - width))
            else:
                out[seg.task] = head(pool(hidden, mask[:, :width], self.pooling))
        return out

    @classmethod
    def trains_shared(cls, kwargs: dict[str, Any]) -> bool:
        return False  # one encoder per task: every parameter belongs to one task

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return []

    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        return [
            *((f"encoders.{task}.{n}", p) for n, p in self.encoders[task].named_parameters()),
            *((f"heads.{task}.{n}", p) for n, p in self.heads[task].named_parameters()),
        ]

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [
            (f"encoders.{task}.{n}", p)
            for task, enc in self.encoders.items()
            for n, p in enc.named_parameters()
        ]

    def tied_parameters(self) -> list[list[nn.Parameter]]:
        """The penalised parameters: one list per task copy, in corresponding order."""
        out = []
        for enc in self.encoders.values():
            params = dict(enc.named_parameters())
            out.append([params[n] for n in self._tied])
        return out

    def regularization(self) -> dict[str, Tensor]:
        copies = self.tied_parameters()
        if self.penalty == 0.0 or len(copies) < 2 or not copies[0]:
            return {}
        first = copies[0]
        if len(self._scratch) != len(first) or any(
            s.shape != p.shape or s.dtype != p.dtype or s.device != p.device
            for s, p in zip(self._scratch, first, strict=True)
        ):
            self._scratch = [torch.empty_like(p) for p in first]
        flat = [p for ps in copies for p in ps]
        value = SoftPenalty.apply(self.penalty, self._scratch, len(first), *flat)
        return {"soft_penalty": value}

    def describe(self) -> dict[str, Any]:
        return {
            "pooling": self.pooling,
            "head_hidden": self.head_hidden,
            "head_dropout": self.head_dropout,
            "penalty": self.penalty,
            "top_k_layers": self.top_k_layers,
        }
