"""The per-task results table printed after training."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def results_table(final: dict[str, Any]) -> Table:
    """Validation and test metrics per task, with the majority-class baseline where it applies."""
    table = Table(title="results (best checkpoint)")
    for column in ("task", "metric", "validation", "test", "majority (test)"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for task, values in final["tasks"].items():
        primary = final["primary_metric"][task]
        metrics = [primary] + [
            m for m in values.get("validation", {}) if m not in (primary, "loss")
        ]
        for i, metric in enumerate(metrics):
            val = values.get("validation", {}).get(metric)
            test = values.get("test", {}).get(metric)
            majority = values.get("majority_accuracy") if metric == "accuracy" else None
            table.add_row(
                task if i == 0 else "",
                metric,
                "" if val is None else f"{val:.4f}",
                "" if test is None else f"{test:.4f}",
                "" if majority is None else f"{majority:.4f}",
            )
    return table


def routing_table(routing: dict[str, Any], title: str = "routing") -> Table:
    """A mixture-of-experts routing report (``report.json``'s ``routing``): one row per task
    and routing block (MMoE gate, switch layer), one column per expert's share."""
    table = Table(title=f"{title} ({routing['architecture']}: {routing['measure']})")
    for column in ("task", "block", "units", *(f"expert {e}" for e in range(routing["experts"]))):
        table.add_column(column, justify="left" if column in ("task", "block") else "right")
    for task, entry in routing["tasks"].items():
        for i, (block, shares) in enumerate(entry["shares"].items()):
            units = f"{entry['count']:,} {entry['unit']}" if i == 0 else ""
            table.add_row(task if i == 0 else "", block, units, *(f"{s:.3f}" for s in shares))
    return table
