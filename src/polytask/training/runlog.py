"""The run directory's logs: ``metrics.jsonl`` (one JSON object per line) and ``curves.png``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polytask.training.tracking import Tracking


class MetricsLog:
    """Appends one JSON record per line and flushes it, so a crash loses at most a line.

    ``enabled=False`` (every process but the main one of a distributed run) writes nothing.
    ``tracker``: also gets every record (``train.report_to``, :mod:`polytask.training.tracking`)
    and is ended by :meth:`close`.
    """

    def __init__(self, path: Path, enabled: bool = True, tracker: Tracking | None = None) -> None:
        self.path, self.tracker = path, tracker
        self._fh = open(path, "a", encoding="utf-8") if enabled else None  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(record) + "\n")
            self._fh.flush()
        if self.tracker is not None:
            self.tracker.log(record)

    def close(self, final: dict[str, Any] | None = None) -> None:
        """Close the file; ``final`` (``final_metrics.json``): its test metrics go to the
        tracker before it ends."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.tracker is not None:
            self.tracker.end(final)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a metrics log (a torn last line after a crash is skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text("utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_after(path: Path, step: int) -> None:
    """Keep only records up to ``step`` (used on resume: later ones are replayed)."""
    kept = [r for r in read_records(path) if int(r.get("step", 0)) <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), "utf-8")
    os.replace(tmp, path)


def plot_curves(records: list[dict[str, Any]], out: Path, smooth: float = 0.9) -> None:
    """Per-task training loss (exponentially smoothed) and validation metrics over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("event") == "train" and "skipped" not in r]
    evals = [r for r in records if r.get("event") == "eval"]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    tasks = sorted({t for r in train for t in r["loss"]})
    for task in tasks:
        steps, values, ema = [], [], None
        for r in train:
            if task in r["loss"]:
                v = r["loss"][task]
                ema = v if ema is None else smooth * ema + (1 - smooth) * v
                steps.append(r["step"])
                values.append(ema)
        ax_loss.plot(steps, values, label=task)
    ax_loss.set(title="training loss per task (smoothed)", xlabel="step", ylabel="loss")
    ax_loss.legend()
    for task in tasks:
        pts = [(r["step"], r["primary"][task]) for r in evals if task in r.get("primary", {})]
        if pts:
            ax_val.plot(*zip(*pts, strict=True), marker="o", label=task)
    ax_val.set(title="validation metric per task", xlabel="step", ylabel="primary metric")
    if evals:
        ax_val.legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
