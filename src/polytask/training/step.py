"""One optimisation step of the training loop, and what a step logs.

Forward (under Accelerate's autocast), per-task losses, their global values across ranks
(:func:`polytask.distributed.sync_losses`), then either the update — weighting, aggregation,
clipping, optimiser and scheduler — or, when a loss is not finite, a skipped step: no
backward, no update, the same decision on every rank.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator

from polytask.data.batching import Batch, Draw, TaskStream
from polytask.distributed import sync_losses
from polytask.errors import PolytaskError
from polytask.models import MultiTaskModel
from polytask.tasks import TaskSpec, task_type

if TYPE_CHECKING:
    from polytask.training.setup import Setup
    from polytask.training.state import TrainState

SKIPPED = "non-finite loss"


class TrainingError(PolytaskError):
    """Training cannot go on (e.g. the loss stayed non-finite): one line, exit code 2."""


def task_losses(
    model: MultiTaskModel, batch: Batch, specs: dict[str, TaskSpec]
) -> dict[str, torch.Tensor]:
    """One shared forward of a multi-task batch, then each present task's own loss."""
    core = getattr(model, "module", model)  # under DDP, the wrapped model
    extra = {"labels": batch.labels} if core.takes_labels else {}
    outputs = model(
        batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.segments, **extra
    )
    return {
        s.task: task_type(specs[s.task].type).loss(
            specs[s.task], outputs[s.task], batch.labels[s.task]
        )
        for s in batch.segments
    }


def draw_step(
    picked: list[str], streams: dict[str, TaskStream], shares: dict[str, str]
) -> dict[str, Draw]:
    """The step's draws of the ``picked`` tasks. A task reading another task's rows
    (``tasks.N.inputs``, ``shares``) comes with that task, on its draw: picking either one
    trains both on the same rows (encoded once, see :func:`polytask.data.batching.collate`)."""
    readers: dict[str, list[str]] = {}
    for task, source in shares.items():
        readers.setdefault(source, []).append(task)
    draws: dict[str, Draw] = {}
    for name in picked:
        source = shares.get(name, name)
        if source in draws:
            continue
        draw = draws[source] = streams[source].next_draw()
        for task in readers.get(source, []):
            draws[task] = streams[task].draw(draw.indices, draw.epoch)
    return draws


def loss_units(batch: Batch, specs: dict[str, TaskSpec], draws: dict[str, Draw]) -> dict[str, int]:
    """The labelled units behind each task's loss on this rank (0 for stand-in rows)."""
    return {
        s.task: task_type(specs[s.task].type).loss_units(specs[s.task], batch.labels[s.task])
        if draws[s.task].counted
        else 0
        for s in batch.segments
    }


def train_step(
    setup: Setup,
    model: MultiTaskModel,
    batch: Batch,
    accelerator: Accelerator,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    monitor: bool = False,
    units: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One optimisation step on a multi-task batch; returns the step's log record.

    ``monitor``: also compute the per-task gradients (and log their cosines) when the
    method does not need them; the update is the same. ``units``: this rank's labelled
    units per task (data parallel, see :func:`loss_units`). A non-finite loss on any rank
    skips the step on every rank: the record then holds ``"skipped"``.
    """
    objective = setup.objective
    # with per-task gradients the engine writes .grad itself: run the forward on the
    # unwrapped module, never through DDP's gradient hooks
    per_task = objective.uses_engine(batch.segments, monitor)
    fwd = accelerator.unwrap_model(model) if per_task else model
    with accelerator.autocast(), objective.capture(batch.segments):
        losses = task_losses(fwd, batch, setup.specs)
        regularization = accelerator.unwrap_model(model).regularization()
    synced = sync_losses(accelerator, losses, units, regularization)
    if not synced.finite:
        objective.discard()
        optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()  # the schedule follows the step count, skipped steps included
        return {"skipped": SKIPPED, "loss": _rounded(synced.values)}
    extra = objective.backward(accelerator, synced.backprop, regularization, synced.values)
    if setup.max_grad_norm is not None:
        accelerator.clip_grad_norm_(model.parameters(), setup.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if objective.weighting.observes_same_batch:
        with torch.no_grad(), accelerator.autocast():
            again = task_losses(model, batch, setup.specs)
        objective.observe(sync_losses(accelerator, again, units).values)
    else:
        objective.observe(synced.values)
    return {"loss": _rounded(synced.values), "lr": scheduler.get_last_lr()[0], **extra}


def count_step(
    state: TrainState, record: dict[str, Any], draws: dict[str, Draw], started: float
) -> None:
    """Advance the run's counters: examples and updates per task, or a skipped step; the
    step's wall time since ``started`` (``time.perf_counter()``) is added to step_seconds."""
    state.step += 1
    state.step_seconds += time.perf_counter() - started
    if "skipped" in record:
        state.skipped_steps += 1
        state.bad_streak += 1
        return
    state.bad_streak = 0
    for task, draw in draws.items():
        state.examples[task] += draw.global_rows
        state.updates[task] += 1


def train_record(state: TrainState, picked: list[str], record: dict[str, Any]) -> dict[str, Any]:
    """The ``metrics.jsonl`` line of a counted step: its tasks, losses and the run's totals."""
    return {
        "event": "train",
        "step": state.step,
        "tasks": picked,
        **record,
        "examples": dict(state.examples),
        "updates": dict(state.updates),
        "skipped_steps": state.skipped_steps,
    }


def divergence(state: TrainState, limit: int | None, record: dict[str, Any]) -> str | None:
    """Why training must stop after ``limit`` consecutive skipped steps, or None."""
    if limit is None or state.bad_streak < limit:
        return None
    bad = ", ".join(f"{t}={v}" for t, v in record["loss"].items())
    return (
        f"training stopped at step {state.step}: {state.bad_streak} consecutive steps with a "
        f"non-finite loss ({bad}); {state.skipped_steps} skipped in all. Lower train.lr, "
        f"check the data, or raise train.max_bad_steps (now {limit})"
    )


def _rounded(values: dict[str, torch.Tensor]) -> dict[str, float | str]:
    """Loss values for the JSON log: a non-finite one as a string ("nan", "inf", "-inf")."""
    out: dict[str, float | str] = {}
    for name, value in values.items():
        v = float(value)
        out[name] = round(v, 6) if math.isfinite(v) else str(v)
    return out
