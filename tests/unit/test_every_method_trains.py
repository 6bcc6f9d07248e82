"""Every registered loss weighting and gradient aggregator trains the bundled three-task demo
(tiny random encoder, bundled data subsets): finite losses that fall, weights logged."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from polytask.aggregation import AGGREGATORS
from polytask.config.run import load_config
from polytask.data import bundled
from polytask.train import train
from polytask.training.runlog import read_records
from polytask.weighting import WEIGHTINGS

pytestmark = [
    pytest.mark.skipif(
        not all((bundled.dataset_dir(n) / "manifest.json").is_file() for n in bundled.BUNDLED),
        reason="bundled data not prepared (`polytask data prepare`)",
    ),
    pytest.mark.usefixtures("cached_tables"),  # the demo splits parsed once, not per method
]
STEPS = 30


def demo_run(tmp_path: Path, encoder: Path, *overrides: str) -> list[dict]:
    config = load_config(
        None,
        [
            f"encoder.name={encoder}",
            "encoder.max_length=32",
            "tasks.ner.max_length=32",
            "tasks.sentiment.data.max_train_examples=256",
            "tasks.movies.data.max_train_examples=256",
            "tasks.ner.data.max_train_examples=256",
            "tasks.sentiment.data.max_validation_examples=32",
            "tasks.movies.data.max_validation_examples=32",
            "tasks.ner.data.max_validation_examples=32",
            "tasks.sentiment.data.max_test_examples=32",
            "tasks.movies.data.max_test_examples=32",
            "tasks.ner.data.max_test_examples=32",
            f"train.max_steps={STEPS}",
            f"train.eval_every={STEPS}",
            "train.batch_size=8",
            "train.lr=2e-3",
            "train.head_lr=2e-3",
            "train.patience=null",
            *overrides,
        ],
    )
    out = tmp_path / "run"
    train(config, out, show_progress=False)
    return [r for r in read_records(out / "metrics.jsonl") if r["event"] == "train"]


def assert_trains(records: list[dict]) -> None:
    assert len(records) == STEPS
    for r in records:
        assert all(math.isfinite(v) for v in r["loss"].values()), r
    for task in ("sentiment", "movies", "ner"):
        first = sum(r["loss"][task] for r in records[:8]) / 8
        last = sum(r["loss"][task] for r in records[-8:]) / 8
        assert last < first, (task, first, last)


#: required arguments, and settings under which every task's loss should fall
WEIGHTING_ARGS = {
    "static": ["weighting.weights=[1.0, 0.5, 2.0]"],
    # at the paper's θ = 5 PBI pulls the losses onto its uniform ray and raises the smaller
    # ones by design (here sentiment's 1.18 → 1.39 while d₂ falls 1.2 → 0.08); θ < 1/√T
    # keeps every weight positive
    "pbi": ["weighting.theta=0.5"],
}


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_weighting(tmp_path: Path, tiny_encoder: Path, name: str) -> None:
    extra = WEIGHTING_ARGS.get(name, [])
    records = demo_run(tmp_path, tiny_encoder, f"weighting.name={name}", *extra)
    assert_trains(records)
    assert set(records[-1]["weights"]) == {"sentiment", "movies", "ner"}
    assert all(math.isfinite(w) for w in records[-1]["weights"].values())


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_every_aggregator(tmp_path: Path, tiny_encoder: Path, name: str) -> None:
    records = demo_run(tmp_path, tiny_encoder, f"aggregator.name={name}")
    assert_trains(records)
    if not AGGREGATORS.get(name).gramian_free:
        last = records[-1]
        assert len(last["grad_norm"]) == 3 and len(last["cosine"]) == 3
        assert all(math.isfinite(c) for row in last["cosine"] for c in row)
