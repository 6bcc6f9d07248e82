"""What every task type provides: label encoding, loss, metrics and decoding.

A task type is stateless; everything learned from data (the label set, the regression
target's mean and standard deviation) lives in a :class:`TaskSpec`, which is saved with
the model so that serving rebuilds the same heads and decodes the same way.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import torch

from polytask.errors import DataError
from polytask.registry import Registry

IGNORE_INDEX = -100
Where = Callable[[int], str]  # row index -> "file, row N, column 'c'" for error messages

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase


class _Columns(Protocol):
    @property
    def text_pair(self) -> str | None: ...


class TaskOptions(Protocol):
    """The settings of one task that a task type reads when it fits its spec and checks its
    labels. :class:`polytask.config.TaskConfig` provides them; a task type never imports
    the config, so any object with these attributes will do."""

    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> list[str] | None: ...
    @property
    def multi_label(self) -> bool: ...
    @property
    def label_separator(self) -> str: ...
    @property
    def weight(self) -> float: ...
    @property
    def critical(self) -> bool | None: ...
    @property
    def auxiliary(self) -> bool: ...
    @property
    def held_out(self) -> bool: ...
    @property
    def instruction(self) -> Any: ...
    @property
    def columns(self) -> _Columns: ...


@dataclass
class TaskSpec:
    """A task as the model sees it: its type and what was learned from its training data."""

    name: str
    type: str
    labels: list[str] = field(default_factory=list)
    multi_label: bool = False
    label_separator: str = "|"
    pair: bool = False
    target_mean: float = 0.0
    target_std: float = 1.0
    auxiliary: bool = False
    critical: bool = True
    weight: float = 1.0
    #: evaluated, never trained on (``held_out: true`` in the config)
    held_out: bool = False
    #: type-specific settings fixed when the data is loaded (``lm``: mask token, vocabulary)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        return cls(**data)


@dataclass
class OwnPredictions:
    """What a task type's own evaluation pass found: predictions and references in dataset
    order, and the split's mean loss when that pass measured it (else ``None``)."""

    predictions: list[Any]
    references: list[Any]
    loss: float | None = None


