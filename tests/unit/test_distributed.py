"""Data parallel training: 2 CPU processes under `accelerate launch` equal 1 process.

The same config (tiny encoder, the three synthetic tasks, every task in every step, global
batch 8 per task) trains once in this process and once as 2 gloo processes launched with
``configs/accelerate/cpu-2proc.yaml``; each rank trains on 4 rows of each task's batch.

Tolerance on the final weights: ``TOL`` = 1e-5 (absolute). The two runs differ only in
float summation order: rank-local sums over 4 rows, then an average over 2 ranks, against
one sum over 8 rows — about 1e-7 relative on every gradient. Measured max abs difference
over 8 AdamW steps at lr 1e-3: 0.8e-7 to 2.1e-7 (equal and pcgrad). A real error is four orders
of magnitude larger: without the rescaling of each rank's tagging loss (its token count
differs per rank) the weights differ by 1.3e-3; with the LR scheduler stepping once per
process (Accelerate's default without ``split_batches``), by 2.0e-3.
Dropout is off (encoder and heads): a different row layout draws different masks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from polytask.config.run import config_from_dict
from polytask.data.batching import TaskStream
from polytask.distributed import shard
from polytask.train import train
from polytask.training.runlog import read_records
from tests.conftest import base_config

ROOT = Path(__file__).resolve().parents[2]
CPU_2PROC = ROOT / "configs" / "accelerate" / "cpu-2proc.yaml"
TOL = 1e-5
#: metrics counted from argmax predictions (the rest are continuous in the weights)
ARGMAX = {"accuracy", "macro_f1", "f1", "precision", "recall", "token_accuracy"}
STEPS = 8
TIMEOUT = 300  # seconds per launch: a hung collective fails the test instead of the suite


def no_dropout_encoder(tiny_encoder: Path, folder: Path) -> Path:
    shutil.copytree(tiny_encoder, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


METHODS = {  # "equal": the plain sum of the task losses; "pcgrad": per-task gradient engine
    "equal": {"weighting": {"name": "equal"}, "aggregator": {"name": "sum"}},
    "pcgrad": {"weighting": {"name": "equal"}, "aggregator": {"name": "pcgrad"}},
    # periodic re-solving: reuse steps write .grad themselves (rank-averaged); the resume
    # below starts one step into a period (step-4 checkpoint, N = 3)
    "resolve": {"weighting": {"name": "equal"}, "aggregator": {"name": "mgda", "resolve_every": 3}},
    # a needs_matrix method with [T, P] state: ranks keep the same y, the resume restores it
    "moco": {"weighting": {"name": "equal"}, "aggregator": {"name": "moco"}},
}


def run_config(encoder: Path, files: Any, method: str) -> dict[str, Any]:
    data = base_config(
        encoder, files, max_steps=STEPS, eval_every=STEPS, checkpoint_every=STEPS // 2
    )
    data["sampler"] = {"tasks_per_step": "all"}
    data["architecture"] = {"name": "hard", "head_dropout": 0.0}
    return {**data, **METHODS[method]}


def launch(launcher: list[str], config: Path, out: Path, *extra: str) -> None:
    cmd = [*launcher, "-m", "polytask.cli.main", "train", str(config), "-o", str(out), "--quiet"]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [*cmd, *extra], capture_output=True, text=True, env=env, timeout=TIMEOUT, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]


ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC)]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def weights_diff(a: Path, b: Path) -> float:
    wa = load_file(str(a / "model" / "model.safetensors"))
    wb = load_file(str(b / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def train_losses(run: Path) -> list[dict[str, float]]:
    return [r["loss"] for r in read_records(run / "metrics.jsonl") if r["event"] == "train"]


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_match_one_process(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, method: str
) -> None:
    encoder = no_dropout_encoder(tiny_encoder, tmp_path / "encoder")
    data = run_config(encoder, task_files, method)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    one = tmp_path / "one"
    alone = train(config_from_dict(data), one, show_progress=False)
    two = tmp_path / "two"
    launch(ACCELERATE, config, two)

    final = json.loads((two / "final_metrics.json").read_text())
    assert final["processes"] == 2 and alone["processes"] == 1
    assert final["best_step"] == alone["best_step"] == STEPS  # both files hold step-8 weights
    assert final["examples_seen"] == alone["examples_seen"]  # global batches counted once
    diff = weights_diff(one, two)
    print(f"{method}: max abs weight difference 1 vs 2 processes = {diff:.3g}")
    assert diff < TOL
    # the same global losses every step (one metrics.jsonl writer: no duplicated records)
    losses_one, losses_two = train_losses(one), train_losses(two)
    assert len(losses_two) == STEPS
    for a, b in zip(losses_one, losses_two, strict=True):
        assert a.keys() == b.keys() and all(abs(a[t] - b[t]) < 1e-4 for t in a)
    # evaluation gathered from both ranks: every example counted once, same metrics. Mean
    # losses, correlations and baselines move if an example is dropped or doubled: 1e-4.
    # This untrained tiny model's argmax predictions sit on ties (losses ≈ ln 3) that a 1e-5
    # weight difference can flip (seen once: a tag F1 of 0.158998 vs 0.155655); one of the
    # 32 sentences is 0.031 of accuracy: 0.05.
    for task, splits in alone["tasks"].items():
        for split, metrics in splits.items():
            if isinstance(metrics, dict):
                for name, value in metrics.items():
                    tol = 0.05 if name in ARGMAX else 1e-4
                    assert final["tasks"][task][split][name] == pytest.approx(value, abs=tol)
    if method == "pcgrad":  # the engine ran: per-task gradients all-reduced, then PCGrad
        records = [r for r in read_records(two / "metrics.jsonl") if r["event"] == "train"]
        assert all(r["grad_method"] == "segments" for r in records)
        return
    # resume under 2 processes (torchrun this time) from the step-4 checkpoint: same weights
    resumed = tmp_path / "resumed"
    shutil.copytree(two, resumed)
    (resumed / "final_metrics.json").unlink()
    launch(TORCHRUN, config, resumed, "--resume")
    assert weights_diff(two, resumed) == 0.0
    steps = [r["step"] for r in read_records(resumed / "metrics.jsonl") if r["event"] == "train"]
    assert steps == list(range(1, STEPS + 1))


def test_shards_cover_the_global_batch_once() -> None:
    for n in (1, 3, 8, 9):
        for world in (1, 2, 3, 4):
            parts = [shard(list(range(n)), r, world) for r in range(world)]
            counted = [i for rows, ok in parts if ok for i in rows]
            assert counted == list(range(n))  # contiguous, in order, each row once
            assert all(len(rows) >= 1 for rows, _ in parts)  # every rank runs a forward
            sizes = [len(rows) for rows, ok in parts if ok]
            assert max(sizes) - min(sizes) <= 1


def test_streams_of_all_ranks_read_the_one_process_batches() -> None:
    import datasets

    data = datasets.Dataset.from_dict({"length": [3, 9, 4, 7, 5, 1, 8, 2, 6, 10, 11]})
    alone = TaskStream(data, 4, 2, seed=5)
    ranks = [TaskStream(data, 4, 2, seed=5, rank=r, world=2) for r in range(2)]
    for _ in range(7):  # across an epoch boundary (11 rows, batches of 4)
        whole = alone.next_indices()
        draws = [s.next_draw() for s in ranks]
        assert all(d.global_rows == len(whole) for d in draws)
        rows = [x for d in draws if d.counted for x in d.rows["length"]]
        assert rows == [data["length"][i] for i in whole]


def test_one_process_losses_pass_through() -> None:
    from accelerate import Accelerator

    from polytask.distributed import sync_losses

    losses = {"a": torch.tensor(2.0, requires_grad=True), "b": torch.tensor(float("nan"))}
    synced = sync_losses(Accelerator(cpu=True), losses)
    assert synced.backprop is losses and not synced.finite
    assert float(synced.values["a"]) == 2.0


def test_sharded_engine_paths_on_one_process(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FSDP/DeepSpeed need a GPU; their code paths run here on one process with the engine
    test forced on: best weights through ``accelerator.get_state_dict`` (tied tensors
    written once), final evaluation of a plain copy, no resumable checkpoint, per-task
    gradient methods and --resume refused. Metrics equal those of the normal run."""
    import polytask.distributed
    import polytask.training.end
    import polytask.training.prepare
    from polytask.errors import ConfigError

    data = base_config(tiny_encoder, task_files, max_steps=6, eval_every=3)
    data["sampler"] = {"tasks_per_step": "all"}
    data["train"]["monitor_every"] = None
    normal = train(config_from_dict(data), tmp_path / "normal", show_progress=False)
    for module in (polytask.distributed, polytask.training.end, polytask.training.prepare):
        monkeypatch.setattr(module, "weights_sharded", lambda accelerator: True)
    sharded = train(config_from_dict(data), tmp_path / "sharded", show_progress=False)
    assert sharded["tasks"] == normal["tasks"] and sharded["best_step"] == normal["best_step"]
    assert not (tmp_path / "sharded" / "checkpoint").exists()
    assert weights_diff(tmp_path / "normal", tmp_path / "sharded") == 0.0
    with pytest.raises(ConfigError, match="need per-task gradients"):
        train(config_from_dict({**data, **METHODS["pcgrad"]}), tmp_path / "x", show_progress=False)
    with pytest.raises(ConfigError, match="--resume: not available"):
        train(config_from_dict(data), tmp_path / "sharded", resume=True, show_progress=False)
