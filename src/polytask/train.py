"""The training loop: build, prepare, sample, forward, per-task losses, step, log, checkpoint."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedTokenizerBase

from polytask import checkpoint as ckpt
from polytask.config import RunConfig, dump_config
from polytask.data.batching import Batch, TaskStream, collate
from polytask.data.loading import TaskData, load_task_data
from polytask.data.samplers import build_sampler
from polytask.errors import ConfigError
from polytask.evaluate import evaluate
from polytask.models import ARCHITECTURES, MultiTaskModel
from polytask.objective import Objective, build_objective
from polytask.optim import WarmupLinearDecay, build_optimizer
from polytask.params import count_parameters
from polytask.progress import TrainProgress
from polytask.runlog import MetricsLog, plot_curves, read_records, truncate_after
from polytask.tasks import TaskSpec, task_type
from polytask.trainstate import (
    Resumable,
    TrainState,
    load_checkpoint,
    prepare_run_dir,
    save_checkpoint,
)

BEST = "model"


@dataclass
class Setup:
    """Everything built from a config before any file is written (all validation happens here)."""

    config: RunConfig
    tokenizer: PreTrainedTokenizerBase
    data: dict[str, TaskData]
    model: MultiTaskModel
    objective: Objective

    @property
    def specs(self) -> dict[str, TaskSpec]:
        return {name: d.spec for name, d in self.data.items()}


def build(config: RunConfig) -> Setup:
    """Load encoder, tokenizer and every task's data; build the model. Raises on bad input."""
    set_seed(config.seed)
    arch = config.architecture
    encoder, tokenizer = ARCHITECTURES.get(arch.name).load_pretrained(config.encoder.name)
    by_name = {t.name: t for t in config.tasks}
    data = {
        t.name: load_task_data(
            t, tokenizer, t.max_length or config.encoder.max_length, config.seed, tasks=by_name
        )
        for t in config.tasks
    }
    try:
        model = ARCHITECTURES.get(arch.name)(
            encoder,
            [d.spec for d in data.values()],
            pooling=config.encoder.pooling,
            head_hidden=arch.head_hidden,
            head_dropout=arch.head_dropout,
            **arch.kwargs,
        )
    except ValueError as exc:  # an argument that does not fit this encoder or these tasks
        raise ConfigError(f"architecture: {arch.name}: {exc}") from None
    specs = [d.spec for d in data.values() if not d.spec.held_out]  # held-out: evaluated only
    objective = build_objective(
        [s.name for s in specs],
        {s.name: s.weight for s in specs},
        ["regression" if s.type == "regression" else "classification" for s in specs],
        (config.weighting.name, config.weighting.kwargs),
        (config.aggregator.name, config.aggregator.kwargs),
    )
    return Setup(config, tokenizer, data, model, objective)


def task_losses(
    model: MultiTaskModel, batch: Batch, specs: dict[str, TaskSpec]
) -> dict[str, torch.Tensor]:
    """One shared forward of a multi-task batch, then each present task's own loss."""
    outputs = model(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.segments)
    return {
        s.task: task_type(specs[s.task].type).loss(
            specs[s.task], outputs[s.task], batch.labels[s.task]
        )
        for s in batch.segments
    }


def build_optimization(setup: Setup) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """The run's AdamW (model, learned loss weights, aggregator parameters) and its schedule."""
    tc, objective = setup.config.train, setup.objective
    optimizer = build_optimizer(
        setup.model,
        tc.lr,
        tc.head_lr,
        tc.weight_decay,
        [
            (objective.weighting.parameters(), objective.weighting.params_lr),
            (objective.aggregator.parameters(), None),
        ],
    )
    warmup = int(tc.warmup_ratio * tc.max_steps)
    return optimizer, LambdaLR(optimizer, WarmupLinearDecay(warmup, tc.max_steps))


def primary_metric(spec: TaskSpec) -> str:
    return task_type(spec.type).primary_metric


