"""Periodic re-solving (``aggregator.resolve_every: N``): the aggregator's coefficients are
solved from the Gramian on one full step in N and reused on the N - 1 steps after it.

Liu et al. 2023, "FAMO: Fast Adaptive Multitask Optimization" (NeurIPS), run Nash-MTL this
way (its official code's ``update_weights_every``) to cut the cost of per-task gradients. A
reuse step skips the per-task gradient engine: it writes the update a solve step would write
if the Gramian had not changed (``Σ_t c_t g_t`` on the shared parameters with the cached
``c``, ``∇(w_t L_t)`` on task ``t``'s head) from one backward
(:meth:`polytask.autograd.engine.PerTaskGradients.backward_fixed`). The loss weights ``w``
are still computed every step. The cache lives in buffers, so a resumed run reuses what the
interrupted one would have.

>>> cache, due = Resolve(n_tasks=2, every=3), []
>>> for _ in range(7):  # the full steps of a run: solve, reuse, reuse, solve, ...
...     due.append(cache.due)
...     cache.step(torch.tensor([0.5, 1.5]) if cache.due else None)
>>> due
[True, False, False, True, False, False, True]
>>> cache.coefficients
tensor([0.5000, 1.5000], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from polytask.aggregation import Aggregator
from polytask.autograd.engine import PerTaskGradients, weighted_backward
from polytask.objective.terms import named
from polytask.weighting import LossWeighting


class Resolve(nn.Module):
    """The cached coefficients ``c`` and the full steps since they were solved.

    ``every``: solve on one full step in ``every`` (1: every step, nothing cached). A solve
    whose ``c`` is not finite (an overflowing Gramian under fp16) is not cached: the next
    full step solves again.
    """

    coefficients: torch.Tensor
    age: torch.Tensor

    def __init__(self, n_tasks: int, every: int) -> None:
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"resolve_every must be an integer >= 1, got {every!r}")
        self.every = every
        self.register_buffer("coefficients", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("age", torch.zeros((), dtype=torch.int64))  # 0: solve next

    def extra_repr(self) -> str:
        return f"every={self.every}"

    @property
    def due(self) -> bool:
        """Whether the next full step solves the Gramian (else it reuses :attr:`coefficients`)."""
        return int(self.age) == 0

    def step(self, solved: torch.Tensor | None = None) -> None:
        """After a full step: ``solved``, the ``c`` a solve step computed, or None (reused)."""
        if solved is None:
            self.age.fill_((int(self.age) + 1) % self.every)
        elif bool(torch.isfinite(solved).all()):
            self.coefficients.copy_(solved.detach().to(self.coefficients))
            self.age.fill_(1 % self.every)


def resolver(
    n_tasks: int, every: int, aggregator: Aggregator, weighting: LossWeighting
) -> Resolve | None:
    """The cache of an objective with ``resolve_every: every`` (None for 1), after checking the
    methods apply it (the config refuses the others at load: :mod:`polytask.config.rule`)."""
    if every == 1:
        return None
    needs = aggregator.needs_two_batches or aggregator.needs_matrix
    if aggregator.gramian_free or needs or weighting.needs_grad_norms:
        raise ValueError(
            f"resolve_every={every} needs an aggregator that solves a Gramian of one batch and "
            f"a weighting without gradient norms, not {type(aggregator).__name__}/"
            f"{type(weighting).__name__}"
        )
    return Resolve(n_tasks, every)


def grad_scale(accelerator: Accelerator) -> float:
    """The fp16 loss scale the per-task engine writes ``.grad`` at (1 without a scaler)."""
    scaler = getattr(accelerator, "scaler", None)
    return float(scaler.get_scale()) if scaler is not None else 1.0


def reuse_backward(
    accelerator: Accelerator,
    engine: PerTaskGradients,
    scaled: dict[str, torch.Tensor],
    learned: torch.Tensor,
    cache: Resolve,
) -> dict[str, Any]:
    """A reuse step: ``.grad`` from the cached ``c`` over the weighted losses ``scaled``
    (``w_t L_t``), the learned weighting's term as on a solve step; returns what to log."""
    c = cache.coefficients.detach().cpu()
    engine.backward_fixed(scaled, c, grad_scale=grad_scale(accelerator))
    if learned.requires_grad:
        weighted_backward(accelerator, {"learned": learned}, {"learned": 1.0})
    cache.step()
    return {"combine": named(list(scaled), c), "grad_method": "reused"}
