"""``polytask report`` on a leaderboard directory (``polytask compare --methods``): the
Leaderboard section's table (rank order, numbers from ``leaderboard.json``), its Δm% plot
(points, 95 % intervals, the line at 0), one seed (no interval, a note), the run shown (the
best-ranked method's first seed) or a note when it is missing, and bad input as one line.

``leaderboard.json`` is written by hand in the shape of
:func:`polytask.experiments.leaderboard.leaderboard` (two tasks, three methods); the run is a
real tiny-encoder run copied to ``method-<best>/seed-<first seed>``.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from matplotlib.container import ErrorbarContainer
from PIL import Image

from polytask.config.run import config_from_dict
from polytask.errors import RunDirError
from polytask.report.html import load_inputs, render, write_report
from polytask.report.plots import leaderboard_figure
from polytask.train import train
from tests.conftest import base_config, regression_rows, sentiment_rows, write_jsonl
from tests.unit import test_report_html as html_tests
from tests.unit.test_cli import assert_user_error, polytask

PNG = b"\x89PNG\r\n\x1a\n"
TASKS = ["sent", "reg"]
#: method: (rank, per-seed Δm%, its 95 % interval, step time ratio, hurt critical tasks)
METHODS = {
    "equal": (2, [1.5, 2.5], [-4.3531, 8.3531], 1.0, []),
    "slow": (3, [-9.0, -5.0], [-32.4124, 18.4124], 0.645, ["sent"]),
    "pcgrad": (1, [3.0, 5.0], [-8.7062, 16.7062], 1.08, []),
}
#: per task: metric, single-task mean; per method the multi-task mean
METRICS = {"sent": ("accuracy", 0.61), "reg": ("pearson", 0.5)}
MULTI = {
    "equal": {"sent": 0.62, "reg": 0.51},
    "slow": {"sent": 0.55, "reg": 0.45},
    "pcgrad": {"sent": 0.63, "reg": 0.52},
}


def stats(mean: float, seeds: int) -> dict[str, Any]:
    if seeds == 1:
        return {"mean": mean, "std": None, "values": [mean]}
    return {"mean": mean, "std": 0.02, "values": [mean - 0.01, mean + 0.01]}


def method_row(name: str, seeds: int) -> dict[str, Any]:
    rank, deltas, ci, ratio, hurt = METHODS[name]
    tasks = {}
    for task, (metric, single) in METRICS.items():
        multi = MULTI[name][task]
        status = "worse" if task in hurt else "better" if multi > single + 0.015 else "matches"
        tasks[task] = {
            "metric": metric,
            "split": "test",
            "critical": task == "sent",
            "single": stats(single, seeds),
            "multi": stats(multi, seeds),
            "delta_pct": round(100 * (multi - single) / single, 4),
            "status": status,
        }
    values = deltas[:seeds]
    mean = sum(values) / len(values)
    return {
        "method": name,
        "overrides": {"aggregator": {"name": name}},
        "tasks": tasks,
        "delta_m_pct": {
            "mean": mean,
            "std": None if seeds == 1 else 1.4142,
            "ci95": None if seeds == 1 else ci,
            "values": values,
        },
        **(  # two seeds: the rank's validation Δm% is on record; one seed: an older file
            {}
            if seeds == 1
            else {"delta_m_pct_validation": {"mean": mean + 0.25, "std": 1.0, "ci95": None}}
        ),
        "step_seconds": 0.04 * ratio,
        "verdict": {
            "deploy_multitask": not hurt,
            "text": f"keep single-task: multi-task hurts {hurt}" if hurt else "deploy multi-task",
            "hurt": hurt,
        },
        "rank": rank,
        "step_time_vs": "equal",
        "step_time_ratio": ratio,
    }


def sample_leaderboard(seeds: int = 2) -> dict[str, Any]:
    """Methods in file order equal, slow, pcgrad: the report orders them by ``rank``."""
    seed_list = [7, 8][:seeds]
    return {
        "config": "two.yaml",
        "seeds": seed_list,
        "primary_task": "sent",
        "auxiliary": [],
        "baselines": {
            t: {"metric": m, "split": "test", "single": stats(s, seeds)}
            for t, (m, s) in METRICS.items()
        },
        "budget": {"mode": "matched", "text": "matched: each baseline trains as many steps"},
        "methods": [method_row(name, seeds) for name in METHODS],
        "wall_seconds": 16.6,
        "run_seconds": 41.3,
        "runs_trained": 8,
        "runs_reused": 2,
        "runs": {
            "methods": {m: [f"method-{m}/seed-{s}" for s in seed_list] for m in METHODS},
            "single": {t: [f"single-{t}/seed-{s}" for s in seed_list] for t in TASKS},
        },
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    """Four steps on two synthetic tasks."""
    root = tmp_path_factory.mktemp("leaderboard-run")
    makers = {"sent": sentiment_rows, "reg": regression_rows}
    sizes = {"train": 32, "validation": 16, "test": 16}
    files = {
        task: {
            split: write_jsonl(root / "data" / task / f"{split}.jsonl", make(n, len(split)))
            for split, n in sizes.items()
        }
        for task, make in makers.items()
    }
    data = base_config(tiny_encoder, {**files, "tags": files["sent"]}, max_steps=4, eval_every=2)
    data["tasks"] = [t for t in data["tasks"] if t["name"] in TASKS]
    train(config_from_dict(data), root / "run", show_progress=False)
    return root / "run"


def make_board(run_dir: Path, folder: Path, seeds: int = 2) -> Path:
    """A leaderboard directory whose best-ranked method's first-seed run is ``run_dir``."""
    folder.mkdir()
    (folder / "leaderboard.json").write_text(json.dumps(sample_leaderboard(seeds)))
    ignore = shutil.ignore_patterns("model*", "checkpoint*")
    shutil.copytree(run_dir, folder / "method-pcgrad" / "seed-7", ignore=ignore)
    return folder