def train(
    config: RunConfig,
    output: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train a multi-task model; writes the run directory and returns ``final_metrics``."""
    run_dir = Path(output)
    resume_from = prepare_run_dir(run_dir, resume, overwrite)
    setup = build(config)  # every input check happens here, before anything is written
    tc, sc, specs = config.train, config.sampler, setup.specs
    names = [n for n, s in specs.items() if not s.held_out]  # the tasks the sampler picks
    accelerator = Accelerator(mixed_precision=tc.mixed_precision)
    optimizer, scheduler = build_optimization(setup)
    model, optimizer, scheduler = accelerator.prepare(setup.model, optimizer, scheduler)
    setup.objective.to(accelerator.device)
    setup.objective.attach(accelerator.unwrap_model(model), monitor=tc.monitor_every is not None)
    train_splits = {n: setup.data[n].splits["train"] for n in names}
    sizes = [len(train_splits[n]) for n in names]
    live = Resumable(
        model=accelerator.unwrap_model(model),
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=build_sampler(sc.name, sizes, config.seed, sc.alpha, sc.alpha_start, sc.alpha_end),
        streams={
            n: TaskStream(
                train_splits[n], tc.batch_size, tc.bucket_batches, config.seed + i, specs[n]
            )
            for i, n in enumerate(names)
        },
        objective=setup.objective,
    )
    k = len(names) if sc.tasks_per_step == "all" else sc.tasks_per_step
    pad_id = int(setup.tokenizer.pad_token_id or 0)
    state = TrainState(examples=dict.fromkeys(names, 0), updates=dict.fromkeys(names, 0))
    if resume_from is not None:
        state = load_checkpoint(resume_from, live)
        truncate_after(run_dir / "metrics.jsonl", state.step)
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(dump_config(config), "utf-8")
    log = MetricsLog(run_dir / "metrics.jsonl")
    params = count_parameters(live.model)
    every = tc.checkpoint_every or tc.eval_every
    enabled = show_progress and accelerator.is_main_process
    progress = TrainProgress(tc.max_steps, state.step, enabled=enabled)
    started = time.perf_counter() - state.seconds
    model.train()
    while state.step < tc.max_steps:
        picked = [names[i] for i in live.sampler.sample(state.step, tc.max_steps, k)]
        rows = [(specs[n], live.streams[n].next_rows()) for n in picked]
        batch = collate(rows, pad_id).to(accelerator.device)
        monitor = tc.monitor_every is not None and (state.step + 1) % tc.monitor_every == 0
        record = _step(setup, model, batch, accelerator, optimizer, scheduler, monitor)
        state.step += 1
        for seg in batch.segments:
            state.examples[seg.task] += seg.stop - seg.start
            state.updates[seg.task] += 1
        log.write(
            {
                "event": "train",
                "step": state.step,
                "tasks": picked,
                **record,
                "examples": dict(state.examples),
                "updates": dict(state.updates),
            }
        )
        progress.advance(record["loss"])
        if state.step % tc.eval_every == 0 or state.step == tc.max_steps:
            val = {n: setup.data[n].splits["validation"] for n in specs}
            if _evaluate_and_keep_best(
                setup, live.model, val, state, log, run_dir, pad_id, accelerator
            ):
                break
        if state.step % every == 0 and state.step < tc.max_steps:
            state.seconds = time.perf_counter() - started
            save_checkpoint(run_dir, live, state)
    progress.close()
    log.close()
    state.seconds = time.perf_counter() - started
    return _finish(setup, run_dir, state, params, accelerator.device, pad_id)


def _step(
    setup: Setup,
    model: MultiTaskModel,
    batch: Batch,
    accelerator: Accelerator,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    monitor: bool = False,
) -> dict[str, Any]:
    """One optimisation step on a multi-task batch; returns the step's log record.

    ``monitor``: also compute the per-task gradients (and log their cosines) when the
    method does not need them; the update is the same.
    """
    tc, objective = setup.config.train, setup.objective
    # with per-task gradients the engine writes .grad itself: run the forward on the
    # unwrapped module, never through DDP's gradient hooks
    per_task = objective.uses_engine(batch.segments, monitor)
    fwd = accelerator.unwrap_model(model) if per_task else model
    with accelerator.autocast(), objective.capture(batch.segments):
        losses = task_losses(fwd, batch, setup.specs)
        regularization = accelerator.unwrap_model(model).regularization()
    extra = objective.backward(accelerator, losses, regularization)
    if tc.max_grad_norm is not None:
        accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if objective.weighting.observes_same_batch:
        with torch.no_grad(), accelerator.autocast():
            objective.observe(task_losses(model, batch, setup.specs))
    else:
        objective.observe(losses)
    loss = {n: round(float(v.detach()), 6) for n, v in losses.items()}
    return {"loss": loss, "lr": scheduler.get_last_lr()[0], **extra}


def _evaluate_and_keep_best(
    setup: Setup,
    model: MultiTaskModel,
    val: dict[str, Any],
    state: TrainState,
    log: MetricsLog,
    run_dir: Path,
    pad_id: int,
    accelerator: Accelerator,
) -> bool:
    """Validation metrics; save the best model by the primary task's metric; True = stop early."""
    tc, specs = setup.config.train, setup.specs
    metrics = evaluate(
        model, val, specs, tc.eval_batch_size, pad_id, accelerator.device, tokenizer=setup.tokenizer
    )
    primary = {n: metrics[n].get(primary_metric(specs[n]), 0.0) for n in specs}
    score = primary[setup.config.primary]
    log.write(
        {
            "event": "eval",
            "step": state.step,
            "split": "validation",
            "metrics": metrics,
            "primary": primary,
        }
    )
    if state.best is None or score > state.best:
        state.best, state.best_step, state.bad_evals = score, state.step, 0
        meta = {
            "config": setup.config.model_dump(mode="json"),
            "step": state.step,
            "primary_task": setup.config.primary,
            "primary_metric": score,
        }
        ckpt.save_model_folder(run_dir / BEST, model, setup.tokenizer, meta)
        return False
    state.bad_evals += 1
    return tc.patience is not None and state.bad_evals >= tc.patience


def _finish(
    setup: Setup,
    run_dir: Path,
    state: TrainState,
    params: dict[str, Any],
    device: torch.device,
    pad_id: int,
) -> dict[str, Any]:
    """Reload the best weights, evaluate validation and test, write final_metrics.json and plots."""
    model = setup.model
    model.load_weights(run_dir / BEST)
    tc, names = setup.config.train, list(setup.specs)
    tasks: dict[str, Any] = {}
    report: dict[str, Any] = {}
    for split in ("validation", "test"):
        splits = {n: setup.data[n].splits[split] for n in names if split in setup.data[n].splits}
        model.reset_report()
        for n, m in evaluate(
            model,
            splits,
            setup.specs,
            tc.eval_batch_size,
            pad_id,
            device,
            with_majority=True,
            tokenizer=setup.tokenizer,
        ).items():
            if split == "test" and "majority_accuracy" in m:
                tasks.setdefault(n, {})["majority_accuracy"] = m.pop("majority_accuracy")
            m.pop("majority_accuracy", None)
            tasks.setdefault(n, {})[split] = m
        report = model.report() or report  # the architecture's diagnostics on test
    if report:
        ckpt.write_json(run_dir / "report.json", report)
    final = {
        "tasks": tasks,
        "primary_task": setup.config.primary,
        "primary_metric": {n: primary_metric(s) for n, s in setup.specs.items()},
        "best_step": state.best_step,
        "steps": state.step,
        "train_seconds": round(state.seconds, 1),
        "examples_seen": state.examples,
        "updates": state.updates,
        "params": params,
    }
    ckpt.write_json(run_dir / "final_metrics.json", final)
    plot_curves(read_records(run_dir / "metrics.jsonl"), run_dir / "curves.png")
    return final
