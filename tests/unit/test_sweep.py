"""``sweep-aux``: weights parsing, the interference threshold, the CLI end to end (tiny
encoder, two weights), bad arguments; and the demo's auxiliary MLM task trains."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from polytask.config.run import load_config
from polytask.data import bundled
from polytask.errors import ConfigError
from polytask.experiments.sweep import interference_threshold, markdown, parse_weights
from polytask.train import train
from polytask.training.runlog import read_records
from tests import forked_cli
from tests.conftest import base_config
from tests.unit.test_cli import assert_user_error


def polytask(*args: str) -> Any:
    """The CLI in its own process; a sweep trains several runs, so a longer timeout."""
    import os

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return forked_cli.run(list(args), env=env, timeout=900)


DEMO_AUX = Path(__file__).resolve().parents[2] / "configs" / "demo_aux.yaml"


def test_parse_weights() -> None:
    assert parse_weights("0.3, 0.05,0.1") == [0.05, 0.1, 0.3]
    assert parse_weights("0") == [0.0]
    for bad, message in [
        ("", "comma-separated numbers"),
        ("0.1,,0.2", "comma-separated numbers"),
        ("0.1,abc", "'abc' is not a number"),
        ("-0.1", "must be a finite number >= 0"),
        ("nan", "must be a finite number >= 0"),
        ("0.1,0.1", "repeats a weight"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_weights(bad)


def test_interference_threshold() -> None:
    w = [0.05, 0.1, 0.2, 0.3]
    assert interference_threshold(w, [0.30, 0.32, 0.305, 0.25], True, 0.01) == 0.2
    assert interference_threshold(w, [0.30, 0.32, 0.315, 0.25], True, 0.01) == 0.3
    assert interference_threshold(w, [0.30, 0.31, 0.32, 0.33], True, 0.01) is None
    # a rising start is no interference: the best so far, not the overall best
    assert interference_threshold(w, [0.20, 0.30, 0.30, 0.30], True, 0.01) is None
    # lower is better (rmse): a rise is the fall
    assert interference_threshold(w, [1.0, 0.9, 0.95, 1.2], False, 0.01) == 0.2


def _config(tmp_path: Path, encoder: Path, files: Any, **extra: Any) -> Path:
    data = base_config(encoder, files, max_steps=4, eval_every=4)
    data["tasks"].append({"name": "mlm", "type": "lm", "data": {"from_tasks": ["sent"]}, **extra})
    data["sampler"] = {"tasks_per_step": "all"}
    path = tmp_path / "aux.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_sweep_aux_end_to_end(tmp_path: Path, tiny_encoder: Path, task_files: Any) -> None:
    config = _config(tmp_path, tiny_encoder, task_files)
    out = tmp_path / "sweep"
    result = polytask(
        "sweep-aux", str(config), "--weights", "0.3,0.05", "--out", str(out), "--quiet",
        "train.max_steps=3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "sweep_aux.json").read_text())
    assert [r["weight"] for r in summary["rows"]] == [0.05, 0.3]
    assert summary["auxiliary_task"] == "mlm" and summary["primary_task"] == "sent"
    assert summary["primary_metric"] == "accuracy" and summary["split"] == "test"
    for row, weight in zip(summary["rows"], (0.05, 0.3), strict=True):
        run = out / f"weight-{weight:g}"
        final = json.loads((run / "final_metrics.json").read_text())
        assert final["steps"] == 3  # the override reached every run
        assert row["primary"] == pytest.approx(final["tasks"]["sent"]["test"]["accuracy"], abs=1e-4)
        assert row["aux_validation_loss"] == pytest.approx(
            final["tasks"]["mlm"]["validation"]["loss"], abs=1e-4
        )
        assert set(row["others"]) == {"tags", "reg"}
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert next(t for t in saved["tasks"] if t["name"] == "mlm")["weight"] == weight
    table = (out / "sweep_aux.md").read_text()
    assert table == markdown(summary)
    assert "| 0.05 |" in table and "| 0.3 |" in table and "mlm val. loss" in table
    assert "interference threshold (tolerance 0.01)" in result.stdout
    # the two runs differ only by the weight: the auxiliary loss was weighted differently
    first = read_records(out / "weight-0.05" / "metrics.jsonl")[0]
    assert first["weights"]["mlm"] == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "0.1,x"], "'x' is not a number"),
        (["--weights", ""], "comma-separated numbers"),
        (["--weights", "-0.2"], "must be a finite number >= 0"),
        (["--weights", "0.1", "--task", "sent"], "--task 'sent' is not auxiliary"),
        (["--weights", "0.1", "--task", "mlmm"], "--task 'mlmm' is not a task"),
    ],
)
def test_sweep_aux_bad_arguments(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, args: list[str], message: str
) -> None:
    config = _config(tmp_path, tiny_encoder, task_files)
    out = tmp_path / "sweep"
    assert_user_error(polytask("sweep-aux", str(config), *args, "--out", str(out)), message)
    assert not out.exists()


def test_sweep_aux_needs_one_auxiliary_task(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    data = base_config(tiny_encoder, task_files)
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "sweep"
    result = polytask("sweep-aux", str(path), "--weights", "0.1", "--out", str(out))
    assert_user_error(result, "exactly one auxiliary task")
    assert not out.exists()


@pytest.mark.skipif(
    not all((bundled.dataset_dir(n) / "manifest.json").is_file() for n in bundled.BUNDLED),
    reason="bundled data not prepared (`polytask data prepare`)",
)
@pytest.mark.usefixtures("cached_tables")
def test_demo_aux_mlm_trains(tmp_path: Path, tiny_encoder: Path) -> None:
    """The bundled demo with its auxiliary MLM task (tiny encoder): every loss falls."""
    steps = 30
    subsets = [
        f"tasks.{t}.data.max_{s}_examples={n}"
        for t in ("sentiment", "movies", "ner", "mlm")
        for s, n in (("train", 256), ("validation", 32), ("test", 32))
    ]
    config = load_config(
        DEMO_AUX,
        [
            f"encoder.name={tiny_encoder}",
            "encoder.max_length=32",
            "tasks.ner.max_length=32",
            *subsets,
            f"train.max_steps={steps}",
            f"train.eval_every={steps}",
            "train.batch_size=8",
            "train.lr=2e-3",
            "train.head_lr=2e-3",
            "train.patience=null",
        ],
    )
    assert config.task("mlm").weight == 0.1 and config.primary == "ner"
    final = train(config, tmp_path / "run", show_progress=False)
    records = [r for r in read_records(tmp_path / "run" / "metrics.jsonl") if r["event"] == "train"]
    assert len(records) == steps
    for task in ("sentiment", "movies", "ner", "mlm"):
        assert all(math.isfinite(r["loss"][task]) for r in records)
        first = sum(r["loss"][task] for r in records[:8]) / 8
        last = sum(r["loss"][task] for r in records[-8:]) / 8
        assert last < first, (task, first, last)
    assert records[0]["weights"]["mlm"] == pytest.approx(0.1)
    assert math.isfinite(final["tasks"]["mlm"]["test"]["perplexity"])
