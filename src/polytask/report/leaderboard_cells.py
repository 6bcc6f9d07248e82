"""The cells of a leaderboard table as text, shared by ``leaderboard.md``
(:mod:`polytask.experiments.leaderboard_text`) and the HTML report
(:mod:`polytask.report.leaderboard`): pure string formatting of ``leaderboard.json``'s dicts."""

from __future__ import annotations

from typing import Any


def stats(entry: dict[str, Any]) -> str:
    """``mean ± std`` over seeds (the mean alone with one seed)."""
    mean, std = float(entry["mean"]), entry.get("std")
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {float(std):.4f}"


def delta_m(entry: dict[str, Any]) -> str:
    """Δm% with its 95 % interval when there is one."""
    mean, ci = float(entry["mean"]), entry.get("ci95")
    if ci is None:
        return f"{mean:+.2f}"
    return f"{mean:+.2f} [{float(ci[0]):+.2f}, {float(ci[1]):+.2f}]"


def validation_delta_m(row: dict[str, Any]) -> str:
    """The validation Δm% the rank is chosen on ("—" in a leaderboard.json from before)."""
    entry = row.get("delta_m_pct_validation")
    return "—" if entry is None else delta_m(entry)


def ranked_on(result: dict[str, Any]) -> str:
    """What the ranks were chosen on."""
    if all("delta_m_pct_validation" in r for r in result["methods"]):
        return "rank: by mean validation Δm% (the method is chosen on validation; the rest is test)"
    return "rank: by mean test Δm% (this leaderboard.json predates the validation record)"


def task_cell(row: dict[str, Any]) -> str:
    """A task's multi-task primary metric, its Δ% and status."""
    delta = row.get("delta_pct")
    shown = "n/a" if delta is None else f"{float(delta):+.2f}%"
    return f"{stats(row['multi'])} ({shown}, {row['status']})"


def verdict(row: dict[str, Any]) -> str:
    """``deploy multi-task`` or ``keep single-task (<hurt tasks> worse)``."""
    if row["verdict"]["deploy_multitask"]:
        return "deploy multi-task"
    return "keep single-task (" + ", ".join(str(t) for t in row["verdict"]["hurt"]) + " worse)"
