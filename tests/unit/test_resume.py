"""Crash safety: SIGKILL a run at several points, resume, compare with an uninterrupted run."""

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
from safetensors.torch import load_file

from tests.conftest import base_config

STEPS = 120


def start(config: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "polytask.cli.main",
            "train",
            str(config),
            "-o",
            str(out),
            "--quiet",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def checkpoint_step(out: Path) -> int:
    state = out / "checkpoint" / "trainer_state.json"
    try:
        return int(json.loads(state.read_text())["state"]["step"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture()
def config(tmp_path: Path, tiny_encoder: Path, task_files: Any) -> Path:
    data = base_config(
        tiny_encoder, task_files, max_steps=STEPS, eval_every=20, checkpoint_every=10
    )
    data["sampler"] = {"name": "temperature", "tasks_per_step": 2}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path, config: Path) -> None:
    reference = tmp_path / "reference"
    done = start(config, reference)
    assert done.wait(timeout=600) == 0, done.stderr.read() if done.stderr else ""
    expected = json.loads((reference / "final_metrics.json").read_text())
    expected_weights = load_file(str(reference / "model" / "model.safetensors"))

    for kill_after in (10, 40, 90):  # three different points of the run
        out = tmp_path / f"killed-{kill_after}"
        proc = start(config, out)
        deadline = time.monotonic() + 300
        while (
            checkpoint_step(out) < kill_after
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed; make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (out / "final_metrics.json").exists()
        resumed = start(config, out, "--resume")
        assert resumed.wait(timeout=600) == 0, resumed.stderr.read() if resumed.stderr else ""
        final = json.loads((out / "final_metrics.json").read_text())
        assert final["steps"] == STEPS
        for key in ("tasks", "best_step", "examples_seen", "updates", "params"):
            assert final[key] == expected[key], (kill_after, key)
        weights = load_file(str(out / "model" / "model.safetensors"))
        assert all((weights[k] == v).all() for k, v in expected_weights.items())
        steps = [
            json.loads(line)["step"]
            for line in (out / "metrics.jsonl").read_text().splitlines()
            if '"event": "train"' in line
        ]
        assert steps == list(range(1, STEPS + 1))  # no duplicated or missing step records
        leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
        assert leftovers == [], leftovers
