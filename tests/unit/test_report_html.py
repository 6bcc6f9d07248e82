"""``polytask report`` in a real headless browser (Debian chromium through playwright): the
page loads offline with no console or page error and no request leaving the file, every
plot decodes, every section heading is there; sections without data show a note; strings
from the files are escaped; bad input is one line, exit 2, nothing written.

The run is a real tiny-encoder run (mmoe with pcgrad: cosine, weights and routing are all
logged); ``check.json`` and ``compare.json`` are written by hand in the documented shapes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polytask.config.run import config_from_dict
from polytask.errors import RunDirError
from polytask.report.html import load_inputs, render, write_report
from polytask.train import train
from tests.conftest import (
    base_config,
    regression_rows,
    sentiment_rows,
    tagging_rows,
    write_jsonl,
)
from tests.unit.test_cli import assert_user_error, polytask

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_SECTIONS = {
    "summary": "Run summary",
    "curves": "Training curves",
    "weights": "Task weights",
    "cosine": "Gradient cosine",
    "routing": "Expert routing",
}
PLOTS = {"curves": 2, "weights": 1, "cosine": 2, "routing": 1}
TASKS = ["sent", "tags", "reg"]
HOSTILE = '<script>document.title="pwned"</script> & "quotes"'


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    """Eight steps of mmoe + pcgrad on the three synthetic tasks, every task every step."""
    root = tmp_path_factory.mktemp("report")
    makers = {"sent": sentiment_rows, "tags": tagging_rows, "reg": regression_rows}
    sizes = {"train": 96, "validation": 32, "test": 32}
    files = {
        task: {
            split: write_jsonl(root / "data" / task / f"{split}.jsonl", make(n, len(split)))
            for split, n in sizes.items()
        }
        for task, make in makers.items()
    }
    data = base_config(tiny_encoder, files, max_steps=8, eval_every=4)
    data["sampler"] = {"tasks_per_step": "all"}
    data["aggregator"] = {"name": "pcgrad"}
    data["architecture"] = {"name": "mmoe", "experts": 2}
    train(config_from_dict(data), root / "run", show_progress=False)
    return root / "run"


def sample_check() -> dict[str, Any]:
    """A ``check.json`` in the documented shape; one recommendation carries markup."""
    pairs = [
        {"a": a, "b": b, "mean": m, "std": 0.05, "min": m - 0.1, "max": m + 0.1, "label": lab}
        for a, b, m, lab in [
            ("sent", "tags", 0.21, "positive transfer"),
            ("sent", "reg", -0.02, "neutral"),
            ("tags", "reg", -0.18, "interference"),
        ]
    ]
    return {
        "config": "demo.yaml",
        "tasks": TASKS,
        "batches": 8,
        "seconds": 41.7,
        "cosine": {
            "mean": [[1.0, 0.21, -0.02], [0.21, 1.0, -0.18], [-0.02, -0.18, 1.0]],
            "std": [[0.0, 0.05, 0.05], [0.05, 0.0, 0.05], [0.05, 0.05, 0.0]],
            "pairs": pairs,
        },
        "loss_scale": {
            "tasks": {
                "sent": {"loss": 1.1, "type": "classification"},
                "tags": {"loss": 1.9, "type": "tagging"},
                "reg": {"loss": 42.0, "type": "regression"},
            },
            "ratio": 38.2,
            "advice": "scale normalisation or uncertainty weighting advised",
        },
        "sampling": {
            "configured": "temperature",
            "steps": 100,
            "plans": {
                "temperature": {
                    "counts": {"sent": 40, "tags": 35, "reg": 25},
                    "shares": {"sent": 0.4, "tags": 0.35, "reg": 0.25},
                    "starved": [],
                },
                "proportional": {
                    "counts": {"sent": 70, "tags": 27, "reg": 3},
                    "shares": {"sent": 0.7, "tags": 0.27, "reg": 0.03},
                    "starved": ["reg"],
                },
            },
        },
        "datasets": {"sizes": {"sent": 9000, "tags": 3500, "reg": 400}, "imbalance": 22.5},
        "recommendations": [
            {"topic": "weighting", "advice": "uncertainty", "evidence": "loss ratio 38.2"},
            {"topic": "tasks", "advice": HOSTILE, "evidence": "tags · reg cosine -0.18"},
        ],
    }


def sample_compare() -> dict[str, Any]:
    """A ``compare.json`` over two seeds (std present) whose multi run is ``multi/seed-1``."""

    def side(mean: float) -> dict[str, Any]:
        return {"mean": mean, "std": 0.02, "values": [mean - 0.02, mean + 0.02]}

    rows = {
        "sent": ("accuracy", 0.61, 0.63),
        "tags": ("f1", 0.40, 0.35),
        "reg": ("pearson", 0.5, 0.5),
    }
    tasks = {
        t: {
            "metric": m,
            "critical": t != "reg",
            "single": side(s),
            "multi": side(x),
            "delta_pct": 100 * (x - s) / s,
            "status": "better" if x > s + 0.04 else "worse" if x < s - 0.04 else "matches",
        }
        for t, (m, s, x) in rows.items()
    }
    return {
        "config": "demo.yaml",
        "seeds": [1, 2],
        "budget": {
            "mode": "steps",
            "text": "steps: every run trains for max_steps 12 at batch size 8, eval_every 6",
        },
        "tasks": tasks,
        "delta_m_pct": -3.1,
        "params": {"multi": 30151, "single": {t: 28899 for t in TASKS}, "single_total": 86697},
        "seconds": {"multi": 2.0, "single": {t: 1.4 for t in TASKS}, "single_total": 4.2},
        "verdict": {
            "deploy_multitask": False,
            "text": "keep the single-task models: multi-task hurts tags (f1 -12.50%)",
            "hurt": ["tags"],
        },
        "runs": {
            "multi": ["multi/seed-1", "multi/seed-2"],
            "single": {t: [f"single-{t}/seed-1"] for t in TASKS},
        },
    }


@pytest.fixture(scope="module")
def compare_dir(run_dir: Path) -> Path:
    folder = run_dir.parent / "compare"
    shutil.copytree(run_dir, folder / "multi" / "seed-1", ignore=shutil.ignore_patterns("model*"))
    (folder / "compare.json").write_text(json.dumps(sample_compare()))
    (folder / "check.json").write_text(json.dumps(sample_check()))
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')"
    )
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install chromium): not checked")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def load(browser: Any, page_file: Path) -> dict[str, Any]:
    """Open ``page_file``; its console errors, page errors, requests, headings and plots."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    seen: dict[str, list[str]] = {"errors": [], "requests": []}
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.goto(page_file.resolve().as_uri(), wait_until="load")
    decoded = page.evaluate(
        "Promise.all([...document.images].map(i => i.decode().then(() => true, () => false)))"
    )
    images = page.eval_on_selector_all(
        "img",
        "els => els.map(e => ({section: e.closest('section')?.id ?? '', width: e.naturalWidth,"
        " complete: e.complete}))",
    )
    headings = page.eval_on_selector_all(
        "section",
        "els => Object.fromEntries(els.map(e => [e.id, e.querySelector('h2')?.innerText ?? '']))",
    )
    result = {
        **seen,
        "decoded": decoded,
        "images": images,
        "headings": headings,
        "title": page.title(),
        "text": page.inner_text("body"),
    }
    page.close()
    return result


