"""Every published number comes from a committed file.

Each block between ``<!-- NAME -->`` markers in README.md and docs/**/*.md is rendered by
``benchmarks/readme_tables.py`` from committed JSON; these tests re-render every block (no
measurement) and fail on any difference, on a block without a renderer, on an absolute
machine path and on a reference to a file outside the repository.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import base_config

ROOT = Path(__file__).resolve().parents[2]


def _renderer() -> ModuleType:
    path = ROOT / "benchmarks" / "readme_tables.py"
    spec = importlib.util.spec_from_file_location("readme_tables", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


tables = _renderer()
DOCUMENTS = tables.documents()


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_documents_hold_blocks() -> None:
    found = {name for doc in DOCUMENTS for name, _, _ in tables.blocks_in(doc.read_text())}
    assert {"step_cost", "compare", "demo-results", "sweep-aux"} <= found, found


def test_every_renderer_is_used() -> None:
    """A renderer whose block appears nowhere is a table nobody checks."""
    found = {name for doc in DOCUMENTS for name, _, _ in tables.blocks_in(doc.read_text())}
    assert set(tables.BLOCKS) <= found, set(tables.BLOCKS) - found


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_name)
def test_every_block_has_a_renderer(doc: Path) -> None:
    for name, _, _ in tables.blocks_in(doc.read_text()):  # ValueError: a broken marker
        assert name in tables.BLOCKS, f"{_name(doc)}: <!-- {name} --> has no renderer"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_name)
def test_every_block_matches_its_json(doc: Path) -> None:
    text = doc.read_text()
    rendered = tables.render_text(text)
    if rendered != text:
        diff = "".join(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                fromfile=_name(doc),
                tofile="rendered from JSON",
                n=1,
            )
        )
        pytest.fail(
            f"{_name(doc)} differs from its JSON; run "
            f"`python benchmarks/readme_tables.py --write`:\n{diff[:4000]}"
        )


@pytest.mark.parametrize("name", sorted(tables.BLOCKS))
def test_every_block_names_its_json_and_command(name: str) -> None:
    block = tables.BLOCKS[name]
    text = block.text()
    assert block.sources and block.command
    for source in block.sources:
        assert _name(source) in text
        assert source.parent.relative_to(ROOT).parts[-1] == "results"
    assert f"written by `{block.command}`" in text


def test_a_changed_number_is_caught() -> None:
    """The comparison can fail: a digit changed inside a block is rendered back."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    _, start, end = next(b for b in tables.blocks_in(text) if b[0] == "soft_penalty")
    inner = text[start:end]
    number = re.search(r"\*\*(\d+\.\d+)×\*\*", inner)
    assert number is not None
    wrong = inner.replace(number.group(0), f"**{float(number.group(1)) + 1:.2f}×**", 1)
    edited = text[:start] + wrong + text[end:]
    assert edited != text
    assert tables.render_text(edited) == text


def test_text_outside_blocks_is_kept_and_markers_are_checked() -> None:
    fake = {"x": tables.Block(lambda: "rendered", (tables.RESULTS / "x.json",), "cmd")}
    out = tables.render_text("a\n<!-- x -->\nold\n<!-- /x -->\nb\n", fake)
    assert out.startswith("a\n<!-- x -->\nrendered\n\n<sub>Rendered by")
    assert out.endswith("<!-- /x -->\nb\n")
    with pytest.raises(KeyError):
        tables.render_text("<!-- y -->\n<!-- /y -->\n", fake)
    for broken in ("<!-- x -->\n", "<!-- /x -->\n", "<!-- x -->\n<!-- x -->\n<!-- /x -->\n"):
        with pytest.raises(ValueError):
            tables.blocks_in(broken)


