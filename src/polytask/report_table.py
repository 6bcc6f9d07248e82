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