class Page(HTMLParser):
    """Per section id: its table rows (cell texts), image sources, captions and text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.sections: dict[str, dict[str, Any]] = {}
        self.current: dict[str, Any] | None = None
        self.cell: list[str] | None = None
        self.caption = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "section":
            self.current = {"rows": [], "images": [], "captions": [], "text": []}
            self.sections[str(found["id"])] = self.current
        elif self.current is not None:
            if tag == "tr":
                self.current["rows"].append([])
            elif tag == "td":
                self.cell = []
            elif tag == "img":
                self.current["images"].append(found["src"])
            elif tag == "figcaption":
                self.caption = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.cell is not None and self.current is not None:
            self.current["rows"][-1].append("".join(self.cell))
            self.cell = None
        elif tag == "figcaption":
            self.caption = False
        elif tag == "section":
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.current is None:
            return
        self.current["text"].append(data)
        if self.cell is not None:
            self.cell.append(data)
        if self.caption:
            self.current["captions"].append(data)


def text(section: dict[str, Any]) -> str:
    return " ".join(section["text"])


def png_width(uri: str) -> int:
    head, _, payload = uri.partition(",")
    assert head == "data:image/png;base64"
    raw = base64.b64decode(payload, validate=True)
    assert raw.startswith(PNG)
    with Image.open(io.BytesIO(raw)) as image:
        image.verify()
        return int(image.size[0])


def expected_cells(row: dict[str, Any]) -> list[str]:
    """A method's row as the report must show it, from its ``leaderboard.json`` entry."""
    delta = row["delta_m_pct"]
    ci = delta["ci95"]
    shown = f"{delta['mean']:+.2f}" + ("" if ci is None else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]")
    valid = row.get("delta_m_pct_validation")
    cells = [str(row["rank"]), row["method"], "—" if valid is None else f"{valid['mean']:+.2f}"]
    cells.append(shown)
    for task in TASKS:
        entry = row["tasks"][task]
        multi = entry["multi"]
        value = f"{multi['mean']:.4f}"
        value += "" if multi["std"] is None else f" ± {multi['std']:.4f}"
        cells.append(f"{value} ({entry['delta_pct']:+.2f}%, {entry['status']})")
    cells.append(f"{row['step_time_ratio']:.2f}×")
    hurt = row["verdict"]["hurt"]
    cells.append(f"keep single-task ({', '.join(hurt)} worse)" if hurt else "deploy multi-task")
    return cells


def test_leaderboard_section_table_and_plot(run_dir: Path, tmp_path: Path) -> None:
    board = make_board(run_dir, tmp_path / "board")
    page = Page(render(load_inputs(board)))
    assert list(page.sections) == ["leaderboard", "check", *html_tests.RUN_SECTIONS]
    section = page.sections["leaderboard"]
    data = sample_leaderboard()
    by_rank = sorted(data["methods"], key=lambda r: r["rank"])
    rows = [r for r in section["rows"] if r]  # the header row has no <td>
    assert [r[1] for r in rows] == ["pcgrad", "equal", "slow", "single-task baselines"]
    assert rows[:-1] == [expected_cells(r) for r in by_rank]
    assert rows[-1] == [
        "",
        "single-task baselines",
        "",
        "",
        "0.6100 ± 0.0200",
        "0.5000 ± 0.0200",
        "",
        "",
    ]
    words = text(section)
    assert "sent (primary): accuracy" in words and "step time vs equal" in words
    assert "7, 8" in words and "matched: each baseline trains as many steps" in words
    assert "8 trained, 2 reused" in words and "16.6" in words and "41.3" in words
    assert "keep single-task (sent worse)" in words
    assert "rank: by mean validation Δm%" in words
    assert "rank 1: pcgrad" in words and "(Δm% +4.00 [-8.71, +16.71]): deploy" in words
    [uri] = section["images"]
    assert png_width(uri) == 1000
    assert "95 % Student-t interval" in " ".join(section["captions"])
    summary = text(page.sections["summary"])
    assert "This run: method-pcgrad/seed-7" in summary and "(pcgrad), first seed (7)" in summary
    assert str(board / "method-pcgrad" / "seed-7") in summary
    assert page.sections["curves"]["images"]  # the shown run's own plots


