"""Task heads and pooling."""

from __future__ import annotations

import torch
from torch import nn


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over real (non-padding) tokens."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """``mean`` (masked mean) or ``cls`` (the first token)."""
    if how == "cls":
        return hidden[:, 0]
    return mean_pool(hidden, mask)


class Head(nn.Module):
    """dropout → linear → GELU → linear: the default per-task head."""

    def __init__(
        self, hidden: int, outputs: int, inner: int | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__()
        inner = inner or max(1, hidden // 2)
        self.net = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden, inner), nn.GELU(), nn.Linear(inner, outputs)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(features)
        return out
