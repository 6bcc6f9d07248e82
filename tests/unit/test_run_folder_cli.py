"""A run folder as a user's shell meets it (issue 22): ``train`` with its output in a file,
the folder's modes under umask 022, ``--resume`` on a finished run (nothing to do, unless
``train.max_steps`` is raised), and the advice for a run stopped before its first checkpoint.

One 12-step run (checkpoint at step 6 only) is trained in a fresh interpreter under umask 022,
with stdout in a file (no TTY); every other command runs on a copy of it."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import forked_cli
from tests.conftest import base_config, write_task_files

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def polytask(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return forked_cli.run(list(args), cwd=cwd, env=ENV, timeout=300)


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def digest(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``root``: (mtime in ns, bytes); folders: their mtime."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, b"" if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> dict[str, Any]:
    """The trained run, its config file and what ``train`` printed."""
    root = tmp_path_factory.mktemp("run-folder")
    data = base_config(tiny_encoder, write_task_files(root), max_steps=12, checkpoint_every=6)
    data["train"]["eval_every"] = 6
    (root / "run.yaml").write_text(yaml.safe_dump(data))
    with open(root / "train.out", "w") as stdout:  # a file, as `polytask train > log` gives
        result = subprocess.run(
            [sys.executable, "-m", "polytask.cli.main", "train", "run.yaml", "-o", "run"],
            cwd=root,
            env=ENV,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            umask=0o022,
            timeout=600,
        )
    assert result.returncode == 0, result.stderr
    return {"root": root, "run": root / "run", "stdout": (root / "train.out").read_text()}


def copy_run(finished: dict[str, Any], tmp_path: Path) -> Path:
    shutil.copytree(finished["run"], tmp_path / "run")
    shutil.copy(finished["root"] / "run.yaml", tmp_path / "run.yaml")
    return tmp_path / "run"


def test_run_folder_modes_follow_the_umask(finished: dict[str, Any]) -> None:
    """Under umask 022 every file is 0644 and every folder 0755, as any other tool makes
    them (mkstemp / mkdtemp / safetensors made 0600 files and 0700 folders)."""
    run = finished["run"]
    wrong = {}
    for path in [run, *run.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != (0o755 if path.is_dir() else 0o644):
            wrong[str(path.relative_to(run))] = oct(mode)
    assert wrong == {}
    for name in ("final_metrics.json", "model/model.safetensors", "checkpoint/rng.safetensors"):
        assert (run / name).is_file(), name


def test_progress_without_a_tty_prints_whole_lines(finished: dict[str, Any]) -> None:
    """stdout in a file: one plain line per report (12 steps: every step), no bar redraws."""
    out = finished["stdout"]
    assert "\r" not in out and "\x1b" not in out  # no carriage returns, no ANSI codes
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    pattern = re.compile(r"step (\d+)/12 \(\d+%\)  (\w+ \d+\.\d{3}  )+\d+\.\d\d steps/s  ETA \S+$")
    assert all(pattern.match(line) for line in lines), lines
    assert [int(line.split()[1].split("/")[0]) for line in lines] == list(range(1, 13))
    assert "sent " in lines[-1] and "tags " in lines[-1] and "reg " in lines[-1]


def test_resume_of_a_finished_run_is_complete_and_writes_nothing(
    finished: dict[str, Any], tmp_path: Path
) -> None:
    run = copy_run(finished, tmp_path)
    before = digest(run)
    result = polytask("train", "-o", "run", "--resume", cwd=tmp_path)  # progress lines on
    assert result.returncode == 0, result.stderr
    assert "run: the run is complete (trained to train.max_steps=12" in result.stdout
    assert "--resume train.max_steps=N with N > 12" in result.stdout
    assert not re.search(r"^step \d", result.stdout, re.M)  # not a single step trained
    assert digest(run) == before
    # the same max_steps given on the command line: still nothing to do
    again = polytask("train", "run.yaml", "-o", "run", "--resume", "--quiet", cwd=tmp_path)
    assert again.returncode == 0 and "the run is complete" in again.stdout, again.stderr
    assert digest(run) == before


def test_resume_with_a_higher_max_steps_trains_to_it(
    finished: dict[str, Any], tmp_path: Path
) -> None:
    """From the last checkpoint (step 6) to the new end; the folder's config says 18, and a
    plain --resume afterwards has nothing to do."""
    run = copy_run(finished, tmp_path)
    result = polytask("train", "-o", "run", "--resume", "train.max_steps=18", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "of 18" in result.stdout
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["steps"] == 18
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "train"] == list(range(1, 19))
    assert [r["step"] for r in records if r["event"] == "eval"] == [6, 12, 18]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 18
    again = polytask("train", "-o", "run", "--resume", "--quiet", cwd=tmp_path)
    assert again.returncode == 0 and "trained to train.max_steps=18" in again.stdout


def test_train_into_a_finished_run_names_overwrite(
    finished: dict[str, Any], tmp_path: Path
) -> None:
    copy_run(finished, tmp_path)
    line = one_error(polytask("train", "run.yaml", "-o", "run", "--quiet", cwd=tmp_path))
    assert "it holds a finished run: pass --overwrite to replace it" in line
    assert "--resume train.max_steps=N (N > 12)" in line


def test_run_stopped_before_its_first_checkpoint_advises_overwrite_only(
    finished: dict[str, Any], tmp_path: Path
) -> None:
    """What a run killed before step 6 leaves (config, log, no checkpoint, no final
    metrics): ``train`` and ``train --resume`` both say --overwrite, neither says --resume."""
    run = copy_run(finished, tmp_path)
    shutil.rmtree(run / "checkpoint")
    (run / "final_metrics.json").unlink()
    before = digest(run)
    line = one_error(polytask("train", "run.yaml", "-o", "run", "--quiet", cwd=tmp_path))
    assert "stopped before its first checkpoint" in line and "--overwrite" in line, line
    assert "--resume" not in line
    line = one_error(polytask("train", "-o", "run", "--resume", "--quiet", cwd=tmp_path))
    assert "has no complete checkpoint to resume from (the run stopped before" in line, line
    assert "pass --overwrite to start it again" in line
    assert digest(run) == before


def test_run_with_a_checkpoint_advises_resume(finished: dict[str, Any], tmp_path: Path) -> None:
    """Stopped after its step-6 checkpoint: ``train`` says --resume (which works)."""
    run = copy_run(finished, tmp_path)
    (run / "final_metrics.json").unlink()
    line = one_error(polytask("train", "run.yaml", "-o", "run", "--quiet", cwd=tmp_path))
    assert "pass --resume to continue it or --overwrite to replace it" in line, line
    result = polytask("train", "-o", "run", "--resume", "--quiet", cwd=tmp_path)
    assert result.returncode == 0 and "of 12" in result.stdout, result.stderr


def test_library_resume_of_a_finished_run_returns_its_metrics(
    finished: dict[str, Any], tmp_path: Path
) -> None:
    """``train(..., resume=True)`` (the API the CLI and compare call) trains nothing either."""
    from polytask.config.run import load_config
    from polytask.train import train

    run = copy_run(finished, tmp_path)
    before = digest(run)
    final = train(load_config(str(run / "config.yaml")), run, resume=True, show_progress=False)
    assert final == json.loads((run / "final_metrics.json").read_text())
    assert digest(run) == before
