"""DSelect-k: MMoE's shared experts, each task's softmax gate replaced by a DSelect-k gate."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from polytask.models.base import ARCHITECTURES
from polytask.models.experts import check_count, mix
from polytask.models.mmoe import MMoE
from polytask.segments import Segment
from polytask.tasks import TaskSpec

EPSILON = 1e-6  # the official code's: inside the entropy's log


def smooth_step(t: torch.Tensor, gamma: float) -> torch.Tensor:
    """0 for ``t ≤ −γ/2``, 1 for ``t ≥ γ/2``, ``−2t³/γ³ + 3t/(2γ) + 1/2`` between: a
    cubic with value and slope continuous at both ends, so a selector trained into the flat
    parts is exactly binary (Hazimeh et al. 2020, "The Tree Ensemble Layer").

    >>> smooth_step(torch.tensor([-1.0, -0.5, 0.0, 0.25, 0.5]), gamma=1.0)
    tensor([0.0000, 0.0000, 0.5000, 0.8438, 1.0000])
    """
    cubic = (-2.0 / gamma**3) * t**3 + (1.5 / gamma) * t + 0.5
    ones, zeros = torch.ones_like(t), torch.zeros_like(t)
    return torch.where(t <= -gamma / 2, zeros, torch.where(t >= gamma / 2, ones, cubic))


class DSelectGate(nn.Module):
    """One task's per-example DSelect-k gate over ``experts`` experts.

    ``k`` single-expert selectors: selector ``i`` reads ``m = ⌈log2 E⌉`` smooth steps
    ``s_i = S(Z_i x)`` as the binary code of one expert, weighting expert ``e`` by
    ``Π_j (s_ij if bit j of e else 1 − s_ij)``; the gate is ``Σ_i softmax(W x)_i ·
    selector_i``. Initialisation as in the official code: ``Z`` uniform in ``±γ/100``, ``W``
    uniform in ``±0.05`` (Keras' default), biases alike.
    """

    codes: torch.Tensor  # [E, m] bool: expert e's binary code, most significant bit first

    def __init__(self, width: int, experts: int, k: int, gamma: float) -> None:
        super().__init__()
        self.k, self.gamma, self.bits = k, gamma, math.ceil(math.log2(experts))
        self.z = nn.Linear(width, k * self.bits)
        self.w = nn.Linear(width, k)
        for p in self.z.parameters():
            nn.init.uniform_(p, -gamma / 100, gamma / 100)
        for p in self.w.parameters():
            nn.init.uniform_(p, -0.05, 0.05)
        codes = [[(e >> (self.bits - 1 - j)) & 1 for j in range(self.bits)] for e in range(experts)]
        self.register_buffer("codes", torch.tensor(codes, dtype=torch.bool), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x [..., H]`` → expert weights ``[..., E]``, the selectors ``[..., k, E]`` and
        the smooth steps ``[..., k, m]``."""
        steps = smooth_step(self.z(x).unflatten(-1, (self.k, self.bits)), self.gamma)
        s = steps.unsqueeze(-2)  # [..., k, 1, m] against codes [E, m]
        selectors = torch.where(self.codes, s, 1 - s).prod(dim=-1)
        chosen = torch.softmax(self.w(x), dim=-1)  # [..., k]
        return (chosen.unsqueeze(-1) * selectors).sum(dim=-2), selectors, steps


@ARCHITECTURES.register("dselect_k")
class DSelectK(MMoE):
    """MMoE whose per-task gates select ``k`` of the ``experts`` shared experts, differentiably.

    Hazimeh et al., NeurIPS 2021, "DSelect-k: Differentiable Selection in the Mixture of
    Experts with Applications to Multi-Task Learning" (official TensorFlow code:
    google-research/dselect_k_moe). Experts, pooling and heads are MMoE's; each task's gate
    is a :class:`DSelectGate` on the same features, whose weights have at most ``k``
    non-zeros once its smooth steps reach 0 or 1. Regularisation as in the official gate:
    ``entropy`` × the selectors' entropy (off by default, as there) pushes the steps to
    binary; when ``experts`` is not a power of 2, ``Σ_i 1 / Σ_e selector_ie`` keeps the
    selectors off the codes of no expert. Both are averaged over each task's routed units
    (examples, or real tokens) and summed over tasks, whatever the batch size (the official
    code sums them over the batch). The routing report adds, per task, the mean number of
    experts with a non-zero weight (``selected``) and the share of binary steps (``binary``).

    >>> arch = {"name": "dselect_k", "experts": 4, "k": 2, "gamma": 1.0}  # in the run config
    >>> from transformers import BertConfig, BertModel
    >>> from polytask.segments import Segment
    >>> bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
    ...                             num_attention_heads=2, intermediate_size=32))
    >>> ids = torch.ones(2, 4, dtype=torch.long)
    >>> model = DSelectK(bert, [TaskSpec(name="a", type="regression")], experts=4, k=2)
    >>> model(ids, torch.ones_like(ids), None, [Segment("a", 0, 2)])["a"].shape
    torch.Size([2, 1])
    >>> entry = model.report()["routing"]["tasks"]["a"]  # at the start: no step binary yet
    >>> len(entry["shares"]["gate"]), entry["selected"], entry["binary"]
    (4, 4.0, 0.0)
    """

    routing_name = "dselect_k"

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
        k: int = 2,
        gamma: float = 1.0,
        entropy: float = 0.0,
    ) -> None:
        check_count("experts", experts, 2)
        check_count("k", k)
        if k > experts:
            raise ValueError(f"k must be in 1..experts ({experts}), got {k}")
        for name, value in (("gamma", gamma), ("entropy", entropy)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if not entropy >= 0:
            raise ValueError(f"entropy must be >= 0, got {entropy}")
        # read by build_gate during MMoE's construction
        self.k, self.gamma, self.entropy = k, float(gamma), float(entropy)
        super().__init__(
            encoder,
            specs,
            pooling,
            head_hidden,
            head_dropout,
            experts,
            expert_hidden,
            expert_dropout,
        )
        self.power_of_2 = experts == 2 ** math.ceil(math.log2(experts))
        self._sums: dict[str, list[torch.Tensor]] = {}  # task: entropy, reach, units (training)
        self._terms: dict[str, torch.Tensor] = {}
        self._stats: dict[str, torch.Tensor] = {}  # task: selected, binary, units (report)

    def build_gate(self) -> nn.Module:
        return DSelectGate(self.width, self.n_experts, self.k, self.gamma)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """The batch's forward (in length chunks), then the regularisers over every routed
        unit of the batch, whatever the chunks."""
        self._sums = {}
        try:
            out = super().forward(input_ids, attention_mask, token_type_ids, segments, **kwargs)
            self._terms = {}
            if self.training and torch.is_grad_enabled() and self._sums:
                self._terms = self._regularizers()
        finally:
            self._sums = {}
        return out

    def task_forward(
        self,
        task: str,
        state: tuple[torch.Tensor, torch.Tensor],
        rows: slice,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        features, expert_out = state[0][rows], state[1][rows]
        weights, selectors, steps = self.gates[task](features)
        keep = weights.new_ones(weights.shape[:-1]) if mask is None else mask.to(weights.dtype)
        self.record(self.tally, task, weights.unsqueeze(-2), mask)
        self._observe(task, weights, steps, keep)
        if self.training and torch.is_grad_enabled():
            entropy = -(selectors * torch.log(selectors + EPSILON)).sum(dim=(-2, -1))
            reach = (1.0 / selectors.sum(dim=-1).clamp(min=EPSILON)).sum(dim=-1)
            part = [(entropy * keep).sum(), (reach * keep).sum(), keep.sum()]
            old = self._sums.get(task)
            self._sums[task] = (
                part if old is None else [a + b for a, b in zip(old, part, strict=True)]
            )
        return mix(weights, expert_out)

    @torch.no_grad()
    def _observe(
        self, task: str, weights: torch.Tensor, steps: torch.Tensor, keep: torch.Tensor
    ) -> None:
        """Report sums: experts with a non-zero weight, binary steps (real units only)."""
        selected = (weights > 0).sum(dim=-1).to(keep.dtype)
        binary = ((steps == 0) | (steps == 1)).to(keep.dtype).mean(dim=(-2, -1))
        part = torch.stack([(selected * keep).sum(), (binary * keep).sum(), keep.sum()])
        part = part.to(torch.float64)
        old = self._stats.get(task)
        self._stats[task] = part if old is None else old + part  # out of place: inference mode

    def _regularizers(self) -> dict[str, torch.Tensor]:
        entropy = sum(s[0] / s[2].clamp(min=1.0) for s in self._sums.values())
        reach = sum(s[1] / s[2].clamp(min=1.0) for s in self._sums.values())
        terms: dict[str, torch.Tensor] = {}
        if self.entropy > 0:
            terms["gate_entropy"] = self.entropy * torch.as_tensor(entropy)
        if not self.power_of_2:
            terms["gate_reachability"] = torch.as_tensor(reach)
        return terms

    def regularization(self) -> dict[str, torch.Tensor]:
        """``gate_entropy`` (times ``entropy``, when > 0) and, when ``experts`` is not a power
        of 2, ``gate_reachability`` of the latest training forward."""
        return dict(self._terms)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "k": self.k, "gamma": self.gamma, "entropy": self.entropy}

    def routing_header(self) -> dict[str, Any]:
        return {"architecture": self.routing_name, "k": self.k}

    def report(self) -> dict[str, Any]:
        out = super().report()
        for task, entry in out.get("routing", {}).get("tasks", {}).items():
            selected, binary, units = self._stats[task].tolist()
            entry["selected"] = round(selected / max(units, 1.0), 4)
            entry["binary"] = round(binary / max(units, 1.0), 4)
        return out

    def reset_report(self) -> None:
        super().reset_report()
        self._stats = {}