class TaskType(ABC):
    """Base class of a task type; subclasses register themselves in :data:`TASK_TYPES`."""

    level: ClassVar[Literal["sequence", "token"]] = "sequence"
    primary_metric: ClassVar[str] = "accuracy"
    #: metrics of :meth:`metrics`/:meth:`loss_metrics` (and the evaluation ``loss``) where
    #: lower is better; every other metric is higher-is-better
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    #: most rows per evaluation batch (None: the run's eval_batch_size); ``lm`` caps it
    #: because its logits are rows × length × vocabulary
    eval_rows: ClassVar[int | None] = None
    #: which head the models build for the task: ``"default"`` (:class:`~polytask.models.heads.Head`
    #: over :meth:`num_outputs`) or a head named in ``polytask.models.heads.HEADS``
    head: ClassVar[str] = "default"

    def primary(self, spec: TaskSpec) -> str:
        """The metric that ranks checkpoints and models of this task (``primary_metric``
        unless the task's options pick another)."""
        return self.primary_metric

    @abstractmethod
    def fit_spec(self, config: TaskOptions, train_values: Sequence[Any], where: Where) -> TaskSpec:
        """Build the task's spec from its config and the raw training labels."""
        ...

    def read_texts(self, config: TaskOptions, values: Sequence[Any], where: Where) -> list[Any]:
        """A split's text cells as this type reads them: strings, as written (``where`` names
        the column). Anything else (null, list, number, bool) is a :class:`DataError`."""
        for row, value in enumerate(values):
            if value is None:
                raise DataError(f"{where(row)}: text is empty")
            if not isinstance(value, str):
                raise DataError(f"{where(row)}: text must be a string, got {describe(value)}")
        return list(values)

    def read_labels(
        self, config: TaskOptions, values: Sequence[Any], where: Where, text_cells: bool
    ) -> list[Any]:
        """A split's label cells checked for type as a whole column (``text_cells``: the file
        is CSV/TSV/CoNLL, whose cells are text as written). Returns the values :meth:`encode`
        gets; a type that reads text cells (regression) parses them here. Default: as is."""
        return list(values)

    @abstractmethod
    def encode(self, spec: TaskSpec, value: Any, row: int, where: Where) -> Any:
        """Validate and encode one raw label; ``None`` means unlabelled (masked out)."""
        ...

    @abstractmethod
    def num_outputs(self, spec: TaskSpec) -> int: ...

    @abstractmethod
    def collate(self, spec: TaskSpec, labels: list[Any]) -> torch.Tensor:
        """Stack encoded labels of one micro-batch into a tensor (token labels come aligned)."""
        ...

    @abstractmethod
    def loss(self, spec: TaskSpec, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean loss over labelled examples; 0 (with a graph) when none is labelled."""
        ...

    def loss_units(self, spec: TaskSpec, labels: torch.Tensor) -> int:
        """How many labelled units :meth:`loss` averages over (rows; tokens for tagging)."""
        if labels.dtype.is_floating_point:
            flat = labels.reshape(len(labels), -1)[:, 0]
            return int((~torch.isnan(flat) & (flat != IGNORE_INDEX)).sum())
        return int((labels.reshape(len(labels), -1)[:, 0] != IGNORE_INDEX).sum())

    @abstractmethod
    def metrics(
        self, spec: TaskSpec, predictions: list[Any], references: list[Any]
    ) -> dict[str, float]: ...

    @abstractmethod
    def decode(self, spec: TaskSpec, logits: torch.Tensor) -> list[Any]:
        """Per-example predictions in the task's own terms (label names, values in units)."""
        ...

    def higher_is_better(self, metric: str) -> bool:
        """Direction of one of this type's metrics (from :attr:`lower_is_better`)."""
        return metric not in self.lower_is_better

    def loss_metrics(self, spec: TaskSpec, loss: float) -> dict[str, float]:
        """Metrics derived from a split's mean loss (``lm``: perplexity). Default: none."""
        return {}

    def prepare(
        self, spec: TaskSpec, rows: dict[str, list[Any]], stream: tuple[int, int] | None
    ) -> dict[str, list[Any]]:
        """Rows of one micro-batch just before collation. ``stream`` is ``(seed, epoch)`` of
        the training stream that drew them, ``None`` in evaluation; whatever is random here
        must be a pure function of it and the rows (resuming replays it). Default: as is."""
        return rows

    def own_predictions(
        self,
        model: Any,
        spec: TaskSpec,
        dataset: datasets.Dataset,
        batch_size: int,
        tokenizer: PreTrainedTokenizerBase | None,
    ) -> OwnPredictions | None:
        """Predictions and references of a split that need forwards of their own (an
        instruction task scores its allowed answers or generates), or ``None``: they come
        from the loss forward's logits (:meth:`predict_indices`). When the result carries
        the loss, the loss forward is skipped. Default: ``None``."""
        return None


TASK_TYPES: Registry[type[TaskType]] = Registry("task type")
_INSTANCES: dict[str, TaskType] = {}


def task_type(name: str) -> TaskType:
    """The (stateless, shared) instance of a registered task type."""
    if name not in _INSTANCES:
        _INSTANCES[name] = TASK_TYPES.get(name)()
    return _INSTANCES[name]


def describe(value: Any) -> str:
    """A cell's JSON type and (shortened) JSON text, for messages: ``a list ["a", 1]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        kind = "a bool"
    elif isinstance(value, int | float):
        kind = "a number"
    elif isinstance(value, str):
        kind = "a string"
    else:
        kind = "a list" if isinstance(value, list | tuple) else "a dict"
    shown = json.dumps(value, ensure_ascii=False, default=str)
    return f"{kind} {shown if len(shown) <= 40 else shown[:37] + '...'}"


def row_of(where: Where, row: int) -> str:
    """``line 3`` out of ``where(row)`` = ``file, line 3, column 'c'`` (to name a second row)."""
    return where(row)[len(where(-1)) :].strip(", ").split(", column")[0]


def is_missing(value: Any) -> bool:
    """A label cell that carries no label (partial labels): None or an empty string."""
    return value is None or (isinstance(value, str) and value.strip() == "")
