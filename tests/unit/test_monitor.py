"""Gradient-cosine monitoring during training (``train.monitor_every``): logged every N
steps for methods that need no per-task gradients, without changing the update."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from polytask.config.run import config_from_dict
from polytask.train import train
from polytask.training.runlog import read_records
from tests.conftest import base_config


def run(tmp_path: Path, encoder: Path, files: Any, name: str, **changes: Any) -> Path:
    raw = base_config(encoder, files, max_steps=4, eval_every=4, **changes.pop("train", {}))
    raw["sampler"] = {"tasks_per_step": "all"}
    raw.update(changes)
    out = tmp_path / name
    train(config_from_dict(raw), out, show_progress=False)
    return out


@pytest.mark.parametrize("aggregator", ["mean"])  # sum is the special case c = 1
def test_monitoring_logs_cosines_and_keeps_the_update(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, aggregator: str
) -> None:
    method = {"aggregator": {"name": aggregator}}
    watched = run(tmp_path, tiny_encoder, task_files, "on", train={"monitor_every": 2}, **method)
    plain = run(tmp_path, tiny_encoder, task_files, "off", train={"monitor_every": None}, **method)
    steps = [r for r in read_records(watched / "metrics.jsonl") if r["event"] == "train"]
    assert [("cosine" in r) for r in steps] == [False, True, False, True]
    for r in steps[1::2]:
        cos = torch.tensor(r["cosine"])
        assert cos.shape == (3, 3) and torch.allclose(cos.diagonal(), torch.ones(3), atol=1e-3)
        assert set(r["grad_norm"]) == {"sent", "tags", "reg"}
        assert r["grad_method"] == "segments"
    off = [r for r in read_records(plain / "metrics.jsonl") if r["event"] == "train"]
    assert not any("cosine" in r for r in off)
    # the same update: the monitored run's weights equal the plain run's
    a, b = (load_file(str(d / "model" / "model.safetensors")) for d in (watched, plain))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
