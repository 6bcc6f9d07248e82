"""Rows a loader drops or masks are counted per split, never silent (issue 22 item 4):
empty texts refused with file and line (or, with ``data.empty_texts``, dropped or kept, and
counted), rows without the label key and empty label cells counted apart; the counts reach
``final_metrics.json`` and the run's output, with a warning above 10 %."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from polytask.config.run import TaskConfig
from polytask.data.counts import WARN_SHARE, count_warnings, flagged
from polytask.data.loading import read_task
from polytask.data.texts import _texts
from polytask.errors import DataError
from tests import forked_cli
from tests.conftest import base_config, regression_rows, sentiment_rows


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _task(
    tmp: Path, rows: list[dict[str, Any]], labels: list[str] | None = None, **data: Any
) -> TaskConfig:
    train = _jsonl(tmp / "train.jsonl", rows)
    valid = _jsonl(tmp / "valid.jsonl", sentiment_rows(6, 1))
    return TaskConfig.model_validate(
        {
            "name": "sent",
            "type": "classification",
            "data": {"train": str(train), "validation": str(valid), **data},
            "labels": labels,
        }
    )


def _rows() -> list[dict[str, Any]]:
    """Ten rows: line 2 has an empty text, line 4 lacks the label key, lines 6 and 7 have
    an empty and a null label."""
    rows = sentiment_rows(10, 3)
    rows[1]["text"] = " "
    del rows[3]["label"]
    rows[5]["label"] = ""
    rows[6]["label"] = None
    return rows


def test_empty_text_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        read_task(_task(tmp_path, _rows()), seed=0)
    message = str(error.value)
    assert f"{tmp_path / 'train.jsonl'}, line 2, column 'text': text is empty" in message
    assert "data.empty_texts: drop" in message and "\n" not in message


def test_keep_trains_on_a_blank_string_and_counts_it(tmp_path: Path) -> None:
    _, _, raw, counts = read_task(_task(tmp_path, _rows(), empty_texts="keep"), seed=0)
    assert len(raw["train"]) == 10 and raw["train"]["text"][1] == " "
    assert counts["train"]["empty_texts"] == 1 and counts["train"]["dropped"] == 0
    rows = _rows()
    rows[1]["text"] = None  # a null text has nothing to keep: still refused
    with pytest.raises(DataError, match=r"line 2, column 'text': text is empty"):
        read_task(_task(tmp_path, rows, empty_texts="keep"), seed=0)


def test_a_bundled_dataset_keeps_its_empty_texts_unless_told() -> None:
    """movie_snippets' train split has one empty text; the published numbers keep it."""
    bundled = {"name": "m", "type": "classification", "data": {"bundled": "movie_snippets"}}
    assert TaskConfig.model_validate(bundled).data.empty_texts == "keep"
    bundled["data"] = {"bundled": "movie_snippets", "empty_texts": "error"}
    assert TaskConfig.model_validate(bundled).data.empty_texts == "error"
    files = {"train": "a.jsonl", "validation": "b.jsonl"}
    assert TaskConfig.model_validate({**bundled, "data": files}).data.empty_texts == "error"


def test_counts_tell_missing_key_from_empty_cell(tmp_path: Path) -> None:
    _, _, raw, counts = read_task(_task(tmp_path, _rows(), empty_texts="drop"), seed=0)
    assert counts["train"] == {
        "rows": 10,
        "empty_texts": 1,
        "dropped": 1,
        "used": 9,
        "labelled": 6,
        "missing_label_key": 1,
        "empty_label": 2,
    }
    assert len(raw["train"]) == 9 and " " not in raw["train"]["text"]
    assert "label_state" not in raw["train"].column_names
    assert counts["validation"]["empty_texts"] == 0


def test_counts_follow_the_subset(tmp_path: Path) -> None:
    rows = sentiment_rows(40, 5)
    for row in rows[:20]:
        del row["label"]
    cfg = _task(tmp_path, rows, max_train_examples=10)
    _, _, raw, counts = read_task(cfg, seed=0)
    kept = counts["train"]
    assert kept["rows"] == 40 and kept["used"] == 10 == len(raw["train"])
    assert kept["labelled"] + kept["missing_label_key"] == 10
    assert kept["labelled"] == sum(t is not None for t in raw["train"]["target"])


def test_a_later_error_names_the_files_line_after_a_drop(tmp_path: Path) -> None:
    rows = sentiment_rows(6, 2)
    rows[0]["text"] = ""
    rows[4]["label"] = "unknown"
    cfg = _task(tmp_path, rows, ["neg", "neu", "pos"], empty_texts="drop")
    with pytest.raises(DataError, match=r"train\.jsonl, line 5, column 'label'"):
        read_task(cfg, seed=0)


