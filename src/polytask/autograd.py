"""The only module that runs backward passes or writes ``.grad``.

Loss weightings and gradient aggregators (pure maths) never call autograd themselves; the
training loop hands the per-task losses here.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator


def weighted_backward(
    accelerator: Accelerator, losses: dict[str, torch.Tensor], weights: dict[str, float]
) -> torch.Tensor:
    """Backpropagate ``Σ_t w_t · L_t`` once; returns the weighted total (detached)."""
    total = torch.stack([losses[t] * weights[t] for t in losses]).sum()
    accelerator.backward(total)
    return total.detach()
