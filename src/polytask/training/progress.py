"""Training progress: a rich bar on a terminal, plain periodic lines otherwise.

Redirected to a file (no TTY), a live bar would write its redraws as fragments; there each
report is one whole line instead: ``step 40/200 (20%)  sent 0.512  tags 0.303  2.10 steps/s
ETA 1m16s``."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: plain lines: about this many over a run (every ``total // LINES`` steps), and the last step
LINES = 20


class TrainProgress:
    """Steps done / total, elapsed and remaining time, and an EMA of each task's loss.

    ``stream``: where the plain lines go (default stdout) when it is not a terminal."""

    def __init__(
        self, total: int, done: int = 0, enabled: bool = True, stream: TextIO | None = None
    ) -> None:
        self.enabled, self.total, self.done = enabled, total, done
        self.ema: dict[str, float] = {}
        self.stream = stream or sys.stdout
        console = Console(file=self.stream)
        self.live = enabled and (console.is_terminal or console.is_jupyter)
        self.every = max(1, total // LINES)
        self._started, self._first = time.perf_counter(), done
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=console,
            disable=not self.live,
        )
        self._task = self._progress.add_task("", total=total, completed=done)
        if self.live:
            self._progress.start()

    def advance(self, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            old = self.ema.get(name)
            self.ema[name] = value if old is None else 0.95 * old + 0.05 * value
        self.done += 1
        text = "  ".join(f"{n} {v:.3f}" for n, v in sorted(self.ema.items()))
        self._progress.update(self._task, advance=1, description=text)
        if self.enabled and not self.live and self._due():
            self.stream.write(self.line(text) + "\n")
            self.stream.flush()

    def _due(self) -> bool:
        return self.done % self.every == 0 or self.done == self.total

    def line(self, losses: str) -> str:
        """One plain report: step, losses (EMA), steps per second since this process
        started (a resumed run counts its own steps only), time left at that rate."""
        seconds = time.perf_counter() - self._started
        rate = (self.done - self._first) / seconds if seconds > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else None
        percent = 100 * self.done // max(1, self.total)
        eta = "?" if left is None else _duration(left)
        parts = [f"step {self.done}/{self.total} ({percent}%)", losses, f"{rate:.2f} steps/s"]
        return "  ".join([p for p in parts if p] + [f"ETA {eta}"])

    def close(self) -> None:
        if self.live:
            self._progress.stop()


def _duration(seconds: float) -> str:
    """``45s``, ``3m07s``, ``2h05m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
