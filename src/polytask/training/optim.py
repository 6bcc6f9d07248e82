"""The optimiser and learning-rate schedule of a run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from polytask.models import MultiTaskModel


class WarmupLinearDecay:
    """LR factor: linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``.

    (transformers has the same schedule, but importing it pulls in its Trainer and PEFT: 3 s.)
    """

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))


def build_optimizer(
    model: MultiTaskModel,
    lr: float,
    head_lr: float | None,
    weight_decay: float,
    extra: Iterable[tuple[Iterable[torch.nn.Parameter], float | None]] = (),
) -> torch.optim.Optimizer:
    """AdamW; the encoder parameters (``model.encoder_parameters()``) train at ``lr``, heads
    (and ``extra``: ``(parameters, lr)`` pairs such as learned loss weights, ``lr`` None for
    head_lr) may get their own learning rate; no weight decay on biases, norms or ``extra``."""
    encoder = {id(p) for _, p in model.encoder_parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "norm" in name.lower()
        groups.setdefault((id(p) in encoder, no_decay), []).append(p)
    param_groups: list[dict[str, Any]] = [
        {
            "params": ps,
            "lr": lr if is_encoder else (head_lr or lr),
            "weight_decay": 0.0 if nd else weight_decay,
        }
        for (is_encoder, nd), ps in sorted(groups.items())
    ]
    for params, group_lr in extra:  # (parameters, own lr or None: head_lr, else lr)
        trainable = [p for p in params if p.requires_grad]
        if trainable:
            param_groups.append(
                {"params": trainable, "lr": group_lr or head_lr or lr, "weight_decay": 0.0}
            )
    # the fused kernel (CPU and GPU) is several times faster than the per-tensor loop that
    # AdamW otherwise uses on CPU, where the optimiser step was a quarter of a training step
    return torch.optim.AdamW(param_groups, lr=lr, fused=True)
