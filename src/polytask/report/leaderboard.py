"""The leaderboard section of ``polytask report``: ``leaderboard.json`` of
``polytask compare --methods`` (its keys: :mod:`polytask.experiments.leaderboard`).

One row per method in rank order (Δm% with its 95 % interval, each task's multi-task
primary metric with Δ% and status, step time, verdict), the single-task baselines' row, the
Δm% plot, and the run directories. The report's run sections show the best-ranked method's
first seed (:func:`shown_run`).
"""

from __future__ import annotations

from typing import Any

from polytask.report.leaderboard_cells import delta_m as _delta_m
from polytask.report.leaderboard_cells import ranked_on, validation_delta_m, verdict
from polytask.report.leaderboard_cells import stats as _stats
from polytask.report.leaderboard_cells import task_cell as _task_cell
from polytask.report.plots import leaderboard_points
from polytask.report.sections import Cell, esc, facts, figure, note, table


def ranked(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The methods, best (rank 1) first."""
    return sorted(data["methods"], key=lambda row: int(row["rank"]))


def shown_run(data: dict[str, Any]) -> tuple[str, str]:
    """The run the report shows (``runs.methods[<best>][0]``, relative to the leaderboard
    directory) and a sentence saying which run it is."""
    best = ranked(data)[0]["method"]
    relative = str(data["runs"]["methods"][best][0])
    seed = data["seeds"][0] if data.get("seeds") else "?"
    return relative, f"{relative}: the best-ranked method ({best}), first seed ({seed})"


def _table(data: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    tasks = list(data["baselines"])
    primary = data.get("primary_task")
    names = [
        f"{t} (primary): {b['metric']}" if t == primary else f"{t}: {b['metric']}"
        for t, b in data["baselines"].items()
    ]
    reference = rows[0]["step_time_vs"]
    cells: list[list[Cell]] = []
    for row in rows:
        ratio = row.get("step_time_ratio")
        cells.append(
            [
                int(row["rank"]),
                row["method"],
                validation_delta_m(row),
                _delta_m(row["delta_m_pct"]),
                *[_task_cell(row["tasks"][t]) for t in tasks],
                "n/a" if ratio is None else f"{float(ratio):.2f}×",
                verdict(row),
            ]
        )
    single = [_stats(data["baselines"][t]["single"]) for t in tasks]
    cells.append(["", "single-task baselines", "", "", *single, "", ""])
    classes = ["" if r["verdict"]["deploy_multitask"] else "worse" for r in rows]
    headers = [
        "rank",
        "method",
        "validation Δm%",
        "Δm% [95% CI]",
        *names,
        f"step time vs {reference}",
        "verdict",
    ]
    return table(headers, cells, classes)


def _plot(data: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    names = [str(r["method"]) for r in rows]
    means = [float(r["delta_m_pct"]["mean"]) for r in rows]
    cis = [r["delta_m_pct"].get("ci95") for r in rows]
    uri = leaderboard_points(names, means, cis)
    if all(ci is None for ci in cis):
        caption = (
            "Δm% per method (best on top) vs the single-task baselines (dashed line at 0); "
            f"one seed ({len(data['seeds'])}): no 95 % interval, so no error bars — run "
            "--seeds 3 or more before trusting a close ranking"
        )
    else:
        caption = (
            "Δm% per method (best on top): mean over seeds, error bars the 95 % Student-t "
            "interval of the mean; dashed line at 0: the single-task baselines"
        )
        if any(ci is None for ci in cis):
            caption += "; a point without a bar has a single defined Δm% (no interval)"
    return figure(uri, "Δm% per method with its 95 % interval", caption)


def leaderboard_body(data: dict[str, Any], shown: str = "") -> str:
    """``leaderboard.json``: facts, the ranked table, the best method's verdict, the Δm%
    plot and the run directories; ``shown`` says which run the page's run sections show."""
    rows = ranked(data)
    metrics = ", ".join(f"{t}: {b['metric']} ({b['split']})" for t, b in data["baselines"].items())
    runs = f"{data['runs_trained']} trained, {data['runs_reused']} reused"
    parts = [
        facts(
            [
                ("config", data.get("config")),
                ("seeds", ", ".join(str(s) for s in data["seeds"])),
                ("primary task", data.get("primary_task")),
                ("metrics", metrics),
                ("auxiliary tasks", ", ".join(str(t) for t in data.get("auxiliary", []))),
                ("budget", data["budget"]["text"]),
                ("runs", runs),
                ("wall time (s)", float(data["wall_seconds"])),
                ("training time of all runs, summed (s)", data.get("run_seconds")),
            ]
        ),
    ]
    best = rows[0]
    good = bool(best["verdict"]["deploy_multitask"])
    parts.append(
        f'<div class="verdict {"good" if good else "bad"}"><strong>rank 1: '
        f"{esc(best['method'])}</strong> (Δm% {esc(_delta_m(best['delta_m_pct']))}): "
        f"{esc(best['verdict'].get('text', verdict(best)))}</div>"
    )
    parts.append(_table(data, rows))
    parts.append(
        note(
            "A task cell is the multi-task primary metric, mean ± sample std over seeds (Δ% vs "
            "the baseline, status); Δm%: mean over seeds of the per-seed Δm% and its 95 % "
            "Student-t interval; step time: seconds per training step (no evaluation); "
            + ranked_on(data)
            + "."
        )
    )
    parts.append(_plot(data, rows))
    listed = [(f"method {m}", ", ".join(d)) for m, d in data["runs"]["methods"].items()]
    listed += [(f"single-task {t}", ", ".join(d)) for t, d in data["runs"]["single"].items()]
    parts.append("<h3>Run directories</h3>" + facts(listed))
    if shown:
        parts.append(note(f"The run sections below show {shown}."))
    return "".join(parts)
