"""A rich progress bar for training, showing each task's running loss."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """Steps done / total, elapsed and remaining time, and an EMA of each task's loss."""

    def __init__(self, total: int, done: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        self.ema: dict[str, float] = {}
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            disable=not enabled,
        )
        self._task = self._progress.add_task("", total=total, completed=done)
        if enabled:
            self._progress.start()

    def advance(self, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            old = self.ema.get(name)
            self.ema[name] = value if old is None else 0.95 * old + 0.05 * value
        text = "  ".join(f"{n} {v:.3f}" for n, v in sorted(self.ema.items()))
        self._progress.update(self._task, advance=1, description=text)

    def close(self) -> None:
        if self.enabled:
            self._progress.stop()