def plot_counts(images: list[dict[str, Any]]) -> dict[str, int]:
    assert images and all(i["complete"] and i["width"] > 0 for i in images), images
    counts: dict[str, int] = {}
    for image in images:
        counts[image["section"]] = counts.get(image["section"], 0) + 1
    return counts


def offline(page_file: Path, seen: dict[str, Any]) -> None:
    """No request but the page itself (data URIs are not fetched); no external URL at all."""
    assert seen["errors"] == []
    assert [u for u in seen["requests"] if not u.startswith("data:")] == [page_file.as_uri()]
    text = page_file.read_text("utf-8")
    assert "://" not in text.replace(page_file.as_uri(), "") and "<script" not in text


def test_run_report_in_browser(browser: Any, run_dir: Path, tmp_path: Path) -> None:
    target = write_report(run_dir, tmp_path / "run-report.html")
    assert not (run_dir / "report.html").exists()  # an output was given: not the default
    seen = load(browser, target.resolve())
    offline(target.resolve(), seen)
    assert all(seen["decoded"])
    assert seen["headings"] == {
        **RUN_SECTIONS,
        "compare": "Multi-task vs single-task",
        "check": "Pre-flight check",
    }
    assert plot_counts(seen["images"]) == PLOTS
    assert "Not a compare directory" in seen["text"] and "No check.json" in seen["text"]
    assert "pcgrad" in seen["text"] and "best step" in seen["text"]


