"""The figures of ``polytask report``, each rendered to a PNG data URI for the HTML page.

Every function takes plain data (run records, JSON dicts already read and checked) and
returns ``data:image/png;base64,...``: the page embeds it, so the report opens offline.
Figures are drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas), never through
pyplot's global state, so building a report leaves no open figures behind.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from matplotlib.figure import Figure

WIDTH = 10.0  # inches at 100 dpi: 1000 px, the page's content width
COLORS = [f"C{i}" for i in range(10)]
Record = dict[str, Any]


def label(text: str) -> str:
    """A file's string made safe for matplotlib, which reads ``$...$`` as mathtext."""
    return text.replace("$", r"\$")


def color(tasks: list[str], task: str) -> str:
    """One colour per task, the same in every figure (config order)."""
    return COLORS[tasks.index(task) % len(COLORS)] if task in tasks else "grey"


def to_uri(fig: Figure) -> str:
    """Render ``fig`` as a PNG data URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def smoothed(values: list[float]) -> list[float]:
    """Exponential moving average with a span of a tenth of the curve (3 to 50 points), so a
    12-step smoke run and a 10,000-step run are both readable."""
    span = min(50, max(3, len(values) // 10))
    alpha, out, ema = 2.0 / (span + 1), [], None
    for v in values:
        ema = v if ema is None else alpha * v + (1 - alpha) * ema
        out.append(ema)
    return out


def _grid(count: int, height: float = 2.6) -> tuple[Figure, list[Any]]:
    """A figure with ``count`` subplots, up to three per row."""
    cols = min(3, count)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(WIDTH, height * rows + 0.4), layout="tight")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def loss_curves(train: list[Record], tasks: list[str]) -> str:
    """Per-task training loss over steps: raw (faint) and smoothed, one panel per task
    (losses of different task types live on different scales)."""
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        pts = [(r["step"], float(r["loss"][task])) for r in train if task in r["loss"]]
        if pts:
            steps, values = zip(*pts, strict=True)
            c = color(tasks, task)
            ax.plot(steps, values, color=c, alpha=0.3, linewidth=0.8, label="raw")
            ax.plot(steps, smoothed(list(values)), color=c, linewidth=1.8, label="smoothed")
            ax.legend(fontsize=7)
        ax.set_title(label(task), fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("training loss", fontsize=8)
        ax.tick_params(labelsize=7)
    return to_uri(fig)


def eval_curves(evals: list[Record], tasks: list[str], metrics: dict[str, str]) -> str:
    """Validation primary metric per task over steps (one line per task)."""
    fig = Figure(figsize=(WIDTH, 3.4), layout="tight")
    ax = fig.subplots()
    for task in tasks:
        pts = [(r["step"], float(r["primary"][task])) for r in evals if task in r["primary"]]
        if pts:
            name = f"{task} ({metrics[task]})" if task in metrics else task
            ax.plot(
                *zip(*pts, strict=True), marker="o", color=color(tasks, task), label=label(name)
            )
    ax.set(xlabel="step", ylabel="validation primary metric")
    ax.legend(fontsize=8)
    return to_uri(fig)


def weight_curves(train: list[Record], tasks: list[str], keys: list[tuple[str, str]]) -> str:
    """Task weights over steps: one panel per logged key (``weights``: the loss weighting's
    output; ``combine``: the aggregator's coefficients on the per-task gradients)."""
    fig, axes = _grid(len(keys), height=3.0)
    for ax, (key, title) in zip(axes, keys, strict=True):
        for task in tasks:
            pts = [(r["step"], float(r[key][task])) for r in train if task in r.get(key, {})]
            if pts:
                ax.plot(*zip(*pts, strict=True), color=color(tasks, task), label=label(task))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    return to_uri(fig)


def cosine_heatmap(steps: list[int], pairs: list[str], rows: list[list[float]]) -> str:
    """Cosine of each task pair's gradients (rows) at each logged step (columns), -1 blue to
    +1 red: interference shows as blue bands, and when it sets in."""
    fig = Figure(figsize=(WIDTH, 1.2 + 0.35 * len(pairs)), layout="tight")
    ax = fig.subplots()
    image = ax.imshow(rows, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(pairs)), [label(p) for p in pairs], fontsize=8)
    ticks = sorted({round(i * (len(steps) - 1) / 5) for i in range(6)}) if len(steps) > 1 else [0]
    ax.set_xticks(ticks, [str(steps[i]) for i in ticks], fontsize=8)
    ax.set_xlabel("step", fontsize=8)
    fig.colorbar(image, ax=ax, label="cosine", fraction=0.03)
    return to_uri(fig)


