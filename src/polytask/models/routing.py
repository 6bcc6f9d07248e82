"""The per-task routing report shared by the mixture-of-experts architectures.

A :class:`RoutingTally` adds up, per task and per routing block (an MMoE gate, a switch
layer), the weight each expert received and how many units (examples or tokens) were
routed; :meth:`RoutingTally.report` turns the sums into shares that sum to 1 per task and
block. Tallies stay on the model's device (no synchronisation per forward).
"""

from __future__ import annotations

from typing import Any

import torch


class RoutingTally:
    """Per-task sums of expert weights since the last :meth:`reset`.

    >>> tally = RoutingTally(experts=2, blocks=["gate"], measure="mean gate weight")
    >>> tally.add("a", torch.tensor([[3.0, 1.0]]), count=4)
    >>> tally.report()["tasks"]["a"]
    {'count': 4, 'shares': {'gate': [0.75, 0.25]}}
    """

    def __init__(self, experts: int, blocks: list[str], measure: str) -> None:
        self.experts, self.blocks, self.measure = experts, blocks, measure
        self.sums: dict[str, torch.Tensor] = {}  # task -> [blocks, experts]
        self.units: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.sums, self.units = {}, {}

    def add(self, task: str, sums: torch.Tensor, count: torch.Tensor | int) -> None:
        """``sums``: ``[blocks, experts]`` weights of ``count`` routed units of ``task``."""
        sums = sums.detach().to(torch.float64)
        n = torch.as_tensor(count, device=sums.device).detach().to(torch.float64)
        # out of place: the tallies may be created under inference mode (evaluation)
        old, old_n = self.sums.get(task), self.units.get(task)
        self.sums[task] = sums if old is None else old + sums
        self.units[task] = n if old_n is None else old_n + n

    def report(self) -> dict[str, Any]:
        """``{"experts", "measure", "tasks": {task: {"count": n, "shares": {block: [share
        per expert]}}}}``; each block's shares sum to 1 (``tasks`` empty when nothing routed)."""
        tasks: dict[str, Any] = {}
        for task, sums in self.sums.items():
            total = sums.sum(dim=1, keepdim=True)
            shares = (sums / total.clamp(min=1e-300)).cpu().tolist()
            tasks[task] = {
                "count": round(float(self.units[task])),
                "shares": {
                    block: [round(float(v), 6) for v in row]
                    for block, row in zip(self.blocks, shares, strict=True)
                },
            }
        return {
            "experts": self.experts,
            "measure": self.measure,
            "tasks": tasks,
        }
