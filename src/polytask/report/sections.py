"""HTML building blocks of ``polytask report`` and its two decision sections: the
multi-task vs single-task comparison (``compare.json``) and the pre-flight check
(``check.json``).

Every string that comes from a file goes through :func:`html.escape` here (``esc``);
callers pass raw text and get markup back.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from polytask.errors import RunDirError
from polytask.report.plots import compare_bars

Cell = str | int | float | None


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Report a file whose JSON parses but lacks a field or has the wrong shape as one line
    naming it, rather than a traceback from deep inside a plot."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise RunDirError(
            f"{path}: not the expected format ({type(exc).__name__}: {exc})"
        ) from None


def esc(value: Any) -> str:
    """Any value from a file, as HTML text."""
    return html.escape(str(value), quote=True)


def fmt(value: Cell, digits: int = 4) -> str:
    """A table cell's text: ints with thousands separators, floats to ``digits`` places."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _align(value: Cell) -> str:
    """Numbers right-aligned (``num``), text and yes/no left (``txt``)."""
    return "num" if isinstance(value, int | float) and not isinstance(value, bool) else "txt"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    classes: Sequence[str] = (),
    digits: int = 4,
) -> str:
    """An HTML table; cells are escaped, floats shown to ``digits`` places; ``classes`` (one
    per row, optional) style rows."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{esc(classes[i])}"' if i < len(classes) and classes[i] else ""
        cells = "".join(f'<td class="{_align(c)}">{esc(fmt(c, digits))}</td>' for c in row)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fact(value: Cell) -> str:
    """A single fact's text: floats to four significant digits (seconds, ratios)."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return fmt(value)


def facts(pairs: Sequence[tuple[str, Cell]]) -> str:
    """A definition list of ``(name, value)`` facts; empty values are left out."""
    items = "".join(
        f"<dt>{esc(k)}</dt><dd>{esc(_fact(v))}</dd>" for k, v in pairs if v not in (None, "")
    )
    return f"<dl>{items}</dl>"


def note(text: str) -> str:
    """The short note a section shows when its data does not exist."""
    return f'<p class="note">{esc(text)}</p>'


