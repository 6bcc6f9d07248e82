"""The run sections of ``polytask report``: summary and final metrics, training curves, task
weights, gradient cosine over time, mixture-of-experts routing.

Input is one run directory's files as read by :func:`polytask.report.html.load_run`
(``config.yaml``, ``final_metrics.json``, ``metrics.jsonl``, ``report.json``); output is
``(id, title, html)`` per section. Cosine rows and columns follow the config's task order.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polytask.report import plots
from polytask.report.load import BASELINE_NOTE, baseline_of
from polytask.report.sections import Cell, facts, figure, note, reading, table

if TYPE_CHECKING:
    from polytask.report.load import Run

Section = tuple[str, str, str]
SPLITS = ("validation", "test")
#: the reading of a mean gradient cosine (docs/check.md; the same thresholds as ``polytask check``)
THRESHOLD = 0.1


def run_sections(run: Run) -> list[Section]:
    """Every run section, each with its plots or a note saying why there are none."""
    train = [r for r in run.records if r.get("event") == "train" and "skipped" not in r]
    evals = [r for r in run.records if r.get("event") == "eval"]
    log = run.path / "metrics.jsonl"
    with reading(run.path / "final_metrics.json"):
        head = summary(run, train)
    with reading(log):
        middle = [curves(run, train, evals), weights(run, train), cosine(run, train)]
    with reading(run.path / "report.json"):
        tail = routing(run)
    titles = [
        ("summary", "Run summary"),
        ("curves", "Training curves"),
        ("weights", "Task weights"),
        ("cosine", "Gradient cosine"),
        ("routing", "Expert routing"),
    ]
    return [(i, t, b) for (i, t), b in zip(titles, [head, *middle, tail], strict=True)]


def _method(entry: Any) -> str:
    """``{name: pcgrad, seed: 3}`` → ``pcgrad (seed=3)``."""
    if not isinstance(entry, dict):
        return str(entry)
    rest = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "name" and v is not None)
    return f"{entry.get('name')} ({rest})" if rest else str(entry.get("name"))


#: the registries' manifest, read as data (the report imports no config): which arguments
#: each sampler takes
MANIFEST = Path(__file__).resolve().parents[1] / "config" / "registries.json"


def _sampler_arguments(name: str) -> set[str] | None:
    """The constructor arguments of sampler ``name`` (None: the manifest does not list it)."""
    try:
        entries = json.loads(MANIFEST.read_text("utf-8"))["registries"]["samplers"]["entries"]
    except (OSError, ValueError, KeyError):
        return None
    return set(entries[name].get("args", {})) if name in entries else None


def _sampler(entry: Any, ran: Any = None) -> str:
    """The sampler and its own arguments, or that every step trains every task (no sampler).

    ``ran``: ``final_metrics["sampler"]``, what was built (defaults filled). Without it, the
    config's entry less any other sampler's arguments (a ``config.yaml`` written before
    samplers were bound to their constructors lists ``alpha_start``/``alpha_end`` for all)."""
    entry = ran if isinstance(ran, dict) else entry
    if isinstance(entry, dict) and "name" in entry and entry["name"] is None:
        return "none: every task in every step"
    own = _sampler_arguments(str(entry.get("name"))) if isinstance(entry, dict) else None
    if own is not None and not isinstance(ran, dict):
        entry = {k: v for k, v in entry.items() if k in ("name", "tasks_per_step") or k in own}
    return _method(entry)


def _tasks_line(run: Run, primary: str | None) -> str:
    out = []
    for task in run.config["tasks"]:
        tags = [str(task.get("type", ""))]
        tags += ["primary"] if task["name"] == primary else []
        tags += ["auxiliary"] if task.get("auxiliary") else []
        out.append(f"{task['name']} ({', '.join(t for t in tags if t)})")
    return "; ".join(out)


def summary(run: Run, train: list[dict[str, Any]]) -> str:
    """What was trained and how (config), how long, how big, and the final metrics table."""
    cfg, final = run.config, run.final or {}
    primary = final.get("primary_task") or cfg.get("train", {}).get("primary_task")
    params = final.get("params", {})
    per_task = params.get("per_task", {})
    steps = final.get("steps", train[-1]["step"] if train else None)
    seen = final.get("examples_seen", {})
    parts = [
        facts(
            [
                ("directory", str(run.path)),
                ("tasks", _tasks_line(run, primary)),
                ("encoder", cfg.get("encoder", {}).get("name")),
                ("architecture", _method(cfg.get("architecture", {}))),
                ("sampler", _sampler(cfg.get("sampler", {}), final.get("sampler"))),
                ("loss weighting", _method(cfg.get("weighting", {"name": "equal"}))),
                ("gradient aggregator", _method(cfg.get("aggregator", {"name": "sum"}))),
                ("steps", steps),
                ("best step", final.get("best_step")),
                ("training time (s)", final.get("train_seconds")),
                ("examples seen", ", ".join(f"{t} {n:,}" for t, n in seen.items())),
                ("parameters (total)", params.get("total")),
                ("parameters (shared)", params.get("shared")),
                ("parameters (trainable)", params.get("trainable")),
                ("parameters per task", ", ".join(f"{t} {n:,}" for t, n in per_task.items())),
            ]
        )
    ]
    parts.append("<h3>Final metrics (best checkpoint)</h3>")
    if run.final is None:
        parts.append(note("No final_metrics.json: the run has not finished (or was stopped)."))
    else:
        parts.append(_metrics_table(run.final))
    return "".join(parts)


def _metrics_table(final: dict[str, Any]) -> str:
    """Validation and test metrics per task, primary metric first (as ``polytask train``
    prints them), each beside its trivial baseline on that split where there is one."""
    rows: list[list[Cell]] = []
    classes: list[str] = []
    for task, values in final["tasks"].items():
        primary = final["primary_metric"][task]
        val, test = values.get("validation", {}), values.get("test", {})
        metrics = [primary] + [m for m in {**val, **test} if m not in (primary, "loss")]
        for i, metric in enumerate(metrics):
            first, base = task if i == 0 else "", [baseline_of(values, s, metric) for s in SPLITS]
            rows.append([first, metric, val.get(metric), base[0], test.get(metric), base[1]])
            classes.append("primary" if i == 0 else "")
    headers = ["task", "metric", "validation", "baseline (validation)", "test", "baseline (test)"]
    return table(headers, rows, classes) + note(BASELINE_NOTE + ".")


def curves(run: Run, train: list[dict[str, Any]], evals: list[dict[str, Any]]) -> str:
    """Per-task training loss (raw and smoothed) and the validation primary metric."""
    parts = []
    if train:
        uri = plots.loss_curves(train, run.tasks)
        caption = "training loss per task over steps: raw (faint) and smoothed (moving average)"
        parts.append(figure(uri, "training loss per task", caption))
    else:
        parts.append(note("No training records in metrics.jsonl."))
    if any(r.get("primary") for r in evals):
        metrics = (run.final or {}).get("primary_metric", {})
        uri = plots.eval_curves(evals, run.tasks, metrics)
        parts.append(figure(uri, "validation primary metric", "validation primary metric per task"))
    else:
        parts.append(note("No validation records yet (evaluation runs every train.eval_every)."))
    return "".join(parts)


def weights(run: Run, train: list[dict[str, Any]]) -> str:
    """The loss weighting's task weights and the aggregator's combination coefficients."""
    titles = {
        "weights": "loss weighting: weight per task",
        "combine": "gradient aggregator: coefficient per task",
    }
    keys = [(k, t) for k, t in titles.items() if any(k in r for r in train)]
    if not keys:
        return note(
            "No task weights were logged: steps that train a subset of the tasks use the "
            "static weights (weights are logged when every step sees every task)."
        )
    constant = {k: c for k, _ in keys if (c := _constant(train, k, run.tasks)) is not None}
    notes = [
        note(
            f"{title}: constant over the logged steps ("
            + ", ".join(f"{t} {v:g}" for t, v in constant[key].items())
            + "), not plotted."
        )
        for key, title in keys
        if key in constant
    ]
    keys = [(k, t) for k, t in keys if k not in constant]
    if not keys:
        return "".join(notes)
    caption = "task weights over steps (" + "; ".join(t for _, t in keys) + ")"
    uri = plots.weight_curves(train, run.tasks, keys)
    return "".join(notes) + figure(uri, "task weights over time", caption)


def _constant(train: list[dict[str, Any]], key: str, tasks: list[str]) -> dict[str, float] | None:
    """Each task's value of ``key`` when none moved over the logged steps (to 1e-9 of its
    size: equal or static weights draw flat lines), else None."""
    values = {t: [float(r[key][t]) for r in train if t in r.get(key, {})] for t in tasks}
    if any(v and max(v) - min(v) > 1e-9 * max(1.0, abs(v[0])) for v in values.values()):
        return None
    return {t: v[0] for t, v in values.items() if v}


def cosine_pairs(
    tasks: list[str], train: list[dict[str, Any]]
) -> tuple[list[int], list[str], list[list[float]], list[list[float]]]:
    """From the train records that logged ``cosine``: their steps, the task-pair names, one
    row of cosines over those steps per pair, and the mean ``T x T`` matrix."""
    logged = [r for r in train if r.get("cosine") is not None]
    size = len(tasks)
    for r in logged:
        if len(r["cosine"]) != size or any(len(row) != size for row in r["cosine"]):
            raise ValueError(
                f"step {r['step']}: cosine is not {size}x{size} (config.yaml has {size} tasks)"
            )
    index = list(combinations(range(size), 2))
    names = [f"{tasks[i]} · {tasks[j]}" for i, j in index]
    rows = [[float(r["cosine"][i][j]) for r in logged] for i, j in index]
    mean = [
        [sum(float(r["cosine"][i][j]) for r in logged) / len(logged) for j in range(size)]
        for i in range(size)
    ]
    return [int(r["step"]) for r in logged], names, rows, mean


def _reading(value: float) -> str:
    if value > THRESHOLD:
        return "positive transfer"
    return "interference" if value < -THRESHOLD else "neutral"


def cosine(run: Run, train: list[dict[str, Any]]) -> str:
    """Per pair, cosine of the per-task gradients on the shared parameters over steps, and
    the mean matrix; a table of each pair's mean, share of negative steps and reading."""
    if len(run.tasks) < 2:
        return note("One task: there is no pair of gradients to compare.")
    if not any(r.get("cosine") is not None for r in train):
        return note(
            "No gradient cosines were logged: they come with per-task gradients (a gradient "
            "aggregator other than sum, on steps that see every task) or every "
            "train.monitor_every steps."
        )
    steps, names, rows, mean = cosine_pairs(run.tasks, train)
    heat = figure(
        plots.cosine_heatmap(steps, names, rows),
        "gradient cosine per task pair over steps",
        f"cosine per task pair (rows) at each of the {len(steps)} logged steps (columns); "
        "blue = conflicting gradients, red = aligned",
    )
    matrix = figure(
        plots.cosine_matrix(run.tasks, mean),
        "mean gradient cosine matrix",
        f"mean cosine over the logged steps {steps[0]}-{steps[-1]}",
    )
    table_rows: list[list[Cell]] = []
    for name, values in zip(names, rows, strict=True):
        avg = sum(values) / len(values)
        negative = sum(v < 0 for v in values) / len(values)
        table_rows.append(
            [name, avg, min(values), max(values), f"{100 * negative:.0f}%", _reading(avg)]
        )
    classes = [str(r[-1]).split()[-1] for r in table_rows]
    headers = ["pair", "mean", "min", "max", "steps with cosine < 0", "reading"]
    return heat + matrix + table(headers, table_rows, classes)


def routing(run: Run) -> str:
    """The mixture-of-experts architectures' routing report (``report.json``, test split)."""
    data = (run.report or {}).get("routing")
    if not data or not data.get("tasks"):
        return note(
            "No routing: the architecture has no gates "
            "(mmoe, switch, cgc, ple, dselect_k and cross_stitch report theirs)."
        )
    caption = (
        f"share of each expert per task on the test split ({data.get('measure', '')}); "
        "one panel per routing block"
    )
    rows: list[list[Cell]] = [
        [t, e.get("count"), e.get("unit", "")] for t, e in data["tasks"].items()
    ]
    return figure(plots.routing_bars(data, run.tasks), "expert share per task", caption) + table(
        ["task", "routed units", "unit"], rows
    )
