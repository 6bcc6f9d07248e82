"""A run folder read back for the report: its config, log, final metrics and report, with
one-line :class:`~polytask.errors.RunDirError` naming a file that does not parse."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from polytask.errors import RunDirError
from polytask.report.sections import reading


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; one-line :class:`RunDirError` naming it otherwise."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: corrupt JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_log(path: Path) -> list[dict[str, Any]]:
    """``metrics.jsonl`` records. A torn last line (a crash mid-write) is dropped, as
    :func:`polytask.training.runlog.read_records` does; a bad line before it is corruption."""
    if not path.is_file():
        return []
    try:
        lines = [ln for ln in path.read_text("utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: cannot read ({exc})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise RunDirError(f"{path}, line {number}: corrupt JSON") from None
        if not isinstance(record, dict) or "step" not in record:
            raise RunDirError(f"{path}, line {number}: not a metrics record")
        records.append(record)
    return records


#: how the final metrics name a split's trivial baseline, beside the metrics it bounds
BASELINE_NOTE = (
    "baseline: the majority class of the split (classification), the training mean as a "
    "constant prediction (regression; its Pearson and Spearman are undefined)"
)


def baseline_of(task: dict[str, Any], split: str, metric: str) -> str:
    """The trivial baseline of ``metric`` on ``split`` in one task's final metrics, as text:
    ``0.4000``, ``undefined`` (a constant has no correlation) or ``""`` (none). A run
    written before every split had one keeps ``majority_accuracy`` of test alone."""
    baselines = task.get("baseline")
    if baselines is None and "majority_accuracy" in task:
        baselines = {"test": {"majority_accuracy": task["majority_accuracy"]}}
    for key, value in (baselines or {}).get(split, {}).items():
        if key.partition("_")[2] == metric:  # <predictor>_<metric>
            return "undefined" if value is None else f"{float(value):.4f}"
    return ""


@dataclass
class Run:
    """What a run directory holds for the report (absent files are ``None`` / empty)."""

    path: Path
    config: dict[str, Any]
    tasks: list[str]
    final: dict[str, Any] | None
    records: list[dict[str, Any]]
    report: dict[str, Any] | None


def is_run_dir(path: Path) -> bool:
    """A run directory: its config and a training log or final metrics (finished or not)."""
    return (path / "config.yaml").is_file() and (
        (path / "metrics.jsonl").is_file() or (path / "final_metrics.json").is_file()
    )


def load_run(path: Path) -> Run:
    """Read a run directory written by ``polytask train`` (finished or not)."""
    config_path = path / "config.yaml"
    try:
        config = yaml.safe_load(config_path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RunDirError(f"{config_path}: cannot read the run's config ({exc})") from None
    with reading(config_path):
        tasks = [str(t["name"]) for t in config["tasks"]]
    final_path, report_path = path / "final_metrics.json", path / "report.json"
    return Run(
        path=path,
        config=config,
        tasks=tasks,
        final=read_json(final_path) if final_path.is_file() else None,
        records=read_log(path / "metrics.jsonl"),
        report=read_json(report_path) if report_path.is_file() else None,
    )
