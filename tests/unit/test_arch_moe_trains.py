"""``mmoe`` and ``switch`` train the bundled three-task demo (tiny random encoder, bundled data
subsets) with every sampler and with equal / uncertainty / pcgrad; the run's routing report
has shares summing to 1 per task, switch logs its load-balancing loss, and a saved run
reloads and predicts like the in-memory model."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import polytask.train
from polytask.config.run import load_config
from polytask.data.batching import collate
from polytask.predict.predictor import Predictor
from polytask.samplers import SAMPLERS
from polytask.train import train
from tests.unit.test_every_method_trains import STEPS, demo_run, pytestmark  # noqa: F401

ARCH_KWARGS: dict[str, dict[str, Any]] = {"mmoe": {"experts": 3}, "switch": {"layers": 2}}
ARCHS = {n: [f"architecture.{k}={v}" for k, v in kw.items()] for n, kw in ARCH_KWARGS.items()}
TASKS = ("sentiment", "movies", "ner")


def falls(records: list[dict[str, Any]], per_task: bool = True) -> None:
    """Finite losses, every task updated; each task's mean loss over its last third of
    updates is below its first third (steps may train a subset of the tasks). With
    ``per_task=False`` only the sum of those means must fall: with two tasks per step a
    task gets ~13 noisy updates, too few for the tiny random encoder to move tweet sentiment
    off ln 3 reliably, while the tagging loss falls by far more than that noise."""
    assert len(records) == STEPS
    firsts, lasts = [], []
    for task in TASKS:
        seen = [r["loss"][task] for r in records if task in r["loss"]]
        assert len(seen) >= 6 and all(math.isfinite(v) for v in seen), (task, seen)
        third = len(seen) // 3
        first, last = sum(seen[:third]) / third, sum(seen[-third:]) / third
        assert last < first or not per_task, (task, first, last)
        firsts.append(first)
        lasts.append(last)
    assert sum(lasts) < sum(firsts), (firsts, lasts)


def routing_ok(run: Path, name: str, records: list[dict[str, Any]]) -> None:
    """Acceptance 5: report.json holds every task's shares (sum 1 per task and block);
    switch logs a finite, positive load-balancing loss every step."""
    routing = json.loads((run / "report.json").read_text())["routing"]
    assert routing["architecture"] == name and set(routing["tasks"]) == set(TASKS)
    blocks = 1 if name == "mmoe" else 2
    for entry in routing["tasks"].values():
        assert entry["count"] > 0 and len(entry["shares"]) == blocks
        for shares in entry["shares"].values():
            assert len(shares) == routing["experts"]
            assert sum(shares) == pytest.approx(1.0, abs=1e-5)
    if name == "switch":
        values = [r["regularization"]["load_balance"] for r in records]
        assert len(values) == STEPS and all(0 < v < 1 for v in values)  # 0.01 · (≥ 1)
    else:
        assert all("regularization" not in r for r in records)


@pytest.mark.parametrize("sampler", SAMPLERS.names())
@pytest.mark.parametrize("name", list(ARCHS))
def test_every_sampler(tmp_path: Path, tiny_encoder: Path, name: str, sampler: str) -> None:
    records = demo_run(
        tmp_path,
        tiny_encoder,
        f"architecture.name={name}",
        *ARCHS[name],
        f"sampler.name={sampler}",
        "sampler.tasks_per_step=2",
    )
    falls(records, per_task=False)
    routing_ok(tmp_path / "run", name, records)


METHODS = {
    "equal": ["weighting.name=equal"],
    "uncertainty": ["weighting.name=uncertainty"],
    "pcgrad": ["aggregator.name=pcgrad"],
}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("name", list(ARCHS))
def test_weightings_and_pcgrad(tmp_path: Path, tiny_encoder: Path, name: str, method: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = demo_run(
            tmp_path,
            tiny_encoder,
            f"architecture.name={name}",
            *ARCHS[name],
            *METHODS[method],
            "sampler.tasks_per_step=all",
        )
    falls(records)
    routing_ok(tmp_path / "run", name, records)
    assert not [w for w in caught if "per-task passes" in str(w.message)]  # no fallback
    if method == "pcgrad":  # exact per-task gradients from one backward (segment split)
        assert {r["grad_method"] for r in records} == {"segments"}
        assert all(len(r["cosine"]) == 3 for r in records)


@pytest.mark.parametrize("name", list(ARCHS))
def test_saved_run_reloads_and_predicts_identically(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, monkeypatch: Any, name: str
) -> None:
    from tests.conftest import base_config

    raw = base_config(tiny_encoder, task_files, max_steps=6, eval_every=3)
    raw["architecture"] = {"name": name, **ARCH_KWARGS[name]}

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    built: list[Any] = []
    real_build = polytask.train.build
    monkeypatch.setattr(polytask.train, "build", lambda c: built.append(real_build(c)) or built[0])
    out = tmp_path / "run"
    train(load_config(str(path), []), out, show_progress=False)
    setup = built[0]  # in memory: the best checkpoint's weights (reloaded by train)
    memory, saved = setup.model.eval(), Predictor(out).model
    assert type(saved) is type(memory) and saved.describe() == memory.describe()
    pad = int(setup.tokenizer.pad_token_id or 0)
    worst = 0.0
    with torch.no_grad():
        for task, data in setup.data.items():
            rows = data.splits["test"][:16]
            batch = collate([(setup.specs[task], rows)], pad)
            args = (batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.segments)
            a, b = memory(*args)[task], saved(*args)[task]
            worst = max(worst, float((a - b).abs().max()))
    assert worst < 1e-5, worst
    assert saved.report()["routing"]["tasks"].keys() == setup.specs.keys()
