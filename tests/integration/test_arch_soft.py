"""Soft sharing on the bundled pretrained encoder and real data: a few steps, the copies drift
apart under the penalty, every task's training loss falls, the saved model reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polytask.config.run import load_config
from polytask.predict.predictor import Predictor
from polytask.train import train
from polytask.training.runlog import read_records
from tests.integration.test_real_encoder import _ready

pytestmark = pytest.mark.integration


@pytest.mark.skipif(not _ready(), reason="run `make install` (bundled encoder and data)")
def test_soft_sharing_trains_on_the_real_encoder(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            "architecture.name=soft",
            "architecture.penalty=0.01",
            "architecture.top_k_layers=3",
            "train.max_steps=8",
            "train.eval_every=8",
            "train.batch_size=8",
            "train.patience=null",
            "encoder.max_length=24",
            "tasks.ner.max_length=24",
            *(
                f"tasks.{t}.data.max_{s}_examples=48"
                for t in ("sentiment", "movies", "ner")
                for s in ("train", "validation", "test")
            ),
        ],
    )
    out = tmp_path / "run"
    final = train(config, out, show_progress=False)
    records = [r for r in read_records(out / "metrics.jsonl") if r["event"] == "train"]
    penalty = [r["regularization"]["soft_penalty"] for r in records]
    assert penalty[0] < 1e-9 < penalty[-1]  # equal copies at first, then apart
    for task in ("sentiment", "movies", "ner"):
        losses = [r["loss"][task] for r in records]
        assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, (task, losses)
    encoder = 22_713_216
    params = final["params"]
    assert params["shared"] == 0
    assert all(n > encoder for n in params["per_task"].values())
    assert params["total"] == sum(params["per_task"].values())
    saved = json.loads((out / "model" / "polytask.json").read_text())
    assert saved["architecture"]["name"] == "soft"
    prediction = Predictor(out).predict("movies", ["a wonderful, moving film"])[0]
    assert prediction["label"] in {"fresh", "rotten", "plot"}