def test_csv_empty_cells_and_texts(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "score"])
        for i, row in enumerate(regression_rows(8, 1)):
            writer.writerow(["" if i == 2 else row["text"], "" if i in (0, 5) else row["score"]])
    cfg = TaskConfig.model_validate(
        {
            "name": "reg",
            "type": "regression",
            "data": {"train": str(path), "validation": str(path), "empty_texts": "drop"},
            "columns": {"label": "score"},
        }
    )
    _, _, _, counts = read_task(cfg, seed=0)
    assert counts["train"]["dropped"] == 1 and counts["train"]["empty_label"] == 2
    assert counts["train"]["missing_label_key"] == 0  # a CSV row has every column
    with pytest.raises(DataError, match=r"train\.csv, row 3, column 'text': text is empty"):
        cfg.data.empty_texts = "error"
        read_task(cfg, seed=0)


def test_lm_texts_refuse_or_drop_blank_rows(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"text": "a b"}, {"text": ""}, {"text": "c"}])
    data = {"train": str(path), "validation": str(path)}
    cfg = TaskConfig.model_validate({"name": "lm", "type": "lm", "data": data})
    with pytest.raises(DataError, match=r"t\.jsonl, line 2, column 'text': text is empty"):
        _texts(cfg, "train", 0)
    cfg.data.empty_texts = "drop"
    assert _texts(cfg, "train", 0) == (["a b", "c"], 3, 1, 1)
    cfg.data.empty_texts = "keep"  # nothing to predict in it: skipped after the subset
    assert _texts(cfg, "train", 0) == (["a b", "c"], 3, 1, 1)


def test_warning_threshold() -> None:
    assert WARN_SHARE == 0.10
    base = {"rows": 100, "used": 100, "missing_label_key": 0, "empty_label": 0}
    assert not flagged({**base, "empty_texts": 10})  # 10 %: not above
    assert flagged({**base, "empty_texts": 5, "empty_label": 6})  # 11 % together
    counts = {**base, "empty_texts": 0, "dropped": 0, "missing_label_key": 11}
    assert count_warnings("t", {"train": counts}) == [
        "t/train: 100 rows, 0 empty texts (0 dropped), 11 without the label key, 0 empty "
        "labels (masked), 100 used: more than 10% of the split has an empty text or no label"
    ]


def _held_out(tmp: Path, encoder: Path) -> dict[str, Any]:
    """A dataset the project has not seen: JSONL classification and CSV regression, each
    split with empty texts, rows without the label key (JSON) and empty label cells."""
    files: dict[str, dict[str, Path]] = {"sent": {}, "reg": {}}
    for split, n in (("train", 40), ("validation", 20), ("test", 20)):
        rows = sentiment_rows(n, n)
        rows[0]["text"], rows[1]["text"] = "", "   "
        del rows[2]["label"]
        rows[3]["label"], rows[4]["label"] = "", None
        files["sent"][split] = _jsonl(tmp / f"sent-{split}.jsonl", rows)
        path = tmp / f"reg-{split}.csv"
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "score"])
            for i, r in enumerate(regression_rows(n, n + 1)):
                writer.writerow(["" if i == 0 else r["text"], "" if i in (1, 2) else r["score"]])
        files["reg"][split] = path
    cfg = base_config(encoder, {**files, "tags": files["sent"]}, max_steps=2, eval_every=2)
    cfg["tasks"] = [cfg["tasks"][0], cfg["tasks"][2]]
    return cfg


def test_cli_prints_the_counts_per_split(tmp_path: Path, tiny_encoder: Path) -> None:
    """The held-out style check: a fresh run prints what it dropped and masked per split."""
    cfg = _held_out(tmp_path, tiny_encoder)
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    refused = forked_cli.run(["train", str(config), "-o", str(out)], env=env, timeout=300)
    assert refused.returncode == 2 and not out.exists()
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "sent-train.jsonl, line 1, column 'text': text is empty" in lines[0]
    for task in cfg["tasks"]:
        task["data"]["empty_texts"] = "drop"
    config.write_text(yaml.safe_dump(cfg))
    result = forked_cli.run(["train", str(config), "-o", str(out), "--quiet"], env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if line.startswith("data ")]
    over = "  ! more than 10% of the split has an empty text or no label"
    sent = "2 empty texts (2 dropped), 1 without the label key, 2 empty labels (masked)"
    reg = "1 empty texts (1 dropped), 0 without the label key, 2 empty labels (masked)"
    assert printed == [
        f"data sent/train: 40 rows, {sent}, 38 used{over}",
        f"data sent/validation: 20 rows, {sent}, 18 used{over}",
        f"data sent/test: 20 rows, {sent}, 18 used{over}",
        f"data reg/train: 40 rows, {reg}, 39 used",
        f"data reg/validation: 20 rows, {reg}, 19 used{over}",
        f"data reg/test: 20 rows, {reg}, 19 used{over}",
    ], result.stdout
    assert "sent/validation: 20 rows, 2 empty texts (2 dropped), 1 without the label key" in (
        result.stderr
    )
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["data"]["sent"]["train"] == {
        "rows": 40,
        "empty_texts": 2,
        "dropped": 2,
        "used": 38,
        "labelled": 35,
        "missing_label_key": 1,
        "empty_label": 2,
    }
    assert final["data"]["reg"]["test"]["empty_label"] == 2
