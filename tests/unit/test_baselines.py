"""Trivial baselines on every evaluated split (issue 22 item 5): the majority class for
classification, the training mean as a constant prediction for regression (its RMSE; its
Pearson and Spearman are undefined, reported as such rather than as 0)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from polytask.cli.tables import results_table
from polytask.config.run import config_from_dict
from polytask.report.load import baseline_of
from polytask.tasks import TaskSpec, task_type
from polytask.train import train
from tests.conftest import base_config, write_task_files

pytestmark = pytest.mark.usefixtures("one_thread")


def _values(path: Path, key: str) -> list[Any]:
    return [json.loads(line)[key] for line in path.read_text().splitlines() if line.strip()]


def test_regression_baseline_is_the_training_mean() -> None:
    spec = TaskSpec(name="r", type="regression", target_mean=5.0, target_std=2.0)
    targets = [1.0, 4.0, 9.0]
    standardised = [(y - 5.0) / 2.0 for y in targets] + [None]  # None: unlabelled, skipped
    got = task_type("regression").baseline_metrics(spec, standardised)
    rmse = math.sqrt(sum((y - 5.0) ** 2 for y in targets) / 3)
    assert got == {"mean_rmse": pytest.approx(rmse), "mean_pearson": None, "mean_spearman": None}
    assert task_type("regression").baseline_metrics(spec, [None]) == {}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Any:
    tmp = tmp_path_factory.mktemp("baselines")
    files = write_task_files(tmp)
    config = config_from_dict(base_config(tiny_encoder, files, max_steps=2, eval_every=2))
    return files, train(config, tmp / "run", show_progress=False)


def test_every_evaluated_split_has_its_baseline(finished: Any) -> None:
    files, final = finished
    for split in ("validation", "test"):
        labels = _values(files["sent"][split], "label")
        majority = Counter(labels).most_common(1)[0][1] / len(labels)
        sent = final["tasks"]["sent"]["baseline"][split]
        assert sent == {"majority_accuracy": pytest.approx(majority, abs=1e-6)}
        train_scores = _values(files["reg"]["train"], "score")
        mean = sum(train_scores) / len(train_scores)
        scores = _values(files["reg"][split], "score")
        rmse = math.sqrt(sum((y - mean) ** 2 for y in scores) / len(scores))
        reg = final["tasks"]["reg"]["baseline"][split]
        assert reg == {"mean_rmse": pytest.approx(rmse, abs=1e-5), "mean_pearson": None,
                       "mean_spearman": None}  # fmt: skip
    assert "baseline" not in final["tasks"]["tags"]  # tagging has no trivial predictor
    test = final["tasks"]["sent"]["baseline"]["test"]["majority_accuracy"]
    assert final["tasks"]["sent"]["majority_accuracy"] == test  # the key older readers know
    assert "mean_rmse" not in final["tasks"]["reg"]["test"]  # metrics stay the model's


def test_the_results_table_sets_each_baseline_beside_its_metric(finished: Any) -> None:
    _, final = finished
    console = Console(width=200, record=True)
    console.print(results_table(final))
    rows = {
        tuple(c.strip() for c in line.split("│")[1:3]): [c.strip() for c in line.split("│")[3:-1]]
        for line in console.export_text().splitlines()
        if line.count("│") == 7
    }
    base = final["tasks"]["reg"]["baseline"]
    assert rows[("reg", "pearson")][1] == rows[("reg", "pearson")][3] == "undefined"
    assert rows[("", "rmse")][1] == f"{base['validation']['mean_rmse']:.4f}"
    assert rows[("", "rmse")][3] == f"{base['test']['mean_rmse']:.4f}"
    majority = final["tasks"]["sent"]["baseline"]["validation"]["majority_accuracy"]
    assert rows[("sent", "accuracy")][1] == f"{majority:.4f}"
    assert rows[("", "macro_f1")][1] == ""  # no baseline for it


def test_older_runs_keep_their_test_majority() -> None:
    old = {"majority_accuracy": 0.5, "test": {"accuracy": 0.7}}
    assert baseline_of(old, "test", "accuracy") == "0.5000"
    assert baseline_of(old, "validation", "accuracy") == ""
