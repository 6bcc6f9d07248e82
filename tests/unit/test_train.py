"""End-to-end training on the tiny random encoder and synthetic tasks."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from polytask.config.run import config_from_dict, load_config
from polytask.experiments.evaluate_run import evaluate_run
from polytask.predict.predictor import Predictor
from polytask.train import train
from polytask.training.runlog import read_records
from tests.conftest import base_config, write_task_files


def run(
    tmp_path: Path, encoder: Path, files: Any, name: str = "run", **train_kw: Any
) -> tuple[Path, dict[str, Any]]:
    config = config_from_dict(base_config(encoder, files, **train_kw))
    out = tmp_path / name
    return out, train(config, out, show_progress=False)


@pytest.fixture(scope="module")
def default_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path
) -> tuple[Path, dict[str, Any]]:
    """The default 12-step run, trained once: the tests that only read it share it."""
    tmp = tmp_path_factory.mktemp("default-run")
    return run(tmp, tiny_encoder, write_task_files(tmp))


def test_run_directory_contents(default_run: tuple[Path, dict[str, Any]]) -> None:
    out, final = default_run
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "final_metrics.json",
        "curves.png",
        "model/model.safetensors",
        "model/polytask.json",
        "model/tokenizer",
        "checkpoint/COMPLETE",
    ):
        assert (out / name).exists(), name
    assert json.loads((out / "final_metrics.json").read_text()) == final
    assert set(final["tasks"]) == {"sent", "tags", "reg"}
    assert {"accuracy", "macro_f1", "loss"} <= set(final["tasks"]["sent"]["test"])
    assert {"f1", "precision", "recall"} <= set(final["tasks"]["tags"]["validation"])
    assert {"pearson", "spearman", "rmse"} <= set(final["tasks"]["reg"]["test"])
    assert 0 < final["tasks"]["sent"]["majority_accuracy"] <= 1
    records = read_records(out / "metrics.jsonl")
    train_records = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train_records] == list(range(1, 13))
    assert train_records[-1]["updates"] == {
        "sent": 4,
        "tags": 4,
        "reg": 4,
    }  # round robin, 1 task/step
    assert train_records[-1]["examples"]["sent"] == 32
    assert [r["step"] for r in records if r["event"] == "eval"] == [6, 12]
    saved = load_config(out / "config.yaml")
    assert saved.train.max_steps == 12 and saved.tasks[1].name == "tags"


def test_parameter_accounting_matches_hand_count(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    _, final = run(tmp_path, tiny_encoder, task_files, max_steps=1)
    p = final["params"]
    from transformers import AutoModel

    encoder = sum(t.numel() for t in AutoModel.from_pretrained(str(tiny_encoder)).parameters())
    hidden, inner = 32, 16
    head = lambda n: hidden * inner + inner + inner * n + n  # noqa: E731 - two linears
    assert p["shared"] == encoder
    assert p["per_task"] == {"sent": head(3), "tags": head(3), "reg": head(1)}
    assert p["total"] == p["trainable"] == encoder + head(3) * 2 + head(1)


def test_saved_model_reloads_and_predicts_identically(
    default_run: tuple[Path, dict[str, Any]],
) -> None:
    out, final = default_run
    again = evaluate_run(out, "test")
    for task in ("sent", "tags", "reg"):
        for metric, value in final["tasks"][task]["test"].items():
            assert again[task][metric] == pytest.approx(value, abs=1e-6), (task, metric)
    predictor = Predictor(out)
    texts = ["good good film", "bad awful plot"]
    first = predictor.predict("sent", texts)
    second = Predictor(out).predict("sent", texts)
    assert first == second and set(first[0]) == {"label", "scores"}
    tags = predictor.predict("tags", ["alice visited paris"])[0]
    assert len(tags["tags"]) == 3
    value = predictor.predict("reg", ["very very good"])[0]["value"]
    assert isinstance(value, float)


def test_early_stopping_follows_the_primary_task(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    out, final = run(
        tmp_path,
        tiny_encoder,
        task_files,
        lr=1e-12,
        head_lr=1e-12,
        max_steps=40,
        eval_every=5,
        patience=2,
        primary_task="tags",
    )
    assert (
        final["steps"] == 15 and final["best_step"] == 5
    )  # flat metric: 2 evals without improvement
    meta = json.loads((out / "model" / "polytask.json").read_text())
    evals = [r for r in read_records(out / "metrics.jsonl") if r["event"] == "eval"]
    assert meta["primary_task"] == "tags"
    assert meta["primary_metric"] == evals[0]["primary"]["tags"]
    # the final validation metrics are those measured at best_step, not evaluated again
    saved = json.loads((out / "final_metrics.json").read_text())["tasks"]
    assert {n: t["validation"] for n, t in saved.items()} == evals[0]["metrics"]


def test_overwrite_and_existing_directory(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    from polytask.errors import RunDirError

    out, _ = run(tmp_path, tiny_encoder, task_files, max_steps=2)
    config = config_from_dict(base_config(tiny_encoder, task_files, max_steps=2))
    finished = "already exists; it holds a finished run: pass --overwrite"
    with pytest.raises(RunDirError, match=finished):
        train(config, out, show_progress=False)
    train(config, out, overwrite=True, show_progress=False)


def test_all_tasks_per_step_trains_every_task_each_step(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    data = base_config(tiny_encoder, task_files, max_steps=4, eval_every=4)
    data["sampler"] = {"tasks_per_step": "all"}
    out = tmp_path / "all"
    train(config_from_dict(data), out, show_progress=False)
    last = [r for r in read_records(out / "metrics.jsonl") if r["event"] == "train"][-1]
    assert last["updates"] == {"sent": 4, "tags": 4, "reg": 4}
    assert set(last["loss"]) == {"sent", "tags", "reg"}


def test_losses_fall_on_learnable_synthetic_tasks(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    data = base_config(tiny_encoder, task_files, max_steps=150, eval_every=150, lr=3e-3)
    data["sampler"] = {"tasks_per_step": "all"}
    out = tmp_path / "learn"
    torch.manual_seed(0)
    train(config_from_dict(data), out, show_progress=False)
    records = [r for r in read_records(out / "metrics.jsonl") if r["event"] == "train"]
    for task in ("sent", "tags", "reg"):
        first = sum(r["loss"][task] for r in records[:20]) / 20
        last = sum(r["loss"][task] for r in records[-20:]) / 20
        assert last < 0.8 * first, task
    assert yaml.safe_load((out / "config.yaml").read_text())["sampler"]["tasks_per_step"] == "all"


def test_learned_loss_weights_train_at_their_own_learning_rate(tiny_encoder: Path) -> None:
    """`weighting: {name: gradnorm, lr: ...}` gives the weights their own optimiser group."""
    from polytask.models.encoder import load_encoder
    from polytask.models.hard import HardSharing
    from polytask.tasks import TaskSpec
    from polytask.training.optim import build_optimizer
    from polytask.weighting import WEIGHTINGS

    encoder, _ = load_encoder(str(tiny_encoder))
    model = HardSharing(encoder, [TaskSpec("a", "classification", labels=["x", "y"])])
    for lr, expected in ((0.05, 0.05), (None, 1e-3)):
        weighting = WEIGHTINGS.get("gradnorm")(n_tasks=2, lr=lr)
        optimizer = build_optimizer(model, 1e-4, 1e-3, 0.01, [(weighting.parameters(), lr)])
        groups = [
            g for g in optimizer.param_groups if any(p is weighting.weights for p in g["params"])
        ]
        assert len(groups) == 1 and len(groups[0]["params"]) == 1
        assert groups[0]["lr"] == expected and groups[0]["weight_decay"] == 0.0