def test_plot_points_intervals_and_zero_line() -> None:
    names, means = ["pcgrad", "equal", "slow"], [4.0, 2.0, -7.0]
    cis: list[Any] = [[-8.7, 16.7], [-4.4, 8.4], [-32.4, 18.4]]
    ax = leaderboard_figure(names, means, cis).axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3 and all(c.has_xerr and not c.has_yerr for c in bars)
    segments = [c.lines[2][0].get_segments()[0] for c in bars]
    assert [(s[0][0], s[1][0]) for s in segments] == [(-8.7, 16.7), (-4.4, 8.4), (-32.4, 18.4)]
    assert [t.get_text() for t in ax.texts] == ["+4.00%", "+2.00%", "-7.00%"]
    assert [t.get_text() for t in ax.get_yticklabels()] == names and ax.yaxis_inverted()
    zero = [ln for ln in ax.lines if ln.get_label() == "single-task baselines"]
    assert len(zero) == 1 and list(zero[0].get_xdata()) == [0, 0]
    one = leaderboard_figure(names, means, [None, None, None]).axes[0]
    assert not [c for c in one.containers if isinstance(c, ErrorbarContainer)]
    assert "no 95 % interval" in one.get_title()
    assert [t.get_text() for t in one.texts] == ["+4.00%", "+2.00%", "-7.00%"]


def test_one_seed_has_no_interval_and_says_so(run_dir: Path, tmp_path: Path) -> None:
    board = make_board(run_dir, tmp_path / "board", seeds=1)
    section = Page(render(load_inputs(board))).sections["leaderboard"]
    rows = [r for r in section["rows"] if r]
    by_rank = sorted(sample_leaderboard(1)["methods"], key=lambda r: r["rank"])
    assert rows[:-1] == [expected_cells(r) for r in by_rank]
    assert [r[2] for r in rows[:-1]] == ["—", "—", "—"]  # a file from before the record
    assert [r[3] for r in rows[:-1]] == ["+3.00", "+1.50", "-9.00"]  # no [low, high]
    assert rows[-1][4:6] == ["0.6100", "0.5000"]
    caption = " ".join(section["captions"])
    assert "one seed" in caption and "no 95 % interval" in caption
    assert png_width(section["images"][0]) == 1000


def test_missing_run_shows_the_leaderboard_alone(run_dir: Path, tmp_path: Path) -> None:
    board = make_board(run_dir, tmp_path / "board")
    shutil.rmtree(board / "method-pcgrad")
    page = Page(render(load_inputs(board)))
    assert list(page.sections) == ["leaderboard", "check", "summary"]
    assert len([r for r in page.sections["leaderboard"]["rows"] if r]) == 4
    summary = text(page.sections["summary"])
    assert str(board / "method-pcgrad" / "seed-7") in summary and "missing" in summary
    assert "The run sections below show" not in text(page.sections["leaderboard"])


def test_bad_leaderboard_json_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    board = make_board(run_dir, tmp_path / "board")
    path = board / "leaderboard.json"
    path.write_text('{"methods": [')
    assert_user_error(polytask("report", str(board)), "leaderboard.json: corrupt JSON")
    data = sample_leaderboard()
    del data["runs"]
    path.write_text(json.dumps(data))
    assert_user_error(
        polytask("report", str(board)), "leaderboard.json: not the expected format (KeyError"
    )
    data = sample_leaderboard()
    del data["methods"][1]["delta_m_pct"]  # read only when the section is drawn
    path.write_text(json.dumps(data))
    with pytest.raises(RunDirError, match=r"leaderboard\.json: not the expected format"):
        write_report(board)
    assert not (board / "report.html").exists()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian chromium through playwright, as in test_report_html (skipped without them)."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    if not Path(html_tests.CHROMIUM).is_file():
        pytest.skip(f"no chromium at {html_tests.CHROMIUM}: not checked")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=html_tests.CHROMIUM, args=html_tests.ARGS)
        yield launched
        launched.close()


def test_leaderboard_report_in_browser(browser: Any, run_dir: Path, tmp_path: Path) -> None:
    """Offline, no console error, every plot decodes, the Leaderboard heading leads."""
    target = write_report(make_board(run_dir, tmp_path / "board")).resolve()
    seen = html_tests.load(browser, target)
    html_tests.offline(target, seen)
    assert all(seen["decoded"])
    assert next(iter(seen["headings"].items())) == ("leaderboard", "Leaderboard")
    assert html_tests.plot_counts(seen["images"])["leaderboard"] == 1
    assert "single-task baselines" in seen["text"]


def test_cli_reports_a_leaderboard_directory(run_dir: Path, tmp_path: Path) -> None:
    board = make_board(run_dir, tmp_path / "board")
    result = polytask("report", str(board))
    assert result.returncode == 0, result.stderr
    assert f"written: {board / 'report.html'}" in result.stdout
    page = Page((board / "report.html").read_text("utf-8"))
    assert next(r[1] for r in page.sections["leaderboard"]["rows"] if r) == "pcgrad"
    assert png_width(page.sections["leaderboard"]["images"][0]) == 1000
