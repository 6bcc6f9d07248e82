"""The arithmetic of ``polytask compare``: seed statistics, Δ%, Δm%, statuses and the verdict.

Pure functions over ``final_metrics`` dicts (see ``train._finish``); nothing here trains or
reads files, so every rule is tested on hand-made numbers.

- **Relative change** of one metric: ``(M_multi − M_single) / |M_single| × 100``, its sign
  flipped when the task type declares the metric lower-is-better
  (:attr:`polytask.tasks.base.TaskType.lower_is_better`), so positive always means "multi-task
  is better". Undefined (``None``) when ``M_single`` is 0. Computed on the means over seeds.
- **Δm%** (Maninis et al. 2019; Vandenhende et al. 2021): per task, the mean relative change
  over every metric reported on the evaluated split; then the mean over tasks.
- **Status** of a task, on its primary metric with ``d`` = (multi − single) oriented so that
  positive is better and the seed noise ``σ = sqrt(std_multi² + std_single²)`` (sample
  standard deviations; ``σ = 0`` with one seed): ``better`` if ``d > σ``, ``matches`` if
  ``−σ ≤ d ≤ σ``, ``worse`` if ``d < −σ``.
- **Verdict**: deploy multi-task only if no critical task is ``worse``.
"""

from __future__ import annotations

import math
from typing import Any

from polytask.tasks import task_type


