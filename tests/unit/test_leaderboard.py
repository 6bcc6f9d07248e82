"""``compare --methods``: method parsing, the interval and ranking arithmetic, a leaderboard end
to end through the CLI (tiny encoder, two seeds, shared baselines), and a leaderboard killed
with SIGKILL that finishes on ``--resume`` without retraining its finished runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from polytask.config.run import load_config
from polytask.errors import ConfigError
from polytask.experiments.leaderboard import (
    Method,
    leaderboard,
    method_config,
    parse_methods,
    rank,
)
from polytask.experiments.leaderboard_text import markdown
from polytask.experiments.summary import interval95
from tests.conftest import base_config
from tests.unit.test_compare import cli, spy_on_training

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread


def _config(tmp_path: Path, encoder: Path, files: Any) -> Path:
    data = base_config(encoder, files, max_steps=4, eval_every=2)
    data["tasks"] = [t for t in data["tasks"] if t["name"] in ("sent", "reg")]
    data["tasks"][0]["critical"] = True
    data["sampler"] = {"tasks_per_step": "all"}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_parse_methods() -> None:
    methods = parse_methods("equal, pcgrad,uncertainty", ["aux:tasks.reg.weight=0.2 seed=3"])
    assert [m.name for m in methods] == ["equal", "pcgrad", "uncertainty", "aux"]
    assert dict(methods[0].overrides) == {
        "weighting": {"name": "equal"},
        "aggregator": {"name": "sum"},
    }
    assert dict(methods[1].overrides) == {
        "weighting": {"name": "equal"},
        "aggregator": {"name": "pcgrad"},
    }
    assert dict(methods[2].overrides)["weighting"] == {"name": "uncertainty"}
    assert methods[3].overrides == (("tasks.reg.weight", 0.2), ("seed", 3))
    for names, variants, message in [
        (
            "equal,pcgrd",
            [],
            r"'pcgrd' is neither a weighting nor an aggregator \(did you mean 'pcgrad'",
        ),
        ("equal,equal", [], "'equal' is named twice"),
        (None, ["nolabel"], "--variant 'nolabel' is not of the form LABEL:key=value"),
        (None, [], "name at least one method"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_methods(names, variants)


def test_interval_and_rank() -> None:
    one = interval95([2.0])
    assert one == {"mean": 2.0, "std": None, "ci95": None, "values": [2.0]}
    three = interval95([1.0, 2.0, 3.0])
    half = 4.302653 * 1.0 / 3**0.5  # t(0.975, 2) × std / sqrt(3)
    assert three["mean"] == 2.0 and three["std"] == 1.0
    assert three["ci95"] == pytest.approx([2.0 - half, 2.0 + half], abs=1e-4)
    rows = [  # ranked on validation, whatever the test Δm% says
        {"method": "famo", "delta_m_pct": {"mean": 3.0}, "step_seconds": 0.3},
        {"method": "equal", "delta_m_pct": {"mean": 0.5}, "step_seconds": 0.2},
        {"method": "pcgrad", "delta_m_pct": {"mean": 2.0}, "step_seconds": 0.5},
    ]
    for row, valid in zip(rows, (-1.0, 0.5, 2.0), strict=True):
        row["delta_m_pct_validation"] = {"mean": valid}
    ranked = rank(rows)
    assert [(r["method"], r["rank"]) for r in ranked] == [("pcgrad", 1), ("equal", 2), ("famo", 3)]
    assert [r["step_time_ratio"] for r in ranked] == [2.5, 1.0, 1.5]
    assert {r["step_time_vs"] for r in ranked} == {"equal"}


def test_method_config_is_refused_when_it_would_not_apply(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    config = load_config(_config(tmp_path, tiny_encoder, task_files))
    pcgrad = method_config(config, parse_methods("pcgrad")[0], 9)
    assert (pcgrad.seed, pcgrad.aggregator.name, pcgrad.weighting.name) == (9, "pcgrad", "equal")
    one = Method("one", (("sampler", {"tasks_per_step": 1}), ("aggregator", {"name": "pcgrad"})))
    with pytest.raises(ConfigError, match="pcgrad"):
        method_config(config, one, 7)
    with pytest.raises(ConfigError, match="pcgrad"):  # refused before anything is trained
        leaderboard(config, [parse_methods("equal")[0], one], tmp_path / "lb", show_progress=False)
    assert not (tmp_path / "lb").exists()


def test_leaderboard_end_to_end(
    tmp_path: Path,
    tiny_encoder: Path,
    task_files: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(tmp_path, tiny_encoder, task_files)
    out = tmp_path / "lb"

    def no_checkpoints(*_: Any) -> None:
        raise AssertionError("a leaderboard's run wrote a resumable checkpoint")

    monkeypatch.setattr("polytask.train.save_checkpoint", no_checkpoints)
    args = ["compare", str(config), "-o", str(out), "--seeds", "2", "--quiet"]
    args += ["--methods", "equal,pcgrad", "--variant", "slow:train.lr=1e-4"]
    args += ["tasks.sent.data.max_train_examples=24"]
    code, stdout, stderr = cli(monkeypatch, capsys, *args)
    assert code == 0, stderr
    board = json.loads((out / "leaderboard.json").read_text())
    # the command's overrides and the training rows each task used are on record
    assert board["overrides"] == ["tasks.sent.data.max_train_examples=24"]
    assert board["train_examples"]["sent"] == 24 and board["train_examples"]["reg"] > 24
    assert board["seeds"] == [7, 8] and board["runs_trained"] == 10 and board["runs_reused"] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "leaderboard.json", "leaderboard.md", "method-equal", "method-pcgrad", "method-slow",
        "single-reg", "single-sent",
    ]  # fmt: skip
    assert [r["rank"] for r in board["methods"]] == [1, 2, 3]
    means = [r["delta_m_pct_validation"]["mean"] for r in board["methods"]]
    assert means == sorted(means, reverse=True)  # ranked on validation
    for row in board["methods"]:
        runs = board["runs"]["methods"][row["method"]]
        finals = [json.loads((out / r / "final_metrics.json").read_text()) for r in runs]
        saved = load_config(out / runs[0] / "config.yaml")
        if row["method"] == "pcgrad":
            assert saved.aggregator.name == "pcgrad"
        if row["method"] == "slow":
            assert saved.train.lr == 1e-4
        for task in ("sent", "reg"):
            cell = row["tasks"][task]
            metric = cell["metric"]
            assert cell["multi"]["values"] == [f["tasks"][task]["test"][metric] for f in finals]
            assert cell["single"] == board["baselines"][task]["single"]  # shared baselines
            valid = cell["validation"]["multi"]["values"]
            assert valid == [f["tasks"][task]["validation"][metric] for f in finals]
            assert set(cell["validation"]) >= {"single", "status", "margin_sigmas"}
        values = row["delta_m_pct"]["values"]
        assert len(values) == 2 and row["delta_m_pct"]["ci95"] is not None
        low, high = row["delta_m_pct"]["ci95"]
        assert low <= row["delta_m_pct"]["mean"] <= high
        per_run = [f["step_seconds"] / f["steps"] for f in finals]
        assert row["step_seconds"] == pytest.approx(sum(per_run) / 2, abs=1e-4)
        assert row["step_time_vs"] == "equal"
    every_run = [r for group in board["runs"].values() for rs in group.values() for r in rs]
    seconds = [json.loads((out / r / "final_metrics.json").read_text()) for r in every_run]
    assert len(every_run) == 10
    assert board["run_seconds"] == pytest.approx(sum(f["train_seconds"] for f in seconds), abs=0.1)
    assert (out / "leaderboard.md").read_text() == markdown(board)
    assert "| single-task baselines |" in stdout and "Δm% [95% CI]" in stdout
    assert "validation Δm%" in stdout and "rank: by mean validation Δm%" in stdout


def _finished(out: Path) -> set[str]:
    return {str(p.parent.relative_to(out)) for p in out.glob("*/seed-*/final_metrics.json")}


def test_leaderboard_survives_sigkill(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL the CLI once two runs have finished; ``--resume`` trains only the rest."""
    config = _config(tmp_path, tiny_encoder, task_files)
    out = tmp_path / "lb"
    cmd = [sys.executable, "-m", "polytask.cli.main", "compare", str(config), "-o", str(out)]
    cmd += ["--methods", "equal,mean,uncertainty", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(_finished(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _finished(out)
    assert proc.returncode == -signal.SIGKILL and 2 <= len(done) < 5, done
    assert not (out / "leaderboard.json").exists()
    trained = spy_on_training(monkeypatch, out)
    methods = parse_methods("equal,mean,uncertainty")
    board = leaderboard(load_config(config), methods, out, resume=True, show_progress=False)
    everything = {"method-equal/seed-7", "method-mean/seed-7", "method-uncertainty/seed-7"}
    everything |= {"single-sent/seed-7", "single-reg/seed-7"}
    assert set(trained) == everything - done and not set(trained) & done
    assert board["runs_reused"] == len(done) and board["runs_trained"] == 5 - len(done)
    assert _finished(out) == everything
    finals = [json.loads((out / r / "final_metrics.json").read_text()) for r in everything]
    # reused runs count with their own seconds, not the resumed command's
    assert board["run_seconds"] == pytest.approx(sum(f["train_seconds"] for f in finals), abs=0.1)


def test_a_variant_is_judged_on_its_own_critical_tasks(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    from polytask.experiments.leaderboard import critical_of

    config = load_config(_config(tmp_path, tiny_encoder, task_files))
    assert critical_of(config, parse_methods("equal")[0]) == ["sent"]
    (aux,) = parse_methods(None, ["aux:tasks.sent.auxiliary=true tasks.reg.critical=true"])
    assert critical_of(config, aux) == ["reg"]
