"""Shared inputs (``tasks.N.inputs``): two tasks over the same rows, encoded once per step.

One file holds a text, a sentiment label and a number per row (the number missing on some
rows). Task ``sent`` classifies the text, task ``size`` (``inputs: sent``) regresses the
number: every step draws the same rows for both, the encoder sees each row once, and a
missing number masks ``size`` only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from polytask.config.run import config_from_dict
from polytask.data.batching import collate
from polytask.errors import ConfigError
from polytask.tasks import TaskSpec
from tests.conftest import sentiment_rows, write_jsonl


def shared_files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for split, n in {"train": 64, "validation": 24, "test": 24}.items():
        rows = sentiment_rows(n, seed=len(split))
        for i, row in enumerate(rows):
            row["size"] = None if i % 5 == 0 else float(len(row["text"].split()))
        out[split] = str(write_jsonl(tmp_path / "data" / f"{split}.jsonl", rows))
    return out


def shared_config(encoder: Path, files: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "seed": 3,
        "encoder": {"name": str(encoder), "max_length": 32},
        "tasks": [
            {"name": "sent", "type": "classification", "data": dict(files)},
            {
                "name": "size",
                "type": "regression",
                "data": dict(files),
                "columns": {"label": "size"},
                "inputs": "sent",
            },
        ],
        "train": {"batch_size": 8, "max_steps": 4, "eval_every": 4, "patience": None},
        **extra,
    }


def test_collate_gives_a_reading_task_the_rows_of_its_source() -> None:
    a = TaskSpec(name="a", type="classification", labels=["x", "y"])
    b = TaskSpec(name="b", type="regression")
    rows: dict[str, list[Any]] = {"input_ids": [[1, 2, 3], [1, 2]], "target": [0, 1]}
    batch = collate([(a, rows), (b, {**rows, "target": [0.5, None]})], 0, {"b": "a"})
    assert batch.input_ids.shape == (2, 3)  # the rows once
    assert [(s.task, s.start, s.stop) for s in batch.segments] == [("a", 0, 2), ("b", 0, 2)]
    assert batch.labels["a"].tolist() == [0, 1]
    assert batch.labels["b"][0] == 0.5 and torch.isnan(batch.labels["b"][1])  # masked: b only


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["tasks"][1].update(inputs="snt"),
            "'snt' is not a task (did you mean 'sent'?)",
        ),
        (lambda c: c["tasks"][1].update(inputs="size"), "cannot read its own rows"),
        (
            lambda c: c["tasks"][1]["data"].update(max_train_examples=10),
            "must read the same data",
        ),
        (lambda c: c["tasks"][1].update(max_length=16), "same max_length"),
        (
            lambda c: (c["tasks"][1].pop("inputs"), c["train"].update(single_input="exact")),
            "train.single_input: no task reads another task's rows",
        ),
        (
            lambda c: c.update(sampler={"name": "uniform"}),
            "1 trained tasks reading their own rows): remove it",
        ),
    ],
)
def test_bad_shared_inputs_are_refused_at_load(
    tiny_encoder: Path, tmp_path: Path, change: Any, message: str
) -> None:
    config = shared_config(tiny_encoder, shared_files(tmp_path))
    change(config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(config, "shared.yaml")


def test_an_architecture_that_encodes_per_task_is_refused_at_load(
    tiny_encoder: Path, tmp_path: Path
) -> None:
    config = shared_config(tiny_encoder, shared_files(tmp_path), architecture={"name": "soft"})
    with pytest.raises(ConfigError, match=re.escape("tasks.size.inputs: architecture 'soft'")):
        config_from_dict(config, "shared.yaml")


def test_rows_that_differ_after_loading_are_refused() -> None:
    import datasets

    from polytask.data.source import TaskData
    from polytask.errors import DataError
    from polytask.training.setup import check_shared_rows

    def task(ids: list[list[int]]) -> Any:
        spec = TaskSpec(name="x", type="regression")
        return TaskData(spec, {"train": datasets.Dataset.from_dict({"input_ids": ids})})

    same = {"a": task([[1, 2], [3]]), "b": task([[1, 2], [3]])}
    check_shared_rows({"b": "a"}, same)  # the same rows: accepted
    other = {"a": task([[1, 2], [3]]), "b": task([[1, 2], [4]])}
    with pytest.raises(DataError, match="the train rows of 'b' and 'a' differ"):
        check_shared_rows({"b": "a"}, other)


@pytest.mark.parametrize(
    ("aggregator", "single_input", "method"),
    [
        ("sum", None, None),
        ("upgrad", "exact", "per-task"),
        ("upgrad", "representation", "representation"),
    ],
)
def test_training_encodes_shared_rows_once(
    tiny_encoder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    aggregator: str,
    single_input: str | None,
    method: str | None,
) -> None:
    """Picking one task of the pair trains both on the same rows: 8 encoder rows a step
    (not 16), both tasks in every step, and the engine in the configured single-input mode."""
    import polytask.train as train_module
    from polytask.train import train
    from polytask.training import setup as setup_module

    train_extra = {} if single_input is None else {"single_input": single_input}
    config = shared_config(tiny_encoder, shared_files(tmp_path), aggregator={"name": aggregator})
    config["train"].update(train_extra, monitor_every=None)
    rows_seen: list[int] = []
    real_build = setup_module.build

    def count_rows(module: Any, args: Any, kwargs: Any, out: Any) -> None:
        if module.training:
            rows_seen.append(kwargs["input_ids"].shape[0])

    def spying_build(cfg: Any) -> Any:
        setup = real_build(cfg)
        setup.model.get_submodule("encoder").register_forward_hook(count_rows, with_kwargs=True)
        return setup

    monkeypatch.setattr(train_module, "build", spying_build)
    train(config_from_dict(config, "shared.yaml"), tmp_path / "run", show_progress=False)
    records = [
        json.loads(line)
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if '"event": "train"' in line
    ]
    assert len(records) == 4
    assert all(r["tasks"] == ["sent", "size"] for r in records)
    assert rows_seen and all(n == 8 for n in rows_seen)  # each row once: 8, not 16
    assert records[-1]["updates"] == {"sent": 4, "size": 4}
    if method is not None:
        assert {r["grad_method"] for r in records} == {method}
