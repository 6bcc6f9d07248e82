"""The CLI with the MoE architectures (its own process, see tests/forked_cli.py): a bad
argument is one line and exit 2; ``polytask eval`` shows a switch run's routing report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import base_config
from tests.unit.test_cli import assert_user_error, polytask, write_config


def test_bad_switch_layers_is_one_line(tmp_path: Path, tiny_encoder: Path, task_files: Any) -> None:
    data = base_config(tiny_encoder, task_files, max_steps=2, eval_every=2)
    data["architecture"] = {"name": "switch", "layers": 5}  # the tiny encoder has 2
    config = write_config(tmp_path, data)
    result = polytask("train", str(config), "-o", str(tmp_path / "run"), "--quiet")
    assert_user_error(result, "architecture: switch: layers must be in 1..2")
    assert not (tmp_path / "run").exists()


def test_bad_mmoe_key_is_one_line(tmp_path: Path, tiny_encoder: Path, task_files: Any) -> None:
    data = base_config(tiny_encoder, task_files, max_steps=2, eval_every=2)
    data["architecture"] = {"name": "mmoe", "expert": 3}
    config = write_config(tmp_path, data)
    result = polytask("train", str(config), "-o", str(tmp_path / "run"), "--quiet")
    assert_user_error(result, "'mmoe' has no hyperparameter 'expert' (did you mean 'experts'?)")


def test_eval_shows_the_routing_report(tmp_path: Path, tiny_encoder: Path, task_files: Any) -> None:
    data = base_config(tiny_encoder, task_files, max_steps=2, eval_every=2)
    data["architecture"] = {"name": "switch", "layers": 2, "experts": 3}
    config = write_config(tmp_path, data)
    run = tmp_path / "run"
    result = polytask("train", str(config), "-o", str(run), "--quiet")
    assert result.returncode == 0, result.stderr
    result = polytask("eval", str(run), "--split", "validation")
    assert result.returncode == 0, result.stderr
    assert "routing on validation (switch: share of tokens per expert)" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "layer 1" in line]
    assert len(rows) == 3  # one per task
    for row in rows:
        shares = [float(v) for v in row.replace("│", " ").split()[-3:]]
        assert abs(sum(shares) - 1.0) < 2e-3, row  # printed with 3 decimals
