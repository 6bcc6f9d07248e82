"""The training loop's evaluations: keep the best model by the primary task, and the final
validation/test evaluation of it (``final_metrics.json``, plots).

Every rank evaluates its share of the examples (:func:`polytask.evaluate.evaluate` gathers
them), so all ranks take the same early-stopping decision; only the main process writes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate import Accelerator

from polytask import checkpoint as ckpt
from polytask.distributed import weights_sharded
from polytask.evaluate import evaluate, split_baseline
from polytask.models import MultiTaskModel
from polytask.tasks import TaskSpec, task_type
from polytask.training.runlog import MetricsLog, plot_curves, read_records
from polytask.training.state import TrainState

if TYPE_CHECKING:
    from polytask.training.setup import Setup

BEST = "model"


def primary_metric(spec: TaskSpec) -> str:
    return task_type(spec.type).primary(spec)


def evaluate_and_keep_best(
    setup: Setup,
    model: MultiTaskModel,
    val: dict[str, Any],
    state: TrainState,
    log: MetricsLog,
    run_dir: Path,
    pad_id: int,
    accelerator: Accelerator,
    wrapped: Any = None,
) -> bool:
    """Validation metrics; save the best model by the primary task's metric; True = stop early.

    ``wrapped``: the prepared model. Under FSDP/DeepSpeed its full state dict is gathered
    from every rank (``accelerator.get_state_dict``, a collective) for the main process."""
    tc, specs = setup.config.train, setup.specs
    metrics = evaluate(
        model,
        val,
        specs,
        tc.eval_batch_size,
        pad_id,
        accelerator.device,
        accelerator=accelerator,
        tokenizer=setup.tokenizer,
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
        state.best_validation = copy.deepcopy(metrics)
        meta = {
            "config": setup.config.model_dump(mode="json"),
            "step": state.step,
            "primary_task": setup.config.primary,
            "primary_metric": score,
        }
        full = None
        if weights_sharded(accelerator):
            full = accelerator.get_state_dict(wrapped if wrapped is not None else model)
        if accelerator.is_main_process:
            ckpt.save_model_folder(run_dir / BEST, model, setup.tokenizer, meta, full)
        return False
    state.bad_evals += 1
    return tc.patience is not None and state.bad_evals >= tc.patience


def finish(
    setup: Setup,
    run_dir: Path,
    state: TrainState,
    params: dict[str, Any],
    accelerator: Accelerator,
    pad_id: int,
) -> dict[str, Any]:
    """Reload the best weights, evaluate validation and test, write final_metrics.json and plots.

    Every rank evaluates its share and gets the same metrics; the main process writes. With
    several processes the architecture's ``report.json`` (MoE routing) covers the main
    process's share of the test examples only."""
    model = setup.model
    if weights_sharded(accelerator):  # sharded weights: evaluate a plain copy of the best
        model = ckpt.load_model_folder(run_dir / BEST)[0].to(accelerator.device)
    else:
        model.load_weights(run_dir / BEST)
    tasks, report = _final_evaluation(setup, model, state, accelerator, pad_id)
    final = {
        "tasks": tasks,
        "primary_task": setup.config.primary,
        "primary_metric": {n: primary_metric(s) for n, s in setup.specs.items()},
        "best_step": state.best_step,
        "steps": state.step,
        "train_seconds": round(state.seconds, 1),
        "step_seconds": round(state.step_seconds, 3),
        "examples_seen": state.examples,
        "updates": state.updates,
        "skipped_steps": state.skipped_steps,
        "params": params,
        "processes": accelerator.num_processes,
        "mixed_precision": setup.config.train.mixed_precision,
        "data": {n: d.counts for n, d in setup.data.items()},  # dropped / masked rows per split
        "sampler": _sampler_record(setup),
    }
    if accelerator.is_main_process:
        if report:
            ckpt.write_json(run_dir / "report.json", report)
        ckpt.write_json(run_dir / "final_metrics.json", final)
        plot_curves(read_records(run_dir / "metrics.jsonl"), run_dir / "curves.png")
    return final


def _final_evaluation(
    setup: Setup, model: MultiTaskModel, state: TrainState, accelerator: Accelerator, pad_id: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each task's validation (reused from ``best_step`` when measured there) and test
    metrics, its trivial baseline on each (``baseline``: the majority class, the training
    mean); and the architecture's report on test (MoE routing)."""
    tc, names = setup.config.train, list(setup.specs)
    tasks: dict[str, Any] = {}
    report: dict[str, Any] = {}
    if state.best_validation is not None:  # measured on these very weights at best_step
        for n, m in state.best_validation.items():
            tasks.setdefault(n, {})["validation"] = dict(m)
    for split in ("validation", "test"):
        if split == "validation" and state.best_validation is not None:
            continue
        splits = {n: setup.data[n].splits[split] for n in names if split in setup.data[n].splits}
        model.reset_report()
        for n, m in evaluate(
            model,
            splits,
            setup.specs,
            tc.eval_batch_size,
            pad_id,
            accelerator.device,
            accelerator=accelerator,
            tokenizer=setup.tokenizer,
        ).items():
            tasks.setdefault(n, {})[split] = m
        report = model.report() or report  # the architecture's diagnostics on test
    for n, data in setup.data.items():  # every evaluated split: no model needed
        spec, held = setup.specs[n], [s for s in ("validation", "test") if s in data.splits]
        baseline = {s: b for s in held if (b := split_baseline(spec, data.splits[s]))}
        if baseline:
            tasks.setdefault(n, {})["baseline"] = baseline
        if "majority_accuracy" in baseline.get("test", {}):  # the key older readers know
            tasks[n]["majority_accuracy"] = baseline["test"]["majority_accuracy"]
    return tasks, report


def _sampler_record(setup: Setup) -> dict[str, Any]:
    """The sampler that ran with every argument it was built with (defaults filled): what
    the report shows, whatever the config left implicit."""
    sampler = setup.config.sampler
    return {"name": sampler.name, "tasks_per_step": sampler.tasks_per_step, **sampler.kwargs}
