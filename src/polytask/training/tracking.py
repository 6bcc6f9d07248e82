"""Experiment trackers (``train.report_to``: TensorBoard, MLflow, Weights & Biases) through
Accelerate's trackers: every ``metrics.jsonl`` record's numbers, the final test metrics and the
resolved config as hyperparameters, written under ``RUN/tracking/`` (``docs/tracking.md``).

``metrics.jsonl`` is always written; a tracker receives the same values under the same names
(``train/loss/ner`` is record ``{"event": "train", "loss": {"ner": ...}}``). Resuming a run
keeps logging to the same tracker run: TensorBoard purges the steps after the checkpoint,
MLflow and W&B reopen the run by the id kept in ``RUN/tracking/runs.json``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from accelerate import Accelerator

#: the run folder's tracker folder, and the project (experiment) name every tracker gets
TRACKING, PROJECT = "tracking", "polytask"
IDS = "runs.json"
#: record keys that are not values over steps (the step itself; the tasks a step drew)
NOT_LOGGED = ("event", "step", "split", "tasks", "primary")


def flatten(prefix: str, value: Any) -> dict[str, float]:
    """The numbers in ``value`` (nested dicts), named ``prefix/key/...``; text and non-finite
    values (a skipped step's ``"nan"`` loss) are left out."""
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for key, item in value.items():
            out.update(flatten(f"{prefix}/{key}", item))
        return out
    if isinstance(value, bool) or not isinstance(value, int | float):
        return {}
    return {prefix: float(value)} if math.isfinite(value) else {}


def record_scalars(record: dict[str, Any], tasks: list[str]) -> dict[str, float]:
    """A ``metrics.jsonl`` record's values for the trackers: a train record's losses, task
    weights, aggregator coefficients, gradient norms and cosines (``cosine/a vs b``, pairs
    of ``tasks``, the objective's task order), an eval record's metrics per task."""
    event = str(record.get("event", "train"))
    if event == "eval":
        return flatten(str(record.get("split", "validation")), record.get("metrics", {}))
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "cosine" and value is not None:
            pairs = {
                f"{a} vs {b}": value[i][j]
                for i, a in enumerate(tasks)
                for j, b in enumerate(tasks)
                if i < j and i < len(value) and j < len(value[i])
            }
            out.update(flatten(f"{event}/cosine", pairs))
        elif key not in NOT_LOGGED:
            out.update(flatten(f"{event}/{key}", value))
    return out


def hyperparameters(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """The resolved config flattened to ``a.b.c`` keys with the values TensorBoard's hparams
    accept: a list of named sections is keyed by name (``tasks.ner.type``), any other list
    is its JSON text, None is ``"None"``."""
    out: dict[str, bool | int | float | str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, list) and all(isinstance(v, dict) and "name" in v for v in value):
            value = {str(v["name"]): v for v in value} if value else "[]"
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, bool | int | float | str):
            out[prefix] = value
        else:
            out[prefix] = "None" if value is None else json.dumps(value)

    walk("", config)
    return out


class Tracking:
    """The run's trackers: :meth:`log` a ``metrics.jsonl`` record, :meth:`end` them all."""

    def __init__(self, accelerator: Accelerator, tasks: list[str]) -> None:
        self.accelerator, self.tasks = accelerator, tasks
        self.active = bool(accelerator.log_with)
        self.step = 0

    def log(self, record: dict[str, Any]) -> None:
        values = record_scalars(record, self.tasks) if self.active else {}
        self.step = int(record.get("step", self.step))
        if values:
            self.accelerator.log(values, step=self.step)

    def end(self, final: dict[str, Any] | None = None) -> None:
        """Finish every tracker (flushes TensorBoard, ends the MLflow/W&B run), after
        ``final``'s test metrics (``final_metrics.json``: the best model's) at the last
        step; idempotent."""
        if not self.active:
            return
        tasks = (final or {}).get("tasks", {})
        values = flatten("test", {t: m["test"] for t, m in tasks.items() if "test" in m})
        if values:
            self.accelerator.log(values, step=self.step)
        self.active = False
        # Accelerator.end_training() without its destroy_process_group(): a distributed
        # launch may train again (compare, sweep) and the loop's collectives are not over
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers = []


def start_tracking(
    accelerator: Accelerator, config: dict[str, Any], run_dir: Path, step: int, tasks: list[str]
) -> Tracking:
    """Start the accelerator's trackers for ``run_dir`` (``step`` > 0: resumed there) and
    log ``config`` (the resolved config, :meth:`RunConfig.model_dump`) as hyperparameters."""
    tracking = Tracking(accelerator, tasks)
    if not tracking.active:
        return tracking
    folder = run_dir / TRACKING
    ids = json.loads((folder / IDS).read_text("utf-8")) if (folder / IDS).is_file() else {}
    names = [str(t) for t in accelerator.log_with]
    if "mlflow" in names:
        _mlflow_store(folder)
    kwargs = _init_kwargs(names, folder, run_dir.name, step, ids)
    accelerator.init_trackers(PROJECT, config=None, init_kwargs=kwargs)
    flat = hyperparameters(config)
    for tracker in accelerator.trackers:
        if not (step > 0 and tracker.name == "mlflow"):  # MLflow refuses a changed param
            tracker.store_init_configuration(flat)
    if accelerator.is_main_process:
        ids.update(_run_ids(accelerator, names))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / IDS).write_text(json.dumps(ids, indent=1) + "\n", "utf-8")
    return tracking


def _init_kwargs(
    names: list[str], folder: Path, run_name: str, step: int, ids: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Each tracker's arguments: where it writes, its run's name, the run to resume."""
    kwargs: dict[str, dict[str, Any]] = {}
    if "tensorboard" in names:  # a resumed run's later events are replayed: hide the old ones
        kwargs["tensorboard"] = {"purge_step": step + 1} if step > 0 else {}
    if "mlflow" in names:
        resumed = ids.get("mlflow") if step > 0 else None
        kwargs["mlflow"] = {"run_id": resumed} if resumed else {"run_name": run_name}
    if "wandb" in names:
        folder.mkdir(parents=True, exist_ok=True)
        kwargs["wandb"] = {"dir": str(folder), "name": run_name}
        if step > 0 and "wandb" in ids:
            kwargs["wandb"].update(id=ids["wandb"], resume="allow")
    return kwargs


def _mlflow_store(folder: Path) -> None:
    """MLflow writes a file store in the run folder unless ``MLFLOW_TRACKING_URI`` names a
    server; a run left open in this process (a crashed earlier run) is ended first.

    MLflow 3 keeps its file store in maintenance mode, refused unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set; its database store needs SQLAlchemy, which
    ``mlflow-skinny`` leaves out, so the file store is allowed here (a value already set wins).
    """
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"file:{folder / 'mlruns'}"
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)
    if mlflow.active_run() is not None:
        mlflow.end_run()


def _run_ids(accelerator: Accelerator, names: list[str]) -> dict[str, str]:
    ids = {}
    if "mlflow" in names:
        ids["mlflow"] = str(accelerator.get_tracker("mlflow", unwrap=True).info.run_id)
    if "wandb" in names:
        ids["wandb"] = str(accelerator.get_tracker("wandb", unwrap=True).id)
    return ids