def seed_stats(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (``None`` with one value) and the values themselves."""
    mean = sum(values) / len(values)
    std = None
    if len(values) > 1:
        std = round(math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)), 6)
    return {"mean": round(mean, 6), "std": std, "values": list(values)}


def interval95(values: list[float]) -> dict[str, Any]:
    """Mean, sample std and the 95 % Student-t interval of the mean (None with one value)."""
    from scipy.stats import t  # lazy: heavy import

    mean = sum(values) / len(values)
    if len(values) < 2:
        return {"mean": round(mean, 4), "std": None, "ci95": None, "values": values}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = float(t.ppf(0.975, len(values) - 1)) * std / math.sqrt(len(values))
    ci = [round(mean - half, 4), round(mean + half, 4)]
    return {"mean": round(mean, 4), "std": round(std, 4), "ci95": ci, "values": values}


def relative_change(multi: float, single: float, higher_is_better: bool) -> float | None:
    """``(multi − single) / |single| × 100``, positive when multi-task is better."""
    if single == 0:
        return None
    change = (multi - single) / abs(single) * 100.0
    return change if higher_is_better else -change


def noise(multi: dict[str, Any], single: dict[str, Any]) -> float:
    """Seed noise of a difference of means: ``sqrt(std_m² + std_s²)``; 0 without a std."""
    if multi["std"] is None or single["std"] is None:
        return 0.0
    return math.sqrt(multi["std"] ** 2 + single["std"] ** 2)


def status(multi: dict[str, Any], single: dict[str, Any], higher_is_better: bool) -> str:
    """``better``, ``matches`` or ``worse``: the oriented difference of means against the noise."""
    diff = multi["mean"] - single["mean"]
    diff = diff if higher_is_better else -diff
    tolerance = noise(multi, single)
    if diff > tolerance:
        return "better"
    return "matches" if diff >= -tolerance else "worse"


def margin_sigmas(multi: dict[str, Any], single: dict[str, Any], higher_is_better: bool) -> Any:
    """The oriented difference of means in units of :func:`noise` (None without noise)."""
    diff = multi["mean"] - single["mean"]
    sigma = noise(multi, single)
    return round((diff if higher_is_better else -diff) / sigma, 2) if sigma > 0 else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def evaluated_split(finals: list[dict[str, Any]], task: str) -> str:
    """``test`` when every run evaluated ``task`` on a test split, else ``validation``."""
    return "test" if all("test" in f["tasks"][task] for f in finals) else "validation"


def baseline_of(
    finals: list[dict[str, Any]], task: str, split: str, metric: str
) -> dict[str, Any] | None:
    """The trivial baseline of ``metric`` on ``split`` over the runs (``final_metrics``
    ``baseline``, keys ``<predictor>_<metric>``): its name and mean over the runs (``None``:
    undefined, a constant's correlation), or None when the runs have none."""
    found = [
        (key, value)
        for f in finals
        for key, value in f["tasks"][task].get("baseline", {}).get(split, {}).items()
        if key.partition("_")[2] == metric
    ]
    if not found:
        return None
    values = [v for _, v in found]
    mean = None if None in values else round(sum(values) / len(values), 6)
    return {"name": found[0][0], "mean": mean}


def task_summary(
    task: str,
    type_name: str,
    multi: list[dict[str, Any]],
    single: list[dict[str, Any]],
    critical: bool,
    split: str | None = None,
) -> dict[str, Any]:
    """One task's row: primary metric of both over seeds, Δ%, the task's Δm% and status, on
    ``split`` (default: the evaluated split)."""
    ttype = task_type(type_name)
    split = split or evaluated_split(multi + single, task)
    metric = multi[0]["primary_metric"][task]
    runs = multi + single
    metrics = [
        m for m in multi[0]["tasks"][task][split] if all(m in f["tasks"][task][split] for f in runs)
    ]
    stats = {
        side: {m: seed_stats([f["tasks"][task][split][m] for f in finals]) for m in metrics}
        for side, finals in (("multi", multi), ("single", single))
    }
    deltas = {
        m: relative_change(
            stats["multi"][m]["mean"], stats["single"][m]["mean"], ttype.higher_is_better(m)
        )
        for m in metrics
    }
    # task metrics only: the evaluation loss is the training objective, and a calibration
    # shift can move it far more than the metrics (it stays in metric_deltas_pct)
    defined = [d for m, d in deltas.items() if d is not None and m != "loss"]
    return {
        "metric": metric,
        "split": split,
        "critical": critical,
        "single": stats["single"][metric],
        "multi": stats["multi"][metric],
        "delta_pct": _round(deltas[metric]),
        "status": status(
            stats["multi"][metric], stats["single"][metric], ttype.higher_is_better(metric)
        ),
        "margin_sigmas": margin_sigmas(
            stats["multi"][metric], stats["single"][metric], ttype.higher_is_better(metric)
        ),
        "delta_m_pct": _round(_mean(defined)),
        "metric_deltas_pct": {m: _round(d) for m, d in deltas.items()},
        "baseline": baseline_of(multi, task, split, metric),
    }


def verdict(tasks: dict[str, dict[str, Any]], seeds: int) -> dict[str, Any]:
    """Deploy multi-task only if it is not ``worse`` on any critical task; else name them."""
    critical = [t for t, row in tasks.items() if row["critical"]]
    hurt = [t for t in critical if tasks[t]["status"] == "worse"]
    others = [t for t, row in tasks.items() if not row["critical"] and row["status"] == "worse"]

    def described(names: list[str]) -> str:
        parts = []
        for t in names:
            delta = tasks[t]["delta_pct"]
            change = "n/a" if delta is None else f"{delta:+.2f}%"
            parts.append(f"{t} ({tasks[t]['metric']} {change})")
        return ", ".join(parts)

    if seeds > 1:
        rule = f"{seeds} seeds; 'matches' = within sqrt(std_multi² + std_single²) of the baseline"
    else:
        rule = "1 seed, so no noise estimate; 'matches' = multi-task >= single-task"
    if hurt:
        text = f"keep the single-task models: multi-task hurts {described(hurt)}"
    else:
        text = (
            "deploy multi-task: it matches or beats the single-task baseline on every "
            f"critical task ({', '.join(critical)})"
        )
    if others:
        text += f"; worse on non-critical {described(others)}"
    return {"deploy_multitask": not hurt, "text": f"{text} ({rule})", "hurt": hurt}


def summarize(
    multi: list[dict[str, Any]],
    single: dict[str, list[dict[str, Any]]],
    types: dict[str, str],
    critical: list[str],
    split: str | None = None,
) -> dict[str, Any]:
    """Per-task rows, Δm%, parameters, train seconds and the verdict of one comparison.

    ``multi``: the multi-task runs' ``final_metrics``, one per seed; ``single``: per task the
    baselines' ``final_metrics`` in the same seed order; ``types``: task → task type name;
    ``split``: every task judged on it (default: each task's evaluated split).
    """
    tasks = {
        t: task_summary(t, types[t], multi, finals, t in critical, split)
        for t, finals in single.items()
    }
    per_task = [row["delta_m_pct"] for row in tasks.values() if row["delta_m_pct"] is not None]
    single_params = {t: finals[0]["params"]["total"] for t, finals in single.items()}
    single_seconds = {
        t: round(sum(f["train_seconds"] for f in finals) / len(finals), 1)
        for t, finals in single.items()
    }
    return {
        "tasks": tasks,
        "delta_m_pct": _round(_mean(per_task)),
        "params": {
            "multi": multi[0]["params"]["total"],
            "single": single_params,
            "single_total": sum(single_params.values()),
        },
        "seconds": {
            "multi": round(sum(f["train_seconds"] for f in multi) / len(multi), 1),
            "single": single_seconds,
            "single_total": round(sum(single_seconds.values()), 1),
        },
        "verdict": verdict(tasks, len(multi)),
    }


def _cell(stats: dict[str, Any]) -> str:
    if stats["std"] is None:
        return f"{stats['mean']:.4f}"
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def markdown(summary: dict[str, Any]) -> str:
    """The comparison as a markdown table, then Δm%, parameters, time, budget and verdict."""
    lines = [
        "| task | metric | single-task | multi-task | Δ% | status |",
        "|---|---|---:|---:|---:|---|",
    ]
    for task, row in summary["tasks"].items():
        name = f"{task} (critical)" if row["critical"] else task
        lines.append(
            f"| {name} | {row['metric']} ({row['split']}) | {_cell(row['single'])} | "
            f"{_cell(row['multi'])} | {_pct(row['delta_pct'])} | {row['status']} |"
        )
    seeds, budget = summary["seeds"], summary["budget"]
    p, s = summary["params"], summary["seconds"]
    singles = ", ".join(f"{t} {n:,}" for t, n in p["single"].items())
    times = ", ".join(f"{t} {v:g} s" for t, v in s["single"].items())
    per_seed = " (mean over seeds)" if len(seeds) > 1 else ""
    lines += [
        "",
        f"seeds: {', '.join(str(x) for x in seeds)}; mean ± sample std over seeds"
        if len(seeds) > 1
        else f"seed: {seeds[0]} (one seed: no std)",
        f"Δm%: {_pct(summary['delta_m_pct'])} (per task, the mean relative change over every "
        "metric of the evaluated split, oriented so that + is better; then the mean over tasks)",
        f"parameters: multi-task {p['multi']:,}; single-task {singles} "
        f"(total {p['single_total']:,})",
        f"train time{per_seed}: multi-task {s['multi']:g} s; single-task {times} "
        f"(total {s['single_total']:g} s)",
        f"budget: {budget['text']}",
        "steps per seed: multi-task "
        + ", ".join(str(n) for n in budget["multi"]["steps"])
        + "; "
        + "; ".join(
            f"{t} {', '.join(str(n) for n in v['steps'])}" for t, v in budget["single"].items()
        ),
    ]
    if summary["auxiliary"]:
        lines.append(
            f"auxiliary tasks (in the multi-task run only): {', '.join(summary['auxiliary'])}"
        )
    lines += [
        "",
        f"**verdict: {summary['verdict']['text']}**",
    ]
    return "\n".join(lines) + "\n"


def train_examples(final: dict[str, Any]) -> dict[str, int]:
    """The training rows each task used in a run (its ``final_metrics["data"]``), e.g. a
    ``max_train_examples`` cap; tasks without the record are left out."""
    data = final.get("data") or {}
    return {t: int(s["train"]["used"]) for t, s in data.items() if "train" in s}


def step_seconds(finals: list[dict[str, Any]]) -> float:
    """Mean seconds per training step over the runs (evaluation not counted)."""
    return sum(f["step_seconds"] / max(1, f["steps"]) for f in finals) / len(finals)
