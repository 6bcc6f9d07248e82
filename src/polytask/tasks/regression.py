"""Regression: MSE on standardised targets, predictions and metrics in original units."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from polytask.errors import DataError
from polytask.tasks.base import (
    TASK_TYPES,
    ExportForm,
    TaskOptions,
    TaskSpec,
    TaskType,
    Where,
    describe,
    is_missing,
)

#: a decimal number as CSV text: optional sign, digits with an optional point, exponent
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _to_float(value: Any, row: int, where: Where) -> float:
    """A target as a float: a JSON number (never a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"{where(row)}: regression target must be a number, got {describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise DataError(f"{where(row)}: regression target is {value!r} (NaN/inf is not allowed)")
    return number


def parse_number(text: str, row: int, where: Where) -> float | None:
    """A CSV cell's target: a decimal number (surrounding spaces allowed), ``None`` for a
    blank cell; anything else (``NaN``, ``inf``, ``1_000``, ``1,5``) is refused."""
    if not text.strip():
        return None
    if _NUMBER.fullmatch(text.strip()) is None:
        if text.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise DataError(f"{where(row)}: regression target is {text!r} (NaN/inf is not allowed)")
        raise DataError(f"{where(row)}: regression target {text!r} is not a number")
    return _to_float(float(text), row, where)


@TASK_TYPES.register("regression")
class Regression(TaskType):
    """Mean squared error on targets standardised with the training mean and std.

    Metrics (original units): Pearson, Spearman, RMSE. Missing targets (empty cells) are
    partial labels and are masked out; NaN or inf targets are errors.
    """

    primary_metric: ClassVar[str] = "pearson"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss", "rmse"})

    def export_form(self, spec: TaskSpec) -> ExportForm:
        # the head predicts standardised targets: y = std · z + mean in the targets' units
        std, mean = float(spec.target_std or 1.0), float(spec.target_mean or 0.0)
        return ExportForm(("value",), "regression", std, mean)

    def fit_spec(self, config: TaskOptions, train_values: Sequence[Any], where: Where) -> TaskSpec:
        values = np.asarray(
            [_to_float(v, i, where) for i, v in enumerate(train_values) if not is_missing(v)]
        )
        if values.size == 0:
            raise DataError(f"{where(-1)}: no labelled regression targets in the training split")
        with np.errstate(over="ignore", invalid="ignore"):
            std, mean = float(values.std()), float(values.mean())
        if not (math.isfinite(std) and math.isfinite(mean)):
            raise DataError(f"{where(-1)}: regression targets too large to standardise")
        return TaskSpec(
            name=config.name,
            type="regression",
            pair=config.columns.text_pair is not None,
            target_mean=mean,
            target_std=std if std > 1e-12 else 1.0,
            auxiliary=config.auxiliary,
            critical=config.critical is not False,  # None: not resolved by a RunConfig
            weight=config.weight,
        )

    def read_labels(
        self, config: TaskOptions, values: Sequence[Any], where: Where, text_cells: bool
    ) -> list[Any]:
        """Targets: numbers (int or float, never bool) or null; in a CSV/TSV file, cells
        written as decimal numbers (a blank cell: unlabelled)."""
        if text_cells:
            return [
                parse_number(v, i, where) if isinstance(v, str) else _to_float(v, i, where)
                for i, v in enumerate(values)
            ]
        return [None if v is None else _to_float(v, i, where) for i, v in enumerate(values)]

    def encode(self, spec: TaskSpec, value: Any, row: int, where: Where) -> Any:
        if is_missing(value):
            return None
        encoded = (_to_float(value, row, where) - spec.target_mean) / spec.target_std
        if not math.isfinite(encoded):
            raise DataError(f"{where(row)}: regression target {value!r} too far from the mean")
        return encoded

    def num_outputs(self, spec: TaskSpec) -> int:
        return 1

    def collate(self, spec: TaskSpec, labels: list[Any]) -> torch.Tensor:
        return torch.tensor([math.nan if y is None else y for y in labels], dtype=torch.float32)

    def loss(self, spec: TaskSpec, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(logits.device)
        mask = ~torch.isnan(labels)
        err = (logits.float().squeeze(-1) - torch.nan_to_num(labels)) ** 2
        return (err * mask).sum() / mask.sum().clamp(min=1)

    def predict_indices(self, spec: TaskSpec, logits: torch.Tensor) -> list[Any]:
        """Standardised predictions (the same scale as the encoded labels)."""
        return logits.float().squeeze(-1).cpu().tolist()

    def metrics(
        self, spec: TaskSpec, predictions: list[Any], references: list[Any]
    ) -> dict[str, float]:
        from scipy.stats import pearsonr, spearmanr  # lazy: heavy import

        pairs = [(p, r) for p, r in zip(predictions, references, strict=True) if r is not None]
        if len(pairs) < 2:
            return {}
        scale = np.asarray([[spec.target_std]])
        arr = np.asarray(pairs) * scale + spec.target_mean
        preds, refs = arr[:, 0], arr[:, 1]
        constant = preds.std() < 1e-12 or refs.std() < 1e-12
        return {
            "pearson": 0.0 if constant else float(pearsonr(preds, refs).statistic),
            "spearman": 0.0 if constant else float(spearmanr(preds, refs).statistic),
            "rmse": float(np.sqrt(np.mean((preds - refs) ** 2))),
        }

    def baseline_metrics(self, spec: TaskSpec, references: list[Any]) -> dict[str, float | None]:
        """The training mean as a constant prediction: its RMSE in original units (the
        references are standardised by that mean, so the error is ``y * std``); Pearson
        and Spearman are undefined for a constant (``None``), not 0."""
        labelled = np.asarray([r for r in references if r is not None], dtype=np.float64)
        if labelled.size == 0:
            return {}
        rmse = float(np.sqrt(np.mean(labelled**2)) * spec.target_std)
        return {"mean_rmse": rmse, "mean_pearson": None, "mean_spearman": None}

    def decode(self, spec: TaskSpec, logits: torch.Tensor) -> list[Any]:
        values = logits.float().squeeze(-1).cpu() * spec.target_std + spec.target_mean
        return [{"value": float(v)} for v in values.tolist()]
