"""``sweep-aux``: one run per weight of an auxiliary task, and where it starts to hurt.

Every run is the same config with only the auxiliary task's ``weight`` changed (same seed,
data and budget). Per weight the sweep records the primary task's metric, every other
task's primary metric, and the auxiliary task's validation loss. The **interference
threshold** is the smallest weight whose primary metric is worse than the best primary
metric at any weight up to it by more than ``tolerance`` (absolute, in the metric's units;
"worse" follows the metric's direction): the weight at which the auxiliary objective starts
to cost the primary task. ``None`` when no weight does. Test metrics are used when the
primary task has a test split, validation metrics otherwise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from polytask.checkpoint import write_json
from polytask.config.run import RunConfig, config_from_dict
from polytask.errors import ConfigError, PolytaskError
from polytask.registry import did_you_mean
from polytask.tasks import task_type

DEFAULT_TOLERANCE = 0.01


def parse_weights(text: str) -> list[float]:
    """``"0.05,0.1,0.2"`` → sorted distinct finite non-negative floats; one-line errors."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ConfigError(f"--weights '{text}': give comma-separated numbers, e.g. 0.05,0.1,0.2")
    weights = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(f"--weights: '{part}' is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--weights: {part} must be a finite number >= 0")
        weights.append(value)
    if len(set(weights)) != len(weights):
        raise ConfigError(f"--weights '{text}' repeats a weight")
    return sorted(weights)


def auxiliary_task(config: RunConfig, name: str | None) -> str:
    """The task to sweep: ``name`` (must be auxiliary) or the config's only auxiliary task."""
    aux = [t.name for t in config.tasks if t.auxiliary]
    if name is not None:
        names = [t.name for t in config.tasks]
        if name not in names:
            raise ConfigError(f"--task '{name}' is not a task{did_you_mean(name, names)}")
        if name not in aux:
            raise ConfigError(f"--task '{name}' is not auxiliary (set auxiliary: true)")
        return name
    if len(aux) != 1:
        found = ", ".join(aux) if aux else "none"
        raise ConfigError(
            f"the config must have exactly one auxiliary task, or pass --task (auxiliary: {found})"
        )
    return aux[0]


def weighted_configs(config: RunConfig, task: str, weights: list[float]) -> list[RunConfig]:
    """The config once per weight, only ``task``'s weight changed (each validated again)."""
    out = []
    for weight in weights:
        data = config.model_dump(mode="json")
        for entry in data["tasks"]:
            if entry["name"] == task:
                entry["weight"] = weight
        out.append(config_from_dict(data, f"weight {weight}"))
    return out


def run_name(weight: float) -> str:
    return f"weight-{weight:g}"


def interference_threshold(
    weights: list[float], scores: list[float], higher_is_better: bool, tolerance: float
) -> float | None:
    """Smallest weight whose score is worse than the best score up to it by > ``tolerance``."""
    sign = 1.0 if higher_is_better else -1.0
    best = -math.inf
    for weight, score in zip(weights, scores, strict=True):
        best = max(best, sign * score)
        if sign * score < best - tolerance:
            return weight
    return None


def summarize(
    finals: list[dict[str, Any]],
    weights: list[float],
    task: str,
    tolerance: float,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """The sweep's table (one row per weight) and its interference threshold."""
    primary = finals[0]["primary_task"]
    metric = finals[0]["primary_metric"][primary]
    split = "test" if "test" in finals[0]["tasks"][primary] else "validation"
    rows = []
    for weight, final in zip(weights, finals, strict=True):
        others = {
            name: values.get(split, {}).get(final["primary_metric"][name])
            for name, values in final["tasks"].items()
            if name not in (primary, task)
        }
        aux = final["tasks"][task]
        rows.append(
            {
                "weight": weight,
                "primary": _round(final["tasks"][primary][split][metric]),
                "others": {k: _round(v) for k, v in others.items()},
                "aux_validation_loss": _round(aux["validation"]["loss"]),
                "best_step": final["best_step"],
                "train_seconds": final["train_seconds"],
            }
        )
    threshold = interference_threshold(
        weights, [r["primary"] for r in rows], higher_is_better, tolerance
    )
    return {
        "auxiliary_task": task,
        "primary_task": primary,
        "primary_metric": metric,
        "split": split,
        "tolerance": tolerance,
        "interference_threshold": threshold,
        "rows": rows,
    }


def _round(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, int | float) else value


def markdown(summary: dict[str, Any]) -> str:
    """The sweep as a markdown table; the threshold row is marked."""
    others = list(summary["rows"][0]["others"]) if summary["rows"] else []
    primary = f"{summary['primary_task']} {summary['primary_metric']} ({summary['split']})"
    head = ["aux weight", primary, *others, f"{summary['auxiliary_task']} val. loss", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * (len(head) - 1) + "---|"]
    for row in summary["rows"]:
        mark = "← interference" if row["weight"] == summary["interference_threshold"] else ""
        cells = [
            f"{row['weight']:g}",
            f"{row['primary']:.4f}",
            *("" if row["others"][o] is None else f"{row['others'][o]:.4f}" for o in others),
            f"{row['aux_validation_loss']:.4f}",
            mark,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    threshold = summary["interference_threshold"]
    lines.append("")
    lines.append(
        f"interference threshold (tolerance {summary['tolerance']:g}): "
        + (f"{threshold:g}" if threshold is not None else "none within the swept weights")
    )
    return "\n".join(lines) + "\n"


def sweep_aux(
    config: RunConfig,
    weights: list[float],
    out: str | Path,
    task: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train one run per weight into ``out/weight-W``; write ``sweep_aux.json`` and ``.md``."""
    from polytask.train import train

    if not weights:
        raise ConfigError("--weights is empty")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ConfigError(f"--tolerance must be a finite number >= 0, not {tolerance}")
    name = auxiliary_task(config, task)
    configs = weighted_configs(config, name, weights)
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise PolytaskError(f"{folder} already exists and is not empty; pass --overwrite")
    finals = []
    for weight, cfg in zip(weights, configs, strict=True):
        run = folder / run_name(weight)
        finals.append(train(cfg, run, overwrite=overwrite, show_progress=show_progress))
    primary = config.task(config.primary)
    higher = task_type(primary.type).higher_is_better(finals[0]["primary_metric"][primary.name])
    summary = summarize(finals, weights, name, tolerance, higher)
    summary["runs"] = {f"{w:g}": run_name(w) for w in weights}
    write_json(folder / "sweep_aux.json", summary)
    (folder / "sweep_aux.md").write_text(markdown(summary), "utf-8")
    return summary
