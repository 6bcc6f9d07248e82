"""Evaluate a saved run on one split, rebuilding data with the model's own label sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from polytask.config.run import config_from_dict
from polytask.data.loading import load_task_data
from polytask.evaluate import evaluate
from polytask.predict.predictor import Predictor


def evaluate_run(
    run_dir: str | Path, split: str = "test", batch_size: int | None = None
) -> dict[str, dict[str, float]]:
    """Metrics of every task of a trained run on ``split``."""
    return evaluate_run_with_report(run_dir, split, batch_size)[0]


def evaluate_run_with_report(
    run_dir: str | Path, split: str = "test", batch_size: int | None = None
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Metrics of every task on ``split`` and the architecture's report on that split
    (``model.report()``, e.g. MoE routing shares; empty for architectures without one)."""
    predictor = Predictor(run_dir)
    config = config_from_dict(predictor.meta["config"], f"{run_dir}/model/polytask.json")
    splits, specs = {}, predictor.specs
    by_name = {t.name: t for t in config.tasks}
    for task in config.tasks:
        data = load_task_data(
            task,
            predictor.tokenizer,
            task.max_length or config.encoder.max_length,
            config.seed,
            spec=specs[task.name],
            only=(split,),
            tasks=by_name,
        )
        splits[task.name] = data.splits[split]
    pad_id = int(predictor.tokenizer.pad_token_id or 0)
    size = batch_size or config.train.eval_batch_size
    predictor.model.reset_report()
    metrics = evaluate(
        predictor.model,
        splits,
        specs,
        size,
        pad_id,
        torch.device("cpu"),
        with_majority=True,
        tokenizer=predictor.tokenizer,
    )
    return metrics, predictor.model.report()
