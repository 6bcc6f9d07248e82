"""The CLI as a user runs it (its own process, see tests/forked_cli.py): bad input gives one
line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import forked_cli
from tests.conftest import base_config


def polytask(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return forked_cli.run(list(args), stdin=stdin, cwd=cwd, env=env, timeout=300)


def assert_user_error(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert pattern in lines[0], lines[0]


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture()
def good(tiny_encoder: Path, task_files: Any) -> dict[str, Any]:
    return base_config(tiny_encoder, task_files, max_steps=2, eval_every=2)


def mutate(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[parts[-1]] = value
    return data


CONFIG_CASES = [
    ("unknown key", "train.max_stepz", 3, "unknown key 'max_stepz' (did you mean 'max_steps'?)"),
    ("wrong type", "train.max_steps", "ten", "train.max_steps"),
    ("unknown task type", "tasks.0.type", "clasification", "unknown task type 'clasification'"),
    (
        "missing data file",
        "tasks.0.data.train",
        "/nonexistent/train.jsonl",
        "data file not found: /nonexistent/train.jsonl",
    ),
    ("missing column", "tasks.2.columns.label", "rating", "missing column 'rating'"),
]


@pytest.mark.parametrize(
    ("case", "key", "value", "message"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_config(
    tmp_path: Path, good: dict[str, Any], case: str, key: str, value: Any, message: str
) -> None:
    config = write_config(tmp_path, mutate(good, key, value))
    out = tmp_path / "out"
    assert_user_error(polytask("train", str(config), "-o", str(out), "--quiet"), message)
    assert not out.exists()


def _rewrite(path: Path, edit: Any) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    edit(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_label_not_in_label_set(tmp_path: Path, good: dict[str, Any], task_files: Any) -> None:
    _rewrite(task_files["sent"]["validation"], lambda rows: rows[4].update(label="maybe"))
    config = write_config(tmp_path, good)
    assert_user_error(
        polytask("train", str(config), "-o", str(tmp_path / "out")),
        "validation.jsonl, line 5, column 'label': label 'maybe' is not in the label set",
    )
    assert not (tmp_path / "out").exists()


def test_nan_regression_target(tmp_path: Path, good: dict[str, Any], task_files: Any) -> None:
    _rewrite(task_files["reg"]["train"], lambda rows: rows[2].update(score="NaN"))
    config = write_config(tmp_path, good)
    assert_user_error(
        polytask("train", str(config), "-o", str(tmp_path / "out")),
        "train.jsonl, line 3, column 'score': regression target must be a number, got a string",
    )
    assert not (tmp_path / "out").exists()


def test_empty_split(tmp_path: Path, good: dict[str, Any], task_files: Any) -> None:
    task_files["tags"]["test"].write_text("")
    config = write_config(tmp_path, good)
    assert_user_error(
        polytask("train", str(config), "-o", str(tmp_path / "out")), "the test split is empty"
    )
    assert not (tmp_path / "out").exists()


def test_tagging_line_without_tag(tmp_path: Path, good: dict[str, Any]) -> None:
    conll = tmp_path / "ner.conll"
    conll.write_text("alice\tB-per\nvisited\tO\n\nbob\n")
    good["tasks"][1]["data"] = {"train": str(conll), "validation": str(conll)}
    config = write_config(tmp_path, good)
    assert_user_error(
        polytask("train", str(config), "-o", str(tmp_path / "out")),
        "ner.conll, line 4: token 'bob' has no tag",
    )
    assert not (tmp_path / "out").exists()


def test_resume_without_checkpoint(tmp_path: Path, good: dict[str, Any]) -> None:
    config = write_config(tmp_path, good)
    (tmp_path / "empty").mkdir()
    assert_user_error(
        polytask("train", str(config), "-o", str(tmp_path / "empty"), "--resume"),
        "has no complete checkpoint to resume from",
    )
    assert not any((tmp_path / "empty").iterdir())


def test_bad_override(tmp_path: Path, good: dict[str, Any]) -> None:
    config = write_config(tmp_path, good)
    assert_user_error(
        polytask(
            "train",
            str(config),
            "sampler.name=temperature",
            "sampler.alpha=-1",
            "-o",
            str(tmp_path / "o"),
        ),
        "sampler.alpha",
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    from tests.conftest import regression_rows, sentiment_rows, tagging_rows, write_jsonl

    tmp = tmp_path_factory.mktemp("trained")
    makers = {"sent": sentiment_rows, "tags": tagging_rows, "reg": regression_rows}
    files = {
        t: {
            s: write_jsonl(tmp / t / f"{s}.jsonl", m(24, 1))
            for s in ("train", "validation", "test")
        }
        for t, m in makers.items()
    }
    config = write_config(tmp, base_config(tiny_encoder, files, max_steps=3, eval_every=3))
    result = polytask("train", str(config), "-o", str(tmp / "run"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "results (best checkpoint)" in result.stdout
    return tmp / "run"


def test_predict_unknown_task(trained: Path) -> None:
    assert_user_error(
        polytask("predict", str(trained), "--task", "sentt", "--input", "-", stdin="good\n"),
        "unknown task 'sentt' (did you mean 'sent'?)",
    )


def test_predict_and_eval(trained: Path) -> None:
    result = polytask(
        "predict",
        str(trained),
        "--task",
        "tags",
        "--input",
        "-",
        stdin='alice visited paris\n{"tokens": ["bob", "and", "london"]}\n',
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(r["tags"]) for r in lines] == [3, 3]
    assert lines[1]["input"] == ["bob", "and", "london"]
    result = polytask("eval", str(trained), "--split", "validation")
    assert result.returncode == 0, result.stderr
    assert "sent" in result.stdout and "accuracy" in result.stdout


def test_eval_missing_run_dir(tmp_path: Path) -> None:
    assert_user_error(polytask("eval", str(tmp_path / "nope")), "run directory not found")


def test_ls_lists_registries() -> None:
    result = polytask("ls")
    assert result.returncode == 0
    for name in (
        "hard",
        "temperature",
        "annealed",
        "round_robin",
        "classification",
        "tagging",
        "regression",
        "uncertainty",
        "famo",
        "pcgrad",
        "upgrad",
        "nash_mtl",
    ):
        assert name in result.stdout