def test_the_demo_block_reads_what_polytask_train_writes(
    tmp_path: Path, tiny_encoder: Path, task_files: dict[str, dict[str, Path]]
) -> None:
    """``docs/results/demo.json`` is a copied ``final_metrics.json``: render a real one."""
    from polytask.config.run import config_from_dict
    from polytask.train import train

    config = config_from_dict(base_config(tiny_encoder, task_files, max_steps=2, eval_every=2))
    train(config, tmp_path / "run", show_progress=False)
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    text = tables.final_metrics_table(final)
    for task, values in final["tasks"].items():
        primary = final["primary_metric"][task]
        row = next(line for line in text.splitlines() if line.startswith(f"| {task}"))
        assert f"**{values['test'][primary]:.3f}**" in row
        assert f"{values['validation'][primary]:.3f}" in row
    assert f"{final['params']['total']:,} in all" in text
    assert f"best checkpoint at step {final['best_step']}" in text


def _upgrad_rows(runs: list[str | None]) -> dict[str, object]:
    rows = []
    for mode, ours in (("multi-input", "polytask-segments"), ("single-input", "polytask-exact")):
        for impl, run in zip((ours, "naive-loop", "torchjd"), runs, strict=True):
            row = {"mode": mode, "T": 2, "impl": impl, "method": "upgrad", "peak_mb": 1}
            row |= {"ratio_vs_equal": 1.5, "repeats": 5}
            if run is not None:
                row["run"] = run
            rows.append(row)
    return {"rows": rows, "repeats": 5}


def test_same_run_is_said_only_of_one_run() -> None:
    one = "\n".join(tables._upgrad_three_ways(_upgrad_rows(["r1", "r1", "r1"]), [2]))
    assert "same run" in one
    mixed: list[list[str | None]] = [["r1", "r2", "r1"], [None, None, None], ["r1", None, "r1"]]
    for runs in mixed:
        text = "\n".join(tables._upgrad_three_ways(_upgrad_rows(runs), [2]))
        assert "same run" not in text and "not one run" in text, runs


def _files() -> list[Path]:
    """src/ (not build output), docs/ and README.md."""
    skip = {"__pycache__"}
    files = [ROOT / "README.md"]
    for top in ("src", "docs"):
        for path in sorted((ROOT / top).rglob("*")):
            parts = set(path.relative_to(ROOT).parts)
            if (
                path.is_file()
                and path.suffix in {".py", ".md", ".json", ".yaml", ".yml", ".txt", ".toml"}
                and not parts & skip
                and not any(p.endswith(".egg-info") for p in parts)
            ):
                files.append(path)
    return files


ABSOLUTE = re.compile(r"(?<![\w.:/-])/(?:work|root|home|tmp|Users|mnt|private)/[\w.-]+")
OUTSIDE = re.compile(r"SPEC §|\.\./shared|shared/notes|/work/shared")


def test_the_scan_sees_files_and_finds_paths() -> None:
    files = _files()
    assert ROOT / "src" / "polytask" / "aggregation" / "base.py" in files
    assert ABSOLUTE.search("see ``/work/shared/notes/per-task-gradients.md``")
    assert ABSOLUTE.search("cached in /tmp/polytask/x")
    assert not ABSOLUTE.search("https://example.org/home/page and runs/demo/")
    assert OUTSIDE.search("the decision rules of SPEC §4")
    assert OUTSIDE.search("conventions: `../shared/STYLE.md`")


