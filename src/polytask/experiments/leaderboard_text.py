"""``leaderboard.md``: the ranked methods as markdown, from ``leaderboard.json``'s dict."""

from __future__ import annotations

from typing import Any

from polytask.report.leaderboard_cells import delta_m as _delta_m
from polytask.report.leaderboard_cells import ranked_on, validation_delta_m
from polytask.report.leaderboard_cells import stats as _stats
from polytask.report.leaderboard_cells import task_cell as _task_cell
from polytask.report.leaderboard_cells import verdict as _verdict


def summed_seconds(result: dict[str, Any]) -> str:
    """The runs' own training seconds, reused runs included (absent from a leaderboard.json
    written before the field existed)."""
    if "run_seconds" not in result:
        return ""
    runs = result["runs_trained"] + result["runs_reused"]
    return f"; training time of all {runs} runs summed {result['run_seconds']:.0f} s"


def markdown(result: dict[str, Any]) -> str:
    """The leaderboard table (best mean Δm% first), the baselines row, and how to read it."""
    tasks = list(result["baselines"])
    primary = result["primary_task"]
    names = [f"{t} (primary)" if t == primary else t for t in tasks]
    lines = [
        "| rank | method | validation Δm% | Δm% [95% CI] | "
        + " | ".join(names)
        + " | step time | verdict |",
        "|---:|---|---:|---:|" + "---:|" * len(tasks) + "---:|---|",
    ]
    for row in result["methods"]:
        cells = " | ".join(_task_cell(row["tasks"][t]) for t in tasks)
        ratio = row["step_time_ratio"]
        time = "n/a" if ratio is None else f"{ratio:.2f}×"
        lines.append(
            f"| {row['rank']} | {row['method']} | {validation_delta_m(row)} | "
            f"{_delta_m(row['delta_m_pct'])} | {cells} | "
            f"{time} | {_verdict(row)} |"
        )
    baseline = " | ".join(_stats(result["baselines"][t]["single"]) for t in tasks)
    lines.append(f"| | single-task baselines | | | {baseline} | | |")
    seeds = result["seeds"]
    metrics = ", ".join(
        f"{t}: {b['metric']} ({b['split']})" for t, b in result["baselines"].items()
    )
    reference = result["methods"][0]["step_time_vs"] if result["methods"] else "equal"
    lines += [
        "",
        f"seeds: {', '.join(str(s) for s in seeds)}; a task cell is the multi-task primary "
        f"metric, mean ± sample std over seeds (Δ% vs the baseline; status: better / matches "
        f"/ worse beyond sqrt(std_multi² + std_single²)); metrics: {metrics}",
        "Δm%: per seed, the mean over tasks of the mean relative change over each task's "
        "metrics (+ is better); mean over seeds and its 95 % Student-t interval",
        ranked_on(result),
        f"step time: seconds per training step (no evaluation) relative to {reference}",
        f"budget: {result['budget']['text']}",
        f"runs: {result['runs_trained']} trained, {result['runs_reused']} reused; "
        f"wall time {result['wall_seconds']:.0f} s" + summed_seconds(result),
    ]
    if result["auxiliary"]:
        lines.append(f"auxiliary tasks (multi-task runs only): {', '.join(result['auxiliary'])}")
    return "\n".join(lines) + "\n"
