"""Non-finite losses: the step is skipped (no update) and counted; K in a row stop the run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import polytask.train
import polytask.training.step
from polytask.config.run import config_from_dict
from polytask.train import train
from polytask.training.runlog import read_records
from polytask.training.step import TrainingError
from tests.conftest import base_config


def poison(monkeypatch: pytest.MonkeyPatch, bad_steps: set[int]) -> None:
    """Make the ``reg`` loss NaN on the given (1-based) steps; one forward per step."""
    real = polytask.training.step.task_losses
    step = iter(range(1, 10_000))

    def losses(model: Any, batch: Any, specs: Any) -> dict[str, torch.Tensor]:
        out = real(model, batch, specs)
        if next(step) in bad_steps and "reg" in out:
            out["reg"] = out["reg"] * float("nan")
        return out

    monkeypatch.setattr(polytask.training.step, "task_losses", losses)


def watch_updates(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, bool]]:
    """Per step: (skipped?, did any parameter change?)."""
    real = polytask.train.train_step
    seen: list[tuple[bool, bool]] = []

    def step(setup: Any, model: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        before = [p.detach().clone() for p in model.parameters()]
        record = real(setup, model, *args, **kwargs)
        after = list(model.parameters())
        changed = any(not torch.equal(a, p) for a, p in zip(before, after, strict=True))
        seen.append(("skipped" in record, changed))
        return record

    monkeypatch.setattr(polytask.train, "train_step", step)
    return seen


def config(encoder: Path, files: Any, **train_kw: Any) -> Any:
    data = base_config(encoder, files, **train_kw)
    data["sampler"] = {"tasks_per_step": "all"}
    return config_from_dict(data)


def test_nan_steps_are_skipped_and_counted(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, {2, 5})
    seen = watch_updates(monkeypatch)
    out = tmp_path / "run"
    final = train(config(tiny_encoder, task_files, max_steps=6), out, show_progress=False)
    assert seen == [(s in (2, 5), s not in (2, 5)) for s in range(1, 7)]  # no update on 2, 5
    assert final["skipped_steps"] == 2 and final["steps"] == 6
    assert final["updates"] == {"sent": 4, "tags": 4, "reg": 4}
    assert json.loads((out / "final_metrics.json").read_text())["skipped_steps"] == 2
    records = [r for r in read_records(out / "metrics.jsonl") if r["event"] == "train"]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert [r.get("skipped") for r in records] == [
        "non-finite loss" if s in (2, 5) else None for s in range(1, 7)
    ]
    assert records[1]["loss"]["reg"] == "nan" and isinstance(records[1]["loss"]["sent"], float)
    assert [r["skipped_steps"] for r in records] == [0, 1, 1, 1, 2, 2]
    assert (out / "curves.png").is_file()  # the plot skips the non-finite records


def test_consecutive_bad_steps_stop_the_run(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, set(range(3, 100)))
    out = tmp_path / "run"
    cfg = config(tiny_encoder, task_files, max_steps=20, max_bad_steps=3)
    with pytest.raises(TrainingError) as err:
        train(cfg, out, show_progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("training stopped at step 5: 3 consecutive steps with a non-finite")
    assert "reg=nan" in message and "train.max_bad_steps (now 3)" in message
    records = [r for r in read_records(out / "metrics.jsonl") if r["event"] == "train"]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]  # the log shows the bad steps
    assert not (out / "final_metrics.json").exists()


def test_resume_restores_the_skipped_step_counter(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(monkeypatch, {2})
    cfg = config(tiny_encoder, task_files, max_steps=6, eval_every=6, checkpoint_every=3)
    out = tmp_path / "run"
    final = train(cfg, out, show_progress=False)
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())["state"]
    assert state["step"] == 3 and state["skipped_steps"] == 1
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    (resumed / "final_metrics.json").unlink()  # stopped after its checkpoint (finished: no-op)
    monkeypatch.undo()  # steps 4-6 were clean in the first run too
    again = train(cfg, resumed, resume=True, show_progress=False)
    assert again["skipped_steps"] == final["skipped_steps"] == 1
    assert again["updates"] == final["updates"]
    a = load_file(str(out / "model" / "model.safetensors"))
    b = load_file(str(resumed / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