@pytest.mark.parametrize("kind", ["absolute machine path", "reference outside the repo"])
def test_no_machine_paths_or_outside_references(kind: str) -> None:
    pattern = ABSOLUTE if kind == "absolute machine path" else OUTSIDE
    hits = []
    for path in _files():
        for n, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{_name(path)}:{n}: {line.strip()[:120]}")
    assert not hits, f"{kind}:\n" + "\n".join(hits)


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_name)
def test_relative_links_stay_inside_the_repo(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        resolved = (doc.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{_name(doc)}: {target} leaves the repository"
        assert resolved.exists(), f"{_name(doc)}: {target} does not exist"


def _multitask_run(commit: str, a_over_b: float, padded: float) -> dict[str, object]:
    def row(impl: str, ratio: float, over_real: float) -> dict[str, object]:
        return {
            "impl": impl,
            "median_s": 2.0 * ratio,
            "ratio_vs_single_sum": ratio,
            "real_tokens": 1000.0,
            "computed_tokens": 1000.0 * over_real,
            "padded_over_real": over_real,
        }

    acceptance = {
        "multitask_over_single_sum": {"value": a_over_b, "target": 1.1, "met": a_over_b <= 1.1},
        "padded_over_real": {"value": padded, "target": 1.3, "met": padded <= 1.3},
    }
    shared = {"mode": "equal", "aggregator": "sum", "single_input": None}
    shared |= {"once_s": 0.4, "twice_s": 0.5, "once_over_twice": 0.8}
    return {
        "polytask": {"commit": commit, "dirty": False},
        "command": "python benchmarks/multitask_step.py --as x",
        "repeats": 5,
        "steps": 2,
        "threads": 2,
        "load_average_before": [1.0],
        "load_average_after": [2.0],
        "multitask": {
            "tasks": {"pair": {"type": "regression", "max_length": 96}},
            "rows": [
                row("multitask", a_over_b, padded),
                row("single_sum", 1.0, 1.05),
                row("article_loop", 2.5, 3.0),
            ],
        },
        "shared": {"rows": [shared]},
        "acceptance": acceptance,
        "notes": ["a note"],
    }


def test_the_multitask_step_block_shows_every_run_and_its_targets() -> None:
    data = {
        "article_length": 128,
        "runs": {
            "before": _multitask_run("a" * 40, 1.93, 1.85),
            "latest": _multitask_run("b" * 40, 1.05, 1.2),
        },
    }
    text = tables.multitask_step_text(data)
    assert "before (`aaaaaaaa`)" in text and "latest (`bbbbbbbb`)" in text
    assert "| 1.93× |" in text and "| 1.85× |" in text and "padded to 128" in text
    before, latest = (line for line in text.splitlines() if line.startswith("- "))
    assert "multitask over single sum 1.93× (target ≤ 1.1×: **not met**)" in before
    assert "multitask over single sum 1.05× (target ≤ 1.1×: met)" in latest
    assert "| equal weighting (one backward) | 0.40 | 0.50 | 0.80× |" in text


def test_a_leaderboard_command_is_read_back_from_its_json() -> None:
    """The command a block shows is built from what leaderboard.json records, and parses
    back into the same config overrides and the same methods and variants."""
    import shlex

    from polytask.cli.common import split_args
    from polytask.config.overrides import parse_overrides
    from polytask.experiments.leaderboard import parse_methods

    def pair(weighting: str, aggregator: str) -> dict[str, Any]:
        return {"weighting": {"name": weighting}, "aggregator": {"name": aggregator}}

    board = {
        "config": "sentiment_transfer",
        "overrides": ["train.max_steps=20"],
        "seeds": [13, 14],
        "runs": {"methods": {"famo": [], "pcgrad": [], "aux": []}},  # the order given
        "methods": [
            {"method": "pcgrad", "overrides": pair("equal", "pcgrad")},  # ranked first
            {"method": "famo", "overrides": pair("famo", "sum")},
            {
                "method": "aux",
                "overrides": {"tasks.movies.auxiliary": True, "tasks.movies.weight": 0.3},
            },
        ],
    }  # fmt: skip
    command = tables.board_command(board, "DIR")
    assert command == (
        "polytask compare sentiment_transfer train.max_steps=20 --methods famo,pcgrad "
        "--variant 'aux:tasks.movies.auxiliary=true tasks.movies.weight=0.3' --seeds 2 -o DIR"
    )
    words = shlex.split(command)[2:]
    methods = words[words.index("--methods") + 1]
    variant = words[words.index("--variant") + 1]
    config, overrides = split_args(words[: words.index("--methods")])
    assert (config, overrides) == ("sentiment_transfer", board["overrides"])
    parsed = parse_methods(methods, [variant])
    assert [m.name for m in parsed] == ["famo", "pcgrad", "aux"]
    rows = {row["method"]: row for row in board["methods"]}
    for method in parsed:
        assert dict(method.overrides) == rows[method.name]["overrides"]
    assert dict(parse_overrides(["tasks.movies.weight=0.3"])) == {"tasks.movies.weight": 0.3}