def cosine_matrix(tasks: list[str], matrix: list[list[float]]) -> str:
    """The mean ``T x T`` gradient-cosine matrix, each cell annotated."""
    size = 1.6 + 0.7 * len(tasks)
    fig = Figure(figsize=(size + 1.2, size), layout="tight")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    names = [label(t) for t in tasks]
    ax.set_xticks(range(len(tasks)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(tasks)), names, fontsize=8)
    if len(tasks) <= 12:
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ink = "white" if abs(v) > 0.6 else "black"
                ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=7, color=ink)
    fig.colorbar(image, ax=ax, fraction=0.05)
    return to_uri(fig)


def routing_bars(routing: dict[str, Any], tasks: list[str]) -> str:
    """Share of each expert per task, one panel per routing block (MMoE gate, switch layer)."""
    names = [t for t in tasks if t in routing["tasks"]] + [
        t for t in routing["tasks"] if t not in tasks
    ]
    blocks = list(dict.fromkeys(b for t in names for b in routing["tasks"][t]["shares"]))
    experts = int(routing["experts"])
    fig, axes = _grid(len(blocks), height=2.8)
    width = 0.8 / max(1, len(names))
    for ax, block in zip(axes, blocks, strict=True):
        for k, task in enumerate(names):
            shares = routing["tasks"][task]["shares"].get(block)
            if shares is not None:
                xs = [e - 0.4 + width * (k + 0.5) for e in range(experts)]
                ax.bar(xs, shares, width, color=color(tasks, task), label=label(task))
        ax.set_xticks(range(experts), [str(e) for e in range(experts)], fontsize=8)
        ax.set_title(label(block), fontsize=10)
        ax.set_xlabel("expert", fontsize=8)
        ax.set_ylabel("share", fontsize=8)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    return to_uri(fig)


def compare_bars(tasks: dict[str, Any]) -> str:
    """:func:`compare_figure` as a PNG data URI."""
    return to_uri(compare_figure(tasks))


def compare_figure(tasks: dict[str, Any]) -> Figure:
    """Per task, the single-task baseline and the multi-task model's metric (mean, with
    ± std error bars when there are several seeds, its value on the bar), one panel per
    task, and a dashed line at the trivial predictor's score where it is defined
    (``baseline``: the majority class, the training mean)."""
    names = list(tasks)
    fig, axes = _grid(len(names), height=2.6)
    for ax, name in zip(axes, names, strict=True):
        entry = tasks[name]
        means = [float(entry[side]["mean"]) for side in ("single", "multi")]
        stds = [entry[side].get("std") for side in ("single", "multi")]
        errors = [float(s) for s in stds] if all(s is not None for s in stds) else None
        bars = ax.bar(["single", "multi"], means, yerr=errors, capsize=6, color=["#999999", "C0"])
        ax.bar_label(bars, labels=[f"{m:.4f}" for m in means], fontsize=7, padding=2)
        baseline = entry.get("baseline") or {}
        if baseline.get("mean") is not None:
            predictor = str(baseline["name"]).partition("_")[0]
            value = float(baseline["mean"])
            line = {"color": "#444444", "linestyle": "--", "linewidth": 1}
            ax.axhline(value, label=f"{predictor} baseline {value:.4f}", **line)
            ax.legend(fontsize=7, loc="lower right")
        ax.margins(y=0.15)  # room for the value labels
        ax.set_title(label(f"{name}: {entry['metric']}"), fontsize=10)
        ax.tick_params(labelsize=8)
    return fig


def leaderboard_figure(names: list[str], means: list[float], cis: list[Any]) -> Figure:
    """Δm% per method (one row each, best on top): the mean as a point, its 95 % interval as
    a horizontal error bar where there is one (``None``: a single seed, no interval); a line
    at 0, the single-task baselines, which every Δm% is measured against."""
    fig = Figure(figsize=(WIDTH, 1.3 + 0.45 * len(names)), layout="tight")
    ax = fig.subplots()
    rows = list(range(len(names)))
    ax.axvline(0, color="#999999", linestyle="--", linewidth=1, label="single-task baselines")
    for y, mean, ci in zip(rows, means, cis, strict=True):
        if ci is not None:
            low, high = float(ci[0]), float(ci[1])
            ax.errorbar(
                [mean], [y], xerr=[[mean - low], [high - mean]], fmt="o", capsize=5, color="C0"
            )
        else:
            ax.plot([mean], [y], "o", color="C0")
        ax.annotate(
            f"{mean:+.2f}%",
            (mean, y),
            xytext=(0, 6),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    ax.set_yticks(rows, [label(n) for n in names], fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.7)  # best-ranked on top, room for its value label
    ax.set_xlabel("Δm% vs the single-task baselines (higher is better)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    if all(ci is None for ci in cis):
        ax.set_title("one seed: no 95 % interval", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return fig


def leaderboard_points(names: list[str], means: list[float], cis: list[Any]) -> str:
    """:func:`leaderboard_figure` as a PNG data URI."""
    return to_uri(leaderboard_figure(names, means, cis))
