"""The per-task results table printed after training."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def results_table(final: dict[str, Any]) -> Table:
    """Validation and test metrics per task, each beside its trivial baseline on that split
    (the majority class, the training mean) where the task type has one."""
    from polytask.report.load import BASELINE_NOTE, baseline_of

    table = Table(title="results (best checkpoint)", caption=BASELINE_NOTE)
    for column in ("task", "metric", "validation", "baseline", "test", "baseline "):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for task, values in final["tasks"].items():
        primary = final["primary_metric"][task]
        metrics = [primary] + [
            m for m in values.get("validation", {}) if m not in (primary, "loss")
        ]
        for i, metric in enumerate(metrics):
            val = values.get("validation", {}).get(metric)
            test = values.get("test", {}).get(metric)
            table.add_row(
                task if i == 0 else "",
                metric,
                "" if val is None else f"{val:.4f}",
                baseline_of(values, "validation", metric),
                "" if test is None else f"{test:.4f}",
                baseline_of(values, "test", metric),
            )
    return table


def data_lines(final: dict[str, Any]) -> list[str]:
    """Per task and split, one line: the rows read, with an empty text (and how many were
    dropped), masked (no label key, empty label) and used (``final_metrics["data"]``),
    marked when above the warning share."""
    from polytask.data.counts import WARN_SHARE, count_line, flagged

    mark = f"  ! more than {WARN_SHARE:.0%} of the split has an empty text or no label"
    return [
        "data " + count_line(task, split, c) + (mark if flagged(c) else "")
        for task, splits in final.get("data", {}).items()
        for split, c in splits.items()
    ]


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


def cosine_table(result: dict[str, Any]) -> Table:
    """Part 1 of check: each pair's gradient cosine over the batches and its reading."""
    warm = result.get("head_warmup", 0)
    cos = Table(
        title=f"1. gradient cosine on the shared parameters ({result['batches']} batches; "
        + (
            f"after {warm} head-only steps)"
            if warm
            else "random heads at initialisation: readings near 0 are uninformative)"
        )
    )
    for column in ("pair", "mean", "std", "min", "max", "reading"):
        cos.add_column(column, justify="left" if column in ("pair", "reading") else "right")
    for p in result["cosine"]["pairs"]:
        cos.add_row(
            f"{p['a']} / {p['b']}",
            *(
                f"{p[k]:+.4f}" if k != "std" else f"{p[k]:.4f}"
                for k in ("mean", "std", "min", "max")
            ),
            p["label"],
        )
    return cos


def check_tables(result: dict[str, Any]) -> list[Table]:
    """The six parts of ``polytask check`` as tables, in reading order."""
    tasks = result["tasks"]
    cos = cosine_table(result)
    scale = Table(title=f"2. raw loss at initialisation — {result['loss_scale']['advice']}")
    for column in ("task", "type", "loss"):
        scale.add_column(column, justify="right" if column == "loss" else "left")
    for task, v in result["loss_scale"]["tasks"].items():
        scale.add_row(task, v["type"], f"{v['loss']:.4g}")
    sampling = result["sampling"]
    every = sampling["tasks_per_step"] == len(tasks)
    plan = Table(
        title=f"3. updates per task over the first {sampling['steps']} steps "
        + (
            "(every task in every step: the sampler does not change the plan)"
            if every
            else f"({sampling['tasks_per_step']} task(s) per step; * configured, ! < 5 %)"
        )
    )
    plan.add_column("sampler")
    for task in tasks:
        plan.add_column(task, justify="right")
    for name, entry in sampling["plans"].items():
        mark = "*" if name == sampling["configured"] else ""
        plan.add_row(
            name + mark,
            *(
                f"{entry['counts'][t]} ({entry['shares'][t]:.0%})"
                + ("!" if t in entry["starved"] else "")
                for t in tasks
            ),
        )
    data = Table(title=f"4. training examples (imbalance {result['datasets']['imbalance']:.1f}x)")
    for column in ("task", "examples"):
        data.add_column(column, justify="right" if column == "examples" else "left")
    for task, n in result["datasets"]["sizes"].items():
        data.add_row(task, f"{n:,}")
    recs = Table(title="5. recommendations")
    for column in ("topic", "advice", "evidence"):
        recs.add_column(column)
    for r in result["recommendations"]:
        recs.add_row(r["topic"], r["advice"], r["evidence"])
    return [cos, scale, plan, data, recs, outcome_table(result["outcome"])]


def outcome_table(outcome: dict[str, Any]) -> Table:
    """Part 6 of check: each task's expected outcome under sharing, with the forecast."""
    table = Table(
        title="6. expected outcome of sharing", caption=f"forecast: {outcome['forecast']}"
    )
    for column in ("task", "outcome", "evidence"):
        table.add_column(column)
    for task, row in outcome["tasks"].items():
        table.add_row(task, row["outcome"], row["evidence"])
    return table
