"""``mmoe`` on the bundled pretrained encoder and real demo data: a short run trains every
task, writes a routing report whose shares sum to 1 per task, and reloads identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polytask.config.run import load_config
from polytask.experiments.evaluate_run import evaluate_run_with_report
from polytask.train import train
from polytask.training.runlog import read_records
from tests.integration.test_real_encoder import _ready

pytestmark = pytest.mark.integration

SHORT = [
    "train.max_steps=16",
    "train.eval_every=16",
    "train.batch_size=8",
    "train.patience=null",
    "train.lr=1e-4",
    "train.head_lr=1e-3",
    "encoder.max_length=32",
    "tasks.ner.max_length=32",
    *(
        f"tasks.{t}.data.max_{s}_examples={n}"
        for t in ("sentiment", "movies", "ner")
        for s, n in (("train", 512), ("validation", 48), ("test", 48))
    ),
]


def routing_sums_to_one(routing: dict) -> None:
    assert set(routing["tasks"]) == {"sentiment", "movies", "ner"}
    for entry in routing["tasks"].values():
        for shares in entry["shares"].values():
            assert sum(shares) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.skipif(not _ready(), reason="run `make install` (bundled encoder and data)")
def test_mmoe_real_encoder(tmp_path: Path) -> None:
    config = load_config(None, [*SHORT, "architecture.name=mmoe", "architecture.experts=4"])
    out = tmp_path / "run"
    final = train(config, out, show_progress=False)
    records = [r for r in read_records(out / "metrics.jsonl") if r["event"] == "train"]

    # the objective (the summed loss) falls over 16 steps; one task's loss need not: three-way
    # sentiment sits at ln 3 ≈ 1.10 for the first steps (4-step means 1.1077 -> 1.1098 once
    # the length-chunked forward changed the dropout draws), while ner and movies fall
    def mean(rs: list[dict], tasks: tuple[str, ...]) -> float:
        return sum(r["loss"][t] for r in rs for t in tasks) / len(rs)

    everything = ("sentiment", "movies", "ner")
    assert mean(records[-4:], everything) < mean(records[:4], everything)
    for task in ("movies", "ner"):
        assert mean(records[-4:], (task,)) < mean(records[:4], (task,)), task
    routing = json.loads((out / "report.json").read_text())["routing"]
    routing_sums_to_one(routing)
    assert routing["tasks"]["ner"]["unit"] == "tokens"
    hidden = 384
    assert final["params"]["shared"] == 22_713_216 + 4 * (hidden * hidden + hidden)
    metrics, report = evaluate_run_with_report(out, "test")
    for task in ("sentiment", "movies", "ner"):
        for key, value in final["tasks"][task]["test"].items():
            assert metrics[task][key] == pytest.approx(value, abs=1e-6), (task, key)
    assert report["routing"] == routing  # same split, same model: the same routing
