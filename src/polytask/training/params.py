"""Parameter accounting: total, shared, per task, trainable."""

from __future__ import annotations

from typing import Any

from polytask.models import MultiTaskModel


def count_parameters(model: MultiTaskModel) -> dict[str, Any]:
    """Counts of unique parameters (tied weights counted once)."""
    seen: set[int] = set()

    def count(named: list[tuple[str, Any]], trainable_only: bool = False) -> int:
        total = 0
        for _, p in named:
            if id(p) in seen or (trainable_only and not p.requires_grad):
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    everything = list(model.named_parameters())
    total = count(everything)
    seen.clear()
    trainable = count(everything, trainable_only=True)
    seen.clear()
    shared = count(model.shared_parameters())
    per_task = {}
    for task in model.specs:
        per_task[task] = count(model.task_parameters(task))
    return {"total": total, "shared": shared, "per_task": per_task, "trainable": trainable}
