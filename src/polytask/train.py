"""The training loop: build, prepare, sample, forward, per-task losses, step, log, checkpoint."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from polytask.config.run import RunConfig, dump_config
from polytask.data.batching import TaskStream, collate
from polytask.distributed import (
    check_engine,
    gather_objects,
    make_accelerator,
    needs_full_model,
    set_engine_batch,
)
from polytask.errors import ConfigError
from polytask.io import check_weights
from polytask.samplers import build_sampler
from polytask.training.end import BEST, evaluate_and_keep_best, finish
from polytask.training.params import count_parameters
from polytask.training.progress import TrainProgress
from polytask.training.runlog import MetricsLog, truncate_after
from polytask.training.setup import Setup, build, build_optimization
from polytask.training.state import (
    Resumable,
    TrainState,
    load_checkpoint,
    prepare_run_dir,
    save_checkpoint,
)
from polytask.training.step import (
    TrainingError,
    count_step,
    divergence,
    loss_units,
    task_losses,
    train_step,
)

__all__ = ["Setup", "build", "build_optimization", "task_losses", "train", "train_step"]


def train(
    config: RunConfig,
    output: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train a multi-task model; writes the run directory and returns ``final_metrics``.

    Runs unchanged under ``accelerate launch`` / ``torchrun`` (``docs/distributed.md``):
    every rank trains on its slice of each global batch and returns the same metrics; only
    the main process writes the run directory.
    """
    run_dir = Path(output)
    tc, sc = config.train, config.sampler
    accelerator = make_accelerator(tc.mixed_precision)  # fp16 on a CPU fails here
    rank, world = accelerator.process_index, accelerator.num_processes
    main = bool(accelerator.is_main_process)
    resumable = not needs_full_model(accelerator)  # FSDP/DeepSpeed: no checkpoint/ (docs)
    if resume and not resumable:
        raise ConfigError(
            f"--resume: not available under {accelerator.distributed_type.value} (polytask "
            "writes resumable checkpoints on DDP and single processes only)"
        )
    resume_from = prepare_run_dir(run_dir, resume, overwrite)
    with accelerator.local_main_process_first():  # one process per machine fills the cache
        setup = build(config)  # every input check happens here, before anything is written
    methods = f"aggregator '{config.aggregator.name}' / weighting '{config.weighting.name}'"
    monitor_on = check_engine(
        accelerator, setup.objective.needs_task_gradients, methods, tc.monitor_every is not None
    )
    if rank > 0:  # its own dropout masks; rank 0 keeps the stream of a 1-process run
        set_seed(config.seed, device_specific=True)
    specs = setup.specs
    names = [n for n, s in specs.items() if not s.held_out]  # the tasks the sampler picks
    optimizer, scheduler = build_optimization(setup)
    set_engine_batch(accelerator, tc.batch_size)
    model, optimizer, scheduler = accelerator.prepare(setup.model, optimizer, scheduler)
    setup.objective.to(accelerator.device)
    setup.objective.attach(accelerator.unwrap_model(model), monitor=monitor_on)
    train_splits = {n: setup.data[n].splits["train"] for n in names}
    sizes = [len(train_splits[n]) for n in names]
    live = Resumable(
        model=accelerator.unwrap_model(model),
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=build_sampler(sc.name, sizes, config.seed, sc.kwargs),
        streams={
            n: TaskStream(
                train_splits[n],
                tc.batch_size,
                tc.bucket_batches,
                config.seed + i,
                specs[n],
                rank=rank,
                world=world,
            )
            for i, n in enumerate(names)
        },
        objective=setup.objective,
    )
    k = config.tasks_per_step
    pad_id = int(setup.tokenizer.pad_token_id or 0)
    state = TrainState(examples=dict.fromkeys(names, 0), updates=dict.fromkeys(names, 0))
    if resume_from is not None:
        state = load_checkpoint(resume_from, live, rank)
        if state.best is not None:  # the end of the run reloads the best model: check it now
            for weights in setup.model.saved_weight_files(run_dir / BEST):
                check_weights(weights)
        if main:
            truncate_after(run_dir / "metrics.jsonl", state.step)
    elif main:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(dump_config(config), "utf-8")
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=main)
    params = count_parameters(live.model)
    every = tc.checkpoint_every or tc.eval_every
    progress = TrainProgress(tc.max_steps, state.step, enabled=show_progress and main)
    started = time.perf_counter() - state.seconds
    model.train()
    while state.step < tc.max_steps:
        picked = [names[i] for i in live.sampler.sample(state.step, tc.max_steps, k)]
        draws = {n: live.streams[n].next_draw() for n in picked}
        batch = collate([(specs[n], d.rows) for n, d in draws.items()], pad_id)
        batch = batch.to(accelerator.device)
        units = loss_units(batch, specs, draws) if world > 1 else None
        monitor = tc.monitor_every is not None and (state.step + 1) % tc.monitor_every == 0
        record = train_step(setup, model, batch, accelerator, optimizer, scheduler, monitor, units)
        count_step(state, record, draws)
        log.write(
            {
                "event": "train",
                "step": state.step,
                "tasks": picked,
                **record,
                "examples": dict(state.examples),
                "updates": dict(state.updates),
                "skipped_steps": state.skipped_steps,
            }
        )
        progress.advance({} if "skipped" in record else record["loss"])
        problem = divergence(state, tc.max_bad_steps, record)
        if problem is not None:
            progress.close()
            log.close()
            raise TrainingError(problem)
        if state.step % tc.eval_every == 0 or state.step == tc.max_steps:
            val = {n: setup.data[n].splits["validation"] for n in specs}
            if evaluate_and_keep_best(
                setup, live.model, val, state, log, run_dir, pad_id, accelerator, model
            ):
                break
        if state.step % every == 0 and state.step < tc.max_steps and resumable:
            state.seconds = time.perf_counter() - started
            rng_states = gather_objects(accelerator, [torch.get_rng_state()])
            if main:
                save_checkpoint(run_dir, live, state, rng_states)
    progress.close()
    log.close()
    state.seconds = time.perf_counter() - started
    accelerator.wait_for_everyone()  # the best model folder is complete before all read it
    return finish(setup, run_dir, state, params, accelerator, pad_id)
