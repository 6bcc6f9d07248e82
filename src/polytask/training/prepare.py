"""Everything before the loop's first step but the build: the accelerator, the built run
prepared for it, the objects a checkpoint carries (:class:`~polytask.training.state.Resumable`),
and the run directory (started fresh, or resumed with the counters of its last checkpoint).

The order of these calls is part of a run's trajectory (seeds, random draws), so it is kept
exactly: a resumed or a distributed run must take the same steps as a single fresh one.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed

from polytask.checkpoint import META_FILE, read_meta
from polytask.config.run import RunConfig, dump_config
from polytask.data.batching import TaskStream
from polytask.distributed import (
    check_sharded_weights,
    make_accelerator,
    set_deepspeed_batch,
    weights_sharded,
)
from polytask.errors import ConfigError
from polytask.io import check_weights
from polytask.samplers import build_sampler
from polytask.training.end import BEST
from polytask.training.runlog import truncate_after
from polytask.training.setup import Setup, build_optimization
from polytask.training.state import FINAL, Resumable, TrainState, load_checkpoint
from polytask.training.tracking import TRACKING, Tracking, start_tracking


@dataclass
class Prepared:
    """What the loop runs on besides its setup: prepared and, on resume, restored."""

    model: Any  # the prepared model (DDP-wrapped when distributed); resumable.model: unwrapped
    resumable: Resumable
    state: TrainState
    names: list[str]  # the tasks the sampler picks (trained, reading their own rows)
    pad_id: int
    writes_checkpoints: bool  # False under FSDP/DeepSpeed: no resumable checkpoint/ (docs)
    tracking: Tracking  # train.report_to's trackers, started (resumed) in the run folder


def open_accelerator(
    mixed_precision: str, resume: bool, report_to: Sequence[str] = (), run_dir: Path = Path()
) -> Accelerator:
    """The run's accelerator (fp16 on a CPU fails here), with the ``report_to`` trackers
    writing under ``run_dir/tracking``; refuses ``--resume`` where no resumable checkpoint
    is written (FSDP/DeepSpeed)."""
    project_dir = str(run_dir / TRACKING) if report_to else None
    accelerator = make_accelerator(mixed_precision, list(report_to), project_dir)
    if resume and weights_sharded(accelerator):
        raise ConfigError(
            f"--resume: not available under {accelerator.distributed_type.value} (polytask "
            "writes resumable checkpoints on DDP and single processes only)"
        )
    return accelerator


def prepare_training(
    config: RunConfig,
    setup: Setup,
    accelerator: Accelerator,
    run_dir: Path,
    resume_from: Path | None,
    extend: bool = False,
) -> Prepared:
    """Prepare the built run for ``accelerator`` and start ``run_dir`` (or resume it;
    ``extend``: a finished run trained further, to a higher ``max_steps``)."""
    tc = config.train
    methods = f"aggregator '{config.aggregator.name}' / weighting '{config.weighting.name}'"
    monitor_on = check_sharded_weights(
        accelerator, setup.objective.needs_task_gradients, methods, tc.monitor_every is not None
    )
    if accelerator.process_index > 0:  # its own dropout masks; rank 0 keeps a 1-process run's
        set_seed(config.seed, device_specific=True)
    names = [n for n, s in setup.specs.items() if not s.held_out]
    units = [n for n in names if n not in setup.shares]  # the others ride on their rows
    optimizer, scheduler = build_optimization(setup)
    set_deepspeed_batch(accelerator, tc.batch_size)
    model, optimizer, scheduler = accelerator.prepare(setup.model, optimizer, scheduler)
    setup.objective.to(accelerator.device)
    setup.objective.attach(accelerator.unwrap_model(model), monitor=monitor_on)
    sc = config.sampler
    resumable = Resumable(
        model=accelerator.unwrap_model(model),
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=build_sampler(sc.name, _sizes(setup, units), config.seed, sc.kwargs),
        streams=task_streams(config, setup, names, accelerator),
        objective=setup.objective,
    )
    state = start_run_dir(run_dir, config, setup, resumable, resume_from, accelerator, extend)
    pad_id = int(setup.tokenizer.pad_token_id or 0)
    writes_checkpoints = not weights_sharded(accelerator)  # FSDP/DeepSpeed: none (docs)
    resolved, tasks = config.model_dump(mode="json"), setup.objective.tasks
    tracking = start_tracking(accelerator, resolved, run_dir, state.step, tasks)
    return Prepared(model, resumable, state, units, pad_id, writes_checkpoints, tracking)


def _sizes(setup: Setup, names: list[str]) -> list[int]:
    return [len(setup.data[n].splits["train"]) for n in names]


def task_streams(
    config: RunConfig, setup: Setup, names: list[str], accelerator: Accelerator
) -> dict[str, TaskStream]:
    """One seeded stream of training micro-batches per task: every rank draws its slice."""
    tc = config.train
    return {
        n: TaskStream(
            setup.data[n].splits["train"],
            tc.batch_size,
            tc.bucket_batches,
            config.seed + i,
            setup.specs[n],
            rank=accelerator.process_index,
            world=accelerator.num_processes,
        )
        for i, n in enumerate(names)
    }


def start_run_dir(
    run_dir: Path,
    config: RunConfig,
    setup: Setup,
    resumable: Resumable,
    resume_from: Path | None,
    accelerator: Accelerator,
    extend: bool = False,
) -> TrainState:
    """Restore ``resume_from`` (its log cut back to its step), or start ``run_dir`` afresh
    with the resolved ``config.yaml``; returns the counters the loop starts from.

    ``extend`` (a finished run, ``max_steps`` raised): the run goes on from its last
    checkpoint, which may precede the end (steps after it are trained again, under the new
    schedule); it is unfinished again (``final_metrics.json`` removed) and its
    ``config.yaml`` is the new config, so a later ``--resume`` continues to the new end."""
    names = list(resumable.streams)
    main = bool(accelerator.is_main_process)
    state = TrainState(examples=dict.fromkeys(names, 0), updates=dict.fromkeys(names, 0))
    if resume_from is not None:
        state = load_checkpoint(resume_from, resumable, accelerator.process_index)
        if extend:
            adopt_saved_best(run_dir / BEST, state)
        if state.best is not None:  # the end of the run reloads the best model: check it now
            for weights in setup.model.saved_weight_files(run_dir / BEST):
                check_weights(weights)
        if main:
            truncate_after(run_dir / "metrics.jsonl", state.step)
        if main and extend:
            (run_dir / "config.yaml").write_text(dump_config(config), "utf-8")
            (run_dir / FINAL).unlink(missing_ok=True)
    elif main:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(dump_config(config), "utf-8")
    return state


def adopt_saved_best(folder: Path, state: TrainState) -> None:
    """Make the best model ``folder`` holds the best of ``state`` when it was saved after
    ``state``'s checkpoint: a finished run trained further replays those steps under a new
    schedule, and may never score as well again, so the weights in ``folder`` stay the best
    and the final report evaluates them (their validation metrics are measured again)."""
    if not (folder / META_FILE).is_file():
        return
    meta = read_meta(folder)
    step, score = meta.get("step"), meta.get("primary_metric")
    if isinstance(step, int) and isinstance(score, int | float) and step > state.best_step:
        state.best, state.best_step, state.best_validation = float(score), step, None