def test_compare_report_in_browser(browser: Any, compare_dir: Path) -> None:
    target = write_report(compare_dir)
    assert target == compare_dir / "report.html"
    seen = load(browser, target.resolve())
    offline(target.resolve(), seen)
    assert all(seen["decoded"])
    assert list(seen["headings"]) == ["compare", "check", *RUN_SECTIONS]
    assert plot_counts(seen["images"]) == {**PLOTS, "compare": 1}
    assert seen["title"].startswith("polytask report")
    text = seen["text"]
    assert HOSTILE in text  # shown as text, never run
    assert "keep the single-task models" in text and "Δm = -3.10%" in text
    assert "steps: every run trains for max_steps 12" in text and "batch_size" not in text
    assert "proportional" in text and "starved" in text and "interference" in text
    assert str(compare_dir / "multi" / "seed-1") in text


def test_sections_without_data_show_notes(run_dir: Path, tmp_path: Path) -> None:
    """A run that logged no cosine or weights, has no routing and has not finished."""
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("model*", "checkpoint*"))
    (bare / "report.json").unlink()
    (bare / "final_metrics.json").unlink()
    keep = ("event", "step", "tasks", "loss", "lr", "split", "metrics", "primary")
    lines = (bare / "metrics.jsonl").read_text().splitlines()
    records = [{k: v for k, v in json.loads(line).items() if k in keep} for line in lines]
    (bare / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    page = render(load_inputs(bare))
    for expected in ("No task weights", "No gradient cosines", "No routing", "has not finished"):
        assert expected in page
    assert page.count("<img") == PLOTS["curves"]


def test_bad_input_is_one_line_and_writes_nothing(run_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken, ignore=shutil.ignore_patterns("model*", "checkpoint*"))
    (broken / "final_metrics.json").write_text('{"tasks": ')
    assert_user_error(polytask("report", str(broken)), "final_metrics.json: corrupt JSON")
    assert not (broken / "report.html").exists()
    with pytest.raises(RunDirError, match="no such directory"):
        write_report(tmp_path / "missing")
    with pytest.raises(RunDirError, match="not a run directory"):
        write_report(tmp_path)
    (broken / "final_metrics.json").unlink()
    lines = (broken / "metrics.jsonl").read_text().splitlines()
    (broken / "metrics.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(RunDirError, match=r"metrics.jsonl, line 2: corrupt JSON"):
        write_report(broken)
    first = json.loads(lines[0])
    (broken / "metrics.jsonl").write_text(json.dumps({**first, "cosine": [[1.0]]}) + "\n")
    with pytest.raises(RunDirError, match=r"metrics.jsonl: .*cosine is not 3x3"):
        write_report(broken)
    assert not (broken / "report.html").exists()


def test_summary_names_the_sampler_that_ran() -> None:
    """Only the configured sampler's own arguments; none with every task in every step."""
    from polytask.report.run import _sampler

    assert _sampler({"name": None, "tasks_per_step": "all"}) == "none: every task in every step"
    entry = {"name": "temperature", "tasks_per_step": 1, "alpha": 0.5}
    assert _sampler(entry) == "temperature (tasks_per_step=1, alpha=0.5)"
