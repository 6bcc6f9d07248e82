"""Soft sharing trains the bundled three-task demo (tiny random encoder) with every sampler and
with equal / uncertainty / pcgrad; its penalty is logged; a saved model predicts identically;
a bad argument is one line from the CLI."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from polytask import checkpoint as ckpt
from polytask.config.run import load_config
from polytask.data.batching import collate
from polytask.errors import ConfigError
from polytask.experiments.evaluate_run import evaluate_run
from polytask.predict.predictor import Predictor
from polytask.samplers import SAMPLERS
from polytask.train import build, task_losses
from tests.conftest import base_config
from tests.unit.test_cli import assert_user_error, polytask
from tests.unit.test_every_method_trains import assert_trains, demo_run, pytestmark

__all__ = ["pytestmark"]  # skipped like the other demo tests when the data is not prepared
TASKS = ("sentiment", "movies", "ner")
SOFT = ("architecture.name=soft", "architecture.penalty=0.01")


def assert_each_task_improves(records: list[dict[str, Any]]) -> None:
    """Steps train a subset of tasks: compare each task's first and last few losses."""
    for task in TASKS:
        seen = [r["loss"][task] for r in records if task in r["loss"]]
        assert len(seen) >= 6 and all(math.isfinite(v) for v in seen), (task, seen)
        k = max(3, len(seen) // 3)
        first, last = sum(seen[:k]) / k, sum(seen[-k:]) / k
        assert last < first, (task, first, last)


def assert_penalty_logged(records: list[dict[str, Any]]) -> None:
    values = [r["regularization"]["soft_penalty"] for r in records]
    assert len(values) == len(records)
    assert values[0] < 1e-9  # every copy starts from the same weights
    assert values[-1] > 1e-6 and all(math.isfinite(v) for v in values)


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_every_sampler(tmp_path: Path, tiny_encoder: Path, sampler: str) -> None:
    records = demo_run(
        tmp_path, tiny_encoder, *SOFT, f"sampler.name={sampler}", "sampler.tasks_per_step=1"
    )
    assert all(len(r["tasks"]) == 1 for r in records)
    assert_each_task_improves(records)
    assert_penalty_logged(records)


@pytest.mark.parametrize(
    ("weighting", "aggregator"), [("equal", "sum"), ("uncertainty", "sum"), ("equal", "mean")]
)
def test_weightings_and_aggregators(
    tmp_path: Path, tiny_encoder: Path, weighting: str, aggregator: str
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = demo_run(
            tmp_path,
            tiny_encoder,
            *SOFT,
            "sampler.tasks_per_step=all",
            f"weighting.name={weighting}",
            f"aggregator.name={aggregator}",
        )
    assert_trains(records)
    assert_penalty_logged(records)
    assert not any("shares no parameters" in str(w.message) for w in caught)
    # the saved best model evaluates to the numbers the run reported
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    again = evaluate_run(tmp_path / "run", "test")
    for task in TASKS:
        for metric, value in final["tasks"][task]["test"].items():
            assert again[task][metric] == pytest.approx(value, abs=1e-6), (task, metric)
    assert final["params"]["shared"] == 0


def test_gradient_methods_are_refused_at_load() -> None:
    """No shared parameter, no per-task gradient to combine: pcgrad would be the sum."""
    with pytest.raises(ConfigError, match="architecture 'soft': it trains no shared parameters"):
        load_config(None, [*SOFT, "aggregator.name=pcgrad"])


def test_saved_model_predicts_identically(tmp_path: Path, tiny_encoder: Path) -> None:
    config = load_config(
        None,
        [
            f"encoder.name={tiny_encoder}",
            "encoder.max_length=32",
            "tasks.ner.max_length=32",
            *(f"tasks.{t}.data.max_train_examples=64" for t in TASKS),
            *SOFT,
            "architecture.top_k_layers=1",
        ],
    )
    setup = build(config)
    model = setup.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rows = [(setup.specs[t], setup.data[t].splits["train"][:8]) for t in TASKS]
    batch = collate(rows, int(setup.tokenizer.pad_token_id or 0))
    for _ in range(3):  # a few real updates: the copies and heads drift apart
        losses = task_losses(model, batch, setup.specs)
        total = sum(losses.values()) + model.regularization()["soft_penalty"]
        total.backward()  # type: ignore[union-attr]
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    meta = {"config": config.model_dump(mode="json")}
    ckpt.save_model_folder(tmp_path / "model", model, setup.tokenizer, meta)
    predictor = Predictor(tmp_path / "model")
    assert type(predictor.model) is type(model)
    assert predictor.model.describe() == model.describe()
    with torch.no_grad():
        here = model(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.segments)
        there = predictor.model(
            batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.segments
        )
    for task in TASKS:
        diff = float((here[task] - there[task]).abs().max())
        assert diff < 1e-5, (task, diff)
        assert float(here[task].abs().max()) > 0
    texts = ["what a great film", "awful plot and bad acting"]
    assert predictor.predict("movies", texts) == Predictor(tmp_path / "model").predict(
        "movies", texts
    )


def test_bad_penalty_is_one_line_from_the_cli(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    data = base_config(tiny_encoder, task_files, max_steps=2, eval_every=2)
    data["architecture"] = {"name": "soft", "penalty": -0.5}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    result = polytask("train", str(config), "-o", str(out), "--quiet")
    assert_user_error(result, "architecture: soft: penalty must be >= 0, got -0.5")
    assert not out.exists()
