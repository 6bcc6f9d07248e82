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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator

from polytask.autograd.two_batch import SecondBatch
from polytask.data.batching import Batch, Draw, TaskStream, collate
from polytask.distributed import sync_losses
from polytask.errors import PolytaskError
from polytask.models import MultiTaskModel
from polytask.tasks import TaskSpec, task_type

if TYPE_CHECKING:
    from polytask.training.setup import Setup
    from polytask.training.state import TrainState

SKIPPED = "non-finite loss"


@dataclass
class Second:
    """A step's second batch (an aggregator that ``needs_two_batches``): drawn from the same
    streams right after the first, collated and on the device; ``units`` as
    :func:`loss_units` (data parallel)."""

    batch: Batch
    draws: dict[str, Draw]
    units: dict[str, int] | None = None


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


def draw_batches(
    setup: Setup,
    picked: list[str],
    streams: dict[str, TaskStream],
    pad_id: int,
    accelerator: Accelerator,
) -> tuple[dict[str, Draw], Batch, dict[str, int] | None, Second | None]:
    """The step's draws of the ``picked`` tasks, their batch on the device, its loss units
    (data parallel, :func:`loss_units`) and, when the aggregator needs two independent
    batches (MoDo, SDMGrad), a second batch: each task's stream supplies its next batch, so
    the step reads twice the rows (None for every other method)."""
    draws, batch, units = _draw(setup, picked, streams, pad_id, accelerator)
    if not setup.objective.aggregator.needs_two_batches:
        return draws, batch, units, None
    more, second, more_units = _draw(setup, picked, streams, pad_id, accelerator)
    return draws, batch, units, Second(second, more, more_units)


def _draw(
    setup: Setup,
    picked: list[str],
    streams: dict[str, TaskStream],
    pad_id: int,
    accelerator: Accelerator,
) -> tuple[dict[str, Draw], Batch, dict[str, int] | None]:
    draws = draw_step(picked, streams, setup.shares)
    parts = [(setup.specs[n], d.rows) for n, d in draws.items()]
    batch = collate(parts, pad_id, setup.shares).to(accelerator.device)
    units = loss_units(batch, setup.specs, draws) if accelerator.num_processes > 1 else None
    return draws, batch, units


def _second_forward(
    setup: Setup, model: MultiTaskModel, second: Second, accelerator: Accelerator
) -> SecondBatch:
    """The second batch's forward, run by the engine inside its capture."""

    def forward() -> dict[str, torch.Tensor] | None:
        with accelerator.autocast():
            losses = task_losses(model, second.batch, setup.specs)
        synced = sync_losses(accelerator, losses, second.units)
        return synced.backprop if synced.finite else None

    return SecondBatch(second.batch.segments, forward)


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
    second: Second | None = None,
) -> dict[str, Any]:
    """One optimisation step on a multi-task batch; returns the step's log record.

    ``monitor``: also compute the per-task gradients (and log their cosines) when the
    method does not need them; the update is the same. ``units``: this rank's labelled
    units per task (data parallel, see :func:`loss_units`). A non-finite loss on any rank
    skips the step on every rank: the record then holds ``"skipped"``. ``second``: the
    second batch of a two-batch aggregator (:func:`draw_second`), its loss checked alike.
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
        return _skip(objective, optimizer, scheduler, synced.values)
    if second is not None:
        objective.pair(_second_forward(setup, fwd, second, accelerator))
    extra = objective.backward(accelerator, synced.backprop, regularization, synced.values)
    if "skipped" in extra:  # the second batch's loss was not finite
        return _skip(objective, optimizer, scheduler, synced.values)
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


def _skip(
    objective: Any, optimizer: torch.optim.Optimizer, scheduler: Any, values: dict[str, Any]
) -> dict[str, Any]:
    """A skipped step: no update, the same decision on every rank."""
    objective.discard()
    optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()"
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()  # the schedule follows the step count, skipped steps included
    return {"skipped": SKIPPED, "loss": _rounded(values)}


def count_step(
    state: TrainState,
    record: dict[str, Any],
    draws: dict[str, Draw],
    started: float,
    second: Second | None = None,
) -> None:
    """Advance the run's counters: examples and updates per task, or a skipped step; the
    step's wall time since ``started`` (``time.perf_counter()``) is added to step_seconds.
    A ``second`` batch's rows count as examples seen too (one update)."""
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
    for task, draw in (second.draws if second is not None else {}).items():
        state.examples[task] += draw.global_rows


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
