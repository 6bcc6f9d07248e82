"""Single- and multi-label text classification (sentence pairs supported)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from polytask.errors import DataError
from polytask.tasks.base import (
    IGNORE_INDEX,
    TASK_TYPES,
    ExportForm,
    TaskOptions,
    TaskSpec,
    TaskType,
    Where,
    describe,
    is_missing,
    row_of,
)


def _names(value: Any, multi: bool, separator: str, row: int, where: Where) -> list[Any]:
    """The class labels of one non-missing cell, unconverted: a string or an integer id
    (single-label); a string split on ``separator`` or a list of them (multi-label)."""
    parts = [value]
    if multi and isinstance(value, str):
        return [part.strip() for part in value.split(separator) if part.strip()]
    if multi and isinstance(value, list):
        parts = value
    elif multi:
        raise DataError(
            f"{where(row)}: multi-label labels must be a string or a list, got {describe(value)}"
        )
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, str | int):
            raise DataError(
                f"{where(row)}: a class label must be a string or an integer id, "
                f"got {describe(part)}"
            )
        if multi and isinstance(part, str) and not part.strip():
            raise DataError(f"{where(row)}: a listed label is empty ({value!r})")
    return parts


def _name(part: str | int) -> str:
    """An integer class id is named by its decimal text in the label set."""
    return part if isinstance(part, str) else str(part)


_OTHER = {
    "a string": "an integer id",
    "an integer id": "a string",
    "a list": "a separated string",
    "a separated string": "a list",
}


def check_class_column(
    values: Sequence[Any], multi: bool, separator: str, where: Where
) -> list[Any]:
    """Refuse a class-label column that mixes strings and integer ids (or, multi-label,
    strings and lists), or holds two labels that differ only in whitespace."""
    first: dict[str, int] = {}  # kind of label -> first row with it
    spaced: dict[str, tuple[str, int]] = {}  # label with whitespace collapsed -> (label, row)
    for row, value in enumerate(values):
        if is_missing(value):
            continue
        parts = _names(value, multi, separator, row, where)
        kinds = {"a string" if isinstance(p, str) else "an integer id" for p in parts}
        if len(kinds) > 1:
            raise DataError(f"{where(row)}: label {value!r} mixes strings and integer ids")
        if multi:
            kinds.add("a list" if isinstance(value, list) else "a separated string")
        for kind in kinds:
            other = _OTHER[kind]
            if other in first:
                raise DataError(
                    f"{where(row)}: label {value!r} is {kind} but {row_of(where, first[other])} "
                    f"has {other}; a label column holds one kind"
                )
            first.setdefault(kind, row)
        for part in parts:
            if not isinstance(part, str):
                continue
            key = " ".join(part.split())
            seen, at = spaced.setdefault(key, (part, row))
            if seen != part:
                raise DataError(
                    f"{where(row)}: label {part!r} differs from {seen!r} "
                    f"({row_of(where, at)}) only in whitespace"
                )
    return list(values)


@TASK_TYPES.register("classification")
class Classification(TaskType):
    """Cross-entropy (single-label) or binary cross-entropy per label (multi-label).

    Metrics: accuracy and macro-F1 (single-label); subset accuracy, micro- and macro-F1
    (multi-label, threshold 0.5).
    """

    primary_metric: ClassVar[str] = "accuracy"

    def export_form(self, spec: TaskSpec) -> ExportForm:
        problem = "multi_label" if spec.multi_label else "single_label"
        return ExportForm(tuple(spec.labels), f"{problem}_classification")

    def fit_spec(self, config: TaskOptions, train_values: Sequence[Any], where: Where) -> TaskSpec:
        if config.labels is not None:
            labels = list(config.labels)
        else:
            seen: set[Any] = set()
            for row, value in enumerate(train_values):
                if not is_missing(value):
                    seen.update(
                        _names(value, config.multi_label, config.label_separator, row, where)
                    )
            # integer ids in numeric order, named by their decimal text
            labels = [_name(p) for p in sorted(seen, key=lambda p: (isinstance(p, str), p))]
        if len(labels) < 2 and not config.multi_label:
            raise DataError(f"{where(-1)}: classification needs at least 2 labels, found {labels}")
        return TaskSpec(
            name=config.name,
            type="classification",
            labels=labels,
            multi_label=config.multi_label,
            label_separator=config.label_separator,
            pair=config.columns.text_pair is not None,
            auxiliary=config.auxiliary,
            critical=config.critical is not False,  # None: not resolved by a RunConfig
            weight=config.weight,
        )

    def read_labels(
        self, config: TaskOptions, values: Sequence[Any], where: Where, text_cells: bool
    ) -> list[Any]:
        """Class labels: all strings or all integer ids (never bools or floats), no two
        differing only in whitespace; multi-label: separated strings or lists."""
        return check_class_column(values, config.multi_label, config.label_separator, where)

    def encode(self, spec: TaskSpec, value: Any, row: int, where: Where) -> Any:
        if is_missing(value):
            return None
        index = {label: i for i, label in enumerate(spec.labels)}
        parts = [
            _name(p) for p in _names(value, spec.multi_label, spec.label_separator, row, where)
        ]
        for part in parts:
            if part not in index:
                near = [x for x in spec.labels if x.split() == part.split()]
                hint = f" (it differs from {near[0]!r} only in whitespace)" if near else ""
                raise DataError(
                    f"{where(row)}: label {part!r} is not in the label set {spec.labels}{hint}"
                )
        if spec.multi_label:
            return [index[p] for p in parts]
        return index[parts[0]]

    def num_outputs(self, spec: TaskSpec) -> int:
        return len(spec.labels)

    def collate(self, spec: TaskSpec, labels: list[Any]) -> torch.Tensor:
        if not spec.multi_label:
            return torch.tensor([IGNORE_INDEX if y is None else y for y in labels])
        target = torch.zeros(len(labels), len(spec.labels))
        for row, y in enumerate(labels):
            if y is None:
                target[row] = float(IGNORE_INDEX)
            else:
                target[row, y] = 1.0
        return target

    def loss(self, spec: TaskSpec, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not spec.multi_label:
            labels = labels.to(logits.device)
            total = F.cross_entropy(
                logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum"
            )
            return total / (labels != IGNORE_INDEX).sum().clamp(min=1)
        labels = labels.to(logits.device)
        mask = (labels[:, 0] != IGNORE_INDEX).float()
        per_row = F.binary_cross_entropy_with_logits(
            logits.float(), labels.clamp(min=0), reduction="none"
        ).mean(dim=1)
        return (per_row * mask).sum() / mask.sum().clamp(min=1)

    def predict_indices(self, spec: TaskSpec, logits: torch.Tensor) -> list[Any]:
        if spec.multi_label:
            hits = (torch.sigmoid(logits.float()) >= 0.5).cpu().numpy()
            return [np.flatnonzero(row).tolist() for row in hits]
        return logits.argmax(dim=-1).cpu().tolist()

    def metrics(
        self, spec: TaskSpec, predictions: list[Any], references: list[Any]
    ) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score  # lazy: 1 s of import for the CLI

        pairs = [(p, r) for p, r in zip(predictions, references, strict=True) if r is not None]
        if not pairs:
            return {}
        preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
        if spec.multi_label:
            n = len(spec.labels)
            pm = np.zeros((len(preds), n), dtype=int)
            rm = np.zeros((len(refs), n), dtype=int)
            for i, (p, r) in enumerate(pairs):
                pm[i, p] = 1
                rm[i, r] = 1
            return {
                "accuracy": float(accuracy_score(rm, pm)),
                "micro_f1": float(f1_score(rm, pm, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(rm, pm, average="macro", zero_division=0)),
            }
        return {
            "accuracy": float(accuracy_score(refs, preds)),
            "macro_f1": float(
                f1_score(
                    refs,
                    preds,
                    average="macro",
                    labels=list(range(len(spec.labels))),
                    zero_division=0,
                )
            ),
        }

    def baseline_metrics(self, spec: TaskSpec, references: list[Any]) -> dict[str, float | None]:
        """Single-label: the accuracy of always answering the most frequent label."""
        return {} if spec.multi_label else {"majority_accuracy": majority_accuracy(references)}

    def decode(self, spec: TaskSpec, logits: torch.Tensor) -> list[Any]:
        probs = (
            torch.sigmoid(logits.float())
            if spec.multi_label
            else torch.softmax(logits.float(), dim=-1)
        ).cpu()
        out = []
        for row, idx in zip(probs.tolist(), self.predict_indices(spec, logits), strict=True):
            scores = {label: round(p, 6) for label, p in zip(spec.labels, row, strict=True)}
            if spec.multi_label:
                out.append({"labels": [spec.labels[i] for i in idx], "scores": scores})
            else:
                out.append({"label": spec.labels[idx], "scores": scores})
        return out


def majority_accuracy(references: list[Any]) -> float:
    """Accuracy of always predicting the most frequent reference label."""
    labelled = [r for r in references if r is not None]
    if not labelled:
        return 0.0
    values, counts = np.unique(np.asarray(labelled), return_counts=True)
    del values
    return float(counts.max() / len(labelled))
