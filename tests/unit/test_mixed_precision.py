"""Mixed precision through Accelerate: bf16 trains on the CPU; fp16 on a CPU is refused."""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from polytask.config.run import config_from_dict, load_config
from polytask.errors import ConfigError
from polytask.train import train
from polytask.training.runlog import read_records
from tests import forked_cli
from tests.conftest import base_config

ROOT = Path(__file__).resolve().parents[2]


def run_config(encoder: Path, files: Any, aggregator: str, precision: str) -> dict[str, Any]:
    data = base_config(encoder, files, max_steps=4, eval_every=4, mixed_precision=precision)
    data["sampler"] = {"tasks_per_step": "all"}
    data["aggregator"] = {"name": aggregator}
    return data


@pytest.mark.parametrize("aggregator", ["sum", "pcgrad"])
def test_bf16_trains_on_cpu(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, aggregator: str
) -> None:
    """equal (sum) and pcgrad under bf16 autocast: the encoder's matmuls run in bf16, the
    per-task gradients and the weights stay float32, every loss and weight is finite."""
    dtypes: set[torch.dtype] = set()

    def record(module: torch.nn.Module, args: Any, out: Any) -> None:
        if isinstance(module, torch.nn.Linear) and torch.is_grad_enabled():
            dtypes.add(out.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        config = config_from_dict(run_config(tiny_encoder, task_files, aggregator, "bf16"))
        slow = pytest.warns(RuntimeWarning, match="no native bf16")
        with nullcontext() if _native() else slow:
            final = train(config, tmp_path / "run", show_progress=False)
    finally:
        handle.remove()
    assert torch.bfloat16 in dtypes  # autocast was on in training
    assert final["mixed_precision"] == "bf16" and final["steps"] == 4
    records = [r for r in read_records(tmp_path / "run" / "metrics.jsonl") if r["event"] == "train"]
    assert all(math.isfinite(v) for r in records for v in r["loss"].values())
    assert final["skipped_steps"] == 0
    if aggregator == "pcgrad":
        assert all(r["grad_method"] == "segments" for r in records)
        assert all(math.isfinite(v) for r in records for v in r["combine"].values())
    weights = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())


def test_fp16_on_cpu_is_a_one_line_config_error(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    data = run_config(tiny_encoder, task_files, "sum", "fp16")
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        train(config_from_dict(data), tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()
    path = tmp_path / "fp16.yaml"
    path.write_text(yaml.safe_dump(data))
    done = forked_cli.run(
        ["train", str(path), "-o", str(tmp_path / "x")],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        timeout=300,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "fp16 needs a GPU" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()


def _native() -> bool:
    from polytask.distributed import native_cpu_bf16

    return native_cpu_bf16()


def test_a_bare_yaml_no_means_no_mixed_precision(tmp_path: Path, task_files: Any) -> None:
    path = tmp_path / "run.yaml"
    data = base_config(tmp_path, task_files)
    text = yaml.safe_dump(data).replace("train:\n", "train:\n  mixed_precision: no\n")
    path.write_text(text)
    assert yaml.safe_load(text)["train"]["mixed_precision"] is False  # what YAML reads
    assert load_config(path).train.mixed_precision == "no"
    assert load_config(path, ["train.mixed_precision=no"]).train.mixed_precision == "no"
