"""FiLM: per-task scale and shift of the encoder layers' outputs (Perez et al. 2018)."""

from __future__ import annotations

from functools import partial
from typing import Any, cast

import torch
from torch import nn
from transformers import PreTrainedModel

from polytask.models.base import ARCHITECTURES
from polytask.models.conditioning import TaskConditioned, encoder_layers, hidden_of, replace_hidden
from polytask.tasks import TaskSpec


class Modulation(nn.Module):
    """One layer's feature-wise affine map ``γ ⊙ h + β``, initialised to the identity."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))
        self.beta = nn.Parameter(torch.zeros(width))


@ARCHITECTURES.register("film")
class FiLM(TaskConditioned):
    """Hard sharing with Feature-wise Linear Modulation (Perez et al. 2018, "FiLM: Visual
    Reasoning with a General Conditioning Layer"): the output hidden states ``h`` of encoder
    layer ``l`` become ``γ_{t,l} ⊙ h + β_{t,l}`` on task ``t``'s rows, for every layer or the
    top ``layers`` ones. ``γ = 1, β = 0`` at start: training starts from the pretrained encoder.

    Shared: the encoder. Task ``t``: its head and ``2 · hidden_size`` values per conditioned
    layer.
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
        layers: int | None = None,
    ) -> None:
        super().__init__(encoder, specs, pooling, head_hidden, head_dropout)
        stack = encoder_layers(encoder)
        n = len(stack)
        if layers is not None and not 1 <= layers <= n:
            raise ValueError(
                f"layers must be between 1 and {n} (the encoder's layers) or null for all, "
                f"got {layers}"
            )
        self.layers = layers
        conditioned = [str(i) for i in range(n - (layers or n), n)]
        width = int(encoder.config.hidden_size)
        # film.<task>.<layer index>.{gamma,beta}: 1-D, so no weight decay (like LayerNorm)
        self.film = nn.ModuleDict(
            {s.name: nn.ModuleDict({i: Modulation(width) for i in conditioned}) for s in specs}
        )
        for i in conditioned:
            stack[int(i)].register_forward_hook(partial(self._modulate, i))

    def _modulate(self, layer: str, module: nn.Module, args: Any, out: Any) -> Any:
        if not self.conditioning:
            return None
        h = hidden_of(out)
        maps = [self.modulation(task, layer) for task in self.task_index]
        gamma = torch.stack([*(m.gamma for m in maps), torch.ones_like(maps[0].gamma)])
        beta = torch.stack([*(m.beta for m in maps), torch.zeros_like(maps[0].beta)])
        scale = self.per_row(gamma.to(h.dtype))[:, None, :]  # [B, 1, H]
        shift = self.per_row(beta.to(h.dtype))[:, None, :]
        return replace_hidden(out, torch.addcmul(shift, h, scale))

    def modulation(self, task: str, layer: str) -> Modulation:
        """Task ``task``'s ``γ, β`` of encoder layer ``layer`` (its index, as a string)."""
        return cast(Modulation, cast(nn.ModuleDict, self.film[task])[layer])

    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        return [
            *super().task_parameters(task),
            *((f"film.{task}.{n}", p) for n, p in self.film[task].named_parameters()),
        ]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "layers": self.layers}
