"""The training loop: build, prepare, sample, forward, per-task losses, step, log, checkpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from polytask.config.run import RunConfig
from polytask.distributed import gather_objects
from polytask.training.end import evaluate_and_keep_best, finish
from polytask.training.params import count_parameters
from polytask.training.prepare import open_accelerator, prepare_training
from polytask.training.progress import TrainProgress
from polytask.training.runlog import MetricsLog
from polytask.training.setup import Setup, build, build_optimization
from polytask.training.state import prepare_run_dir, run_complete, save_checkpoint, trained_to
from polytask.training.step import (
    TrainingError,
    count_step,
    divergence,
    draw_batches,
    task_losses,
    train_record,
    train_step,
)

__all__ = ["Setup", "build", "build_optimization", "task_losses", "train", "train_step"]


# size: the loop reads top to bottom in one function (STYLE 6: up to ~150 lines)
def train(
    config: RunConfig,
    output: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    checkpoints: bool = True,
) -> dict[str, Any]:
    """Train a multi-task model; writes the run directory and returns ``final_metrics``.

    ``resume`` of a run finished to ``max_steps``: its ``final_metrics``, nothing written; a
    raised ``max_steps`` goes on (:func:`polytask.training.prepare.start_run_dir`).

    Runs unchanged under ``accelerate launch`` / ``torchrun`` (``docs/distributed.md``):
    every rank trains on its slice of each global batch and returns the same metrics; only
    the main process writes the run directory.
    """
    run_dir, tc = Path(output), config.train
    accelerator = open_accelerator(tc.mixed_precision, resume, tc.report_to, run_dir)
    if resume and (done := run_complete(run_dir, tc.max_steps)) is not None:
        return done  # finished to this max_steps already: nothing is trained or written
    resume_from = prepare_run_dir(run_dir, resume, overwrite)
    extend = resume_from is not None and trained_to(run_dir) is not None  # max_steps raised
    with accelerator.local_main_process_first():  # one process per machine fills the cache
        setup = build(config)  # every input check happens here, before anything is written
    run = prepare_training(config, setup, accelerator, run_dir, resume_from, extend)
    model, resumable, state, specs = run.model, run.resumable, run.state, setup.specs
    optimizer, scheduler, pad_id = resumable.optimizer, resumable.scheduler, run.pad_id
    main = bool(accelerator.is_main_process)
    k, every = config.picks_per_step, tc.checkpoint_every or tc.eval_every
    checkpoints = checkpoints and run.writes_checkpoints  # False: no resumable checkpoint/
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=main, tracker=run.tracking)
    progress = TrainProgress(tc.max_steps, state.step, enabled=show_progress and main)
    started = time.perf_counter() - state.seconds
    model.train()
    while state.step < tc.max_steps:
        step_started = time.perf_counter()
        picked = [run.names[i] for i in resumable.sampler.sample(state.step, tc.max_steps, k)]
        draws, batch, units, second = draw_batches(  # second: MoDo, SDMGrad (else None)
            setup, picked, resumable.streams, pad_id, accelerator
        )
        monitor = tc.monitor_every is not None and (state.step + 1) % tc.monitor_every == 0
        parts = (optimizer, scheduler, monitor, units, second)
        record = train_step(setup, model, batch, accelerator, *parts)
        count_step(state, record, draws, step_started, second)
        log.write(train_record(state, list(draws), record))
        progress.advance({} if "skipped" in record else record["loss"])
        problem = divergence(state, tc.max_bad_steps, record)
        if problem is not None:
            progress.close()
            log.close()
            raise TrainingError(problem)
        if state.step % tc.eval_every == 0 or state.step == tc.max_steps:
            val = {n: setup.data[n].splits["validation"] for n in specs}
            if evaluate_and_keep_best(
                setup, resumable.model, val, state, log, run_dir, pad_id, accelerator, model
            ):
                break
        if state.step % every == 0 and state.step < tc.max_steps and checkpoints:
            state.seconds = time.perf_counter() - started
            _checkpoint(run_dir, resumable, state, accelerator)
    progress.close()
    state.seconds = time.perf_counter() - started
    accelerator.wait_for_everyone()  # the best model folder is complete before all read it
    final = finish(setup, run_dir, state, count_parameters(resumable.model), accelerator, pad_id)
    log.close(final)  # the trackers get the best model's test metrics, then end
    return final


def _checkpoint(run_dir: Path, resumable: Any, state: Any, accelerator: Any) -> None:
    """Every rank's RNG state gathered; the main process writes ``checkpoint/``."""
    rng_states = gather_objects(accelerator, [torch.get_rng_state()])
    if accelerator.is_main_process:
        save_checkpoint(run_dir, resumable, state, rng_states)
