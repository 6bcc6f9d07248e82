"""The loss-space terms of the objective: a step that trains only some of the tasks (one
backward of ``Σ_t c_t w_t L_t``), and what a learned weighting's parameters train on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator

from polytask.autograd.engine import weighted_backward
from polytask.weighting import LossWeighting


def subset_backward(
    accelerator: Accelerator,
    tasks: list[str],
    task_weights: dict[str, float],
    weighting: LossWeighting,
    fixed_scale: Callable[[], torch.Tensor],
    losses: dict[str, torch.Tensor],
    extra: dict[str, torch.Tensor],
    values: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """A step that trains some of the tasks: the weighting's weights of those tasks
    (:meth:`LossWeighting.subset`), the static task weights and the aggregator's fixed
    coefficients (``fixed_scale()``), in one backward; a learned weighting trains on the present
    tasks' terms. The config admits only methods that apply here
    (:func:`polytask.config.rule.refusal`)."""
    index = [i for i, t in enumerate(tasks) if t in losses]
    present = [tasks[i] for i in index]
    device = losses[present[0]].device
    seen = torch.stack([values[t].detach().float() for t in present]).to(device)
    w = weighting.subset(seen, index).to(device)
    static = torch.tensor([task_weights[t] for t in present], device=device)
    coef = (w * static).detach() * fixed_scale()[index].to(w)
    terms = {t: losses[t] * coef[i] for i, t in enumerate(present)}
    terms["_learned"] = learned_term(w * static, seen, weighting.regularizer(index).to(device))
    terms.update({f"_extra_{k}": v for k, v in extra.items()})
    weighted_backward(accelerator, terms, dict.fromkeys(terms, 1.0))
    return {"weights": named(present, w * static)}


def learned_term(
    weights: torch.Tensor, losses: torch.Tensor, regularizer: torch.Tensor
) -> torch.Tensor:
    """What a learned weighting's parameters train on: ``Σ_t w_t L_t + regularizer`` with the
    losses as constants, whatever the aggregator (its coefficients scale the model's
    gradients, not the weighting's objective). A backward that never enters the model."""
    return (weights * losses.detach().to(weights)).sum() + regularizer


def named(tasks: list[str], values: torch.Tensor) -> dict[str, float]:
    """``{task: value}`` rounded to 6 digits, for the log."""
    return {t: round(float(v), 6) for t, v in zip(tasks, values.detach().cpu(), strict=True)}