def figure(uri: str, alt: str, caption: str) -> str:
    """An embedded plot (``uri`` is a data URI made by :mod:`polytask.report.plots`)."""
    return (
        f'<figure><img class="plot" src="{esc(uri)}" alt="{esc(alt)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def section(ident: str, title: str, body: str) -> str:
    return f'<section id="{esc(ident)}"><h2>{esc(title)}</h2>{body}</section>'


def _mean_std(entry: dict[str, Any]) -> str:
    mean, std = entry.get("mean"), entry.get("std")
    if mean is None:
        return ""
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def compare_body(data: dict[str, Any]) -> str:
    """``compare.json``: per-task single vs multi table, Δm%, verdict, cost, bars."""
    tasks = data["tasks"]
    seeds = data.get("seeds", [])
    verdict = data.get("verdict", {})
    deploy = bool(verdict.get("deploy_multitask"))
    parts = [
        facts(
            [
                ("config", data.get("config")),
                ("seeds", ", ".join(str(s) for s in seeds)),
                ("budget", data.get("budget", {}).get("text", "")),
            ]
        ),
        f'<div class="verdict {"good" if deploy else "bad"}"><strong>verdict:</strong> '
        f"{esc(verdict.get('text', ''))}</div>",
    ]
    rows: list[list[Cell]] = []
    for name, entry in tasks.items():
        rows.append(
            [
                name,
                entry["metric"],
                bool(entry.get("critical")),
                _mean_std(entry["single"]),
                _mean_std(entry["multi"]),
                f"{entry['delta_pct']:+.2f}",
                entry.get("status", ""),
            ]
        )
    headers = ["task", "metric", "critical", "single-task", "multi-task", "Δ%", "status"]
    parts.append(table(headers, rows, [str(e.get("status", "")) for e in tasks.values()]))
    if "delta_m_pct" in data:
        parts.append(
            f'<p class="headline">Δm = {float(data["delta_m_pct"]):+.2f}% '
            "(per-metric relative change, higher is better, averaged over tasks)</p>"
        )
    if verdict.get("hurt"):
        parts.append(note("multi-task hurts: " + ", ".join(str(t) for t in verdict["hurt"])))
    parts.append(_cost_table(data))
    caption = (
        "test metric per task; error bars: ± std over seeds"
        if len(seeds) > 1
        else "test metric per task (one seed: no error bars)"
    ) + "; dashed line: the trivial predictor (majority class, training mean)"
    undefined = [
        f"{n} ({e['metric']})"
        for n, e in tasks.items()
        if e.get("baseline") and e["baseline"].get("mean") is None
    ]
    if undefined:
        caption += f"; none for {', '.join(undefined)}: undefined for a constant prediction"
    parts.append(figure(compare_bars(tasks), "single-task vs multi-task per task", caption))
    runs = data.get("runs", {})
    listed = [("multi-task", ", ".join(runs.get("multi", [])))] + [
        (f"single-task {t}", ", ".join(dirs)) for t, dirs in runs.get("single", {}).items()
    ]
    parts.append("<h3>Run directories</h3>" + facts(listed))
    return "".join(parts)


def _cost_table(data: dict[str, Any]) -> str:
    """Parameters and training seconds of the multi-task model and each baseline."""
    params, seconds = data.get("params", {}), data.get("seconds", {})
    if not params and not seconds:
        return ""
    p_single, s_single = params.get("single", {}), seconds.get("single", {})
    rows: list[list[Cell]] = [["multi-task", params.get("multi"), seconds.get("multi")]]
    rows += [[f"single-task {t}", p_single.get(t), s_single.get(t)] for t in data["tasks"]]
    rows.append(["all single-task", params.get("single_total"), seconds.get("single_total")])
    return "<h3>Cost</h3>" + table(["model", "parameters", "training seconds"], rows, digits=1)


def check_body(data: dict[str, Any]) -> str:
    """``check.json``: the expected outcome of sharing, the recommendations, gradient-cosine
    pairs, loss scales, sampling plan and dataset sizes; each part only when the file has it."""
    parts = [
        facts(
            [
                ("config", data.get("config")),
                ("tasks", ", ".join(str(t) for t in data.get("tasks", []))),
                ("batches", data.get("batches")),
                ("seconds", data.get("seconds")),
            ]
        )
    ]
    if outcome := data.get("outcome"):
        rows: list[list[Cell]] = [
            [t, o["outcome"], o["evidence"]] for t, o in outcome["tasks"].items()
        ]
        parts.append(
            "<h3>Expected outcome of sharing</h3>"
            + note(f"forecast: {outcome['forecast']}")
            + table(["task", "outcome", "evidence"], rows)
        )
    if recs := data.get("recommendations"):
        rows = [[r["topic"], r["advice"], r.get("evidence", "")] for r in recs]
        parts.append("<h3>Recommendations</h3>" + table(["topic", "advice", "evidence"], rows))
    if pairs := data.get("cosine", {}).get("pairs"):
        rows = [
            [p["a"], p["b"], p["mean"], p["std"], p["min"], p["max"], p["label"]] for p in pairs
        ]
        classes = [str(p["label"]).split()[-1] for p in pairs]
        headers = ["task a", "task b", "mean cosine", "std", "min", "max", "reading"]
        parts.append("<h3>Gradient cosine at initialisation</h3>" + table(headers, rows, classes))
    if scale := data.get("loss_scale"):
        rows = [[t, v["loss"], v["type"]] for t, v in scale["tasks"].items()]
        parts.append(
            "<h3>Loss scale at initialisation</h3>"
            + table(["task", "loss", "type"], rows)
            + facts([("largest / smallest", scale.get("ratio")), ("advice", scale.get("advice"))])
        )
    if sampling := data.get("sampling"):
        parts.append(_sampling(sampling))
    if datasets := data.get("datasets"):
        rows = [[t, n] for t, n in datasets["sizes"].items()]
        parts.append(
            "<h3>Dataset sizes</h3>"
            + table(["task", "training examples"], rows)
            + facts([("imbalance (largest / smallest)", datasets.get("imbalance"))])
        )
    return "".join(parts)


def _sampling(sampling: dict[str, Any]) -> str:
    """Share of updates per task over the first steps, per sampler; starved tasks flagged."""
    plans = sampling["plans"]
    tasks = list(dict.fromkeys(t for plan in plans.values() for t in plan["shares"]))
    configured = sampling.get("configured")
    rows: list[list[Cell]] = []
    for name, plan in plans.items():
        cells: list[Cell] = [f"{name} (configured)" if name == configured else name]
        for task in tasks:
            share = plan["shares"].get(task)
            count = plan.get("counts", {}).get(task)
            text = "" if share is None else f"{100 * share:.1f}% ({count})"
            cells.append(text + (" starved" if task in plan.get("starved", []) else ""))
        rows.append(cells)
    classes = ["starved" if plan.get("starved") else "" for plan in plans.values()]
    steps = sampling.get("steps")
    title = f"<h3>Sampling plan (share of updates over the first {esc(steps)} steps)</h3>"
    return title + table(["sampler", *tasks], rows, classes)
