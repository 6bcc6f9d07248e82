"""Training progress with no terminal: plain periodic lines (issue 22 item 9)."""

from __future__ import annotations

import io
import re

from polytask.training.progress import TrainProgress, _duration

LINE = re.compile(r"^step (\d+)/(\d+) \((\d+)%\)(  \w+ \d+\.\d{3})*  \d+\.\d\d steps/s  ETA \S+$")


def run(total: int, done: int = 0, enabled: bool = True) -> list[str]:
    buf = io.StringIO()  # not a terminal, as stdout redirected to a file
    progress = TrainProgress(total, done, enabled=enabled, stream=buf)
    assert not progress.live
    for step in range(done, total):
        progress.advance({"sent": 1.0 / (step + 1)} if step % 5 else {})  # {}: a skipped step
    progress.close()
    return buf.getvalue().splitlines()


def test_about_twenty_lines_and_the_last_step() -> None:
    lines = run(205)
    assert all(LINE.match(line) for line in lines), lines[:3]
    steps = [int(LINE.match(line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert steps == [*range(10, 201, 10), 205]
    assert lines[-1].startswith("step 205/205 (100%)  sent ")


def test_a_resumed_run_counts_from_its_checkpoint() -> None:
    lines = run(40, done=30)
    assert [line.split()[1] for line in lines] == ["32/40", "34/40", "36/40", "38/40", "40/40"]


def test_quiet_prints_nothing() -> None:
    assert run(12, enabled=False) == []


def test_first_step_skipped_has_no_losses_yet() -> None:
    buf = io.StringIO()
    progress = TrainProgress(3, stream=buf)
    progress.advance({})
    assert LINE.match(buf.getvalue().strip()), buf.getvalue()


def test_duration() -> None:
    assert [_duration(s) for s in (4.4, 187, 7500)] == ["4s", "3m07s", "2h05m"]
