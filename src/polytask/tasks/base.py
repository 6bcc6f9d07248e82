"""What every task type provides: label encoding, loss, metrics and decoding, and the hooks
through which loading, evaluation and prediction ask the type instead of naming it.

A task type is stateless; everything learned from data (the label set, the regression
target's mean and standard deviation) lives in a :class:`TaskSpec`, which is saved with
the model so that serving rebuilds the same heads and decodes the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from polytask.errors import DataError, PolytaskError
from polytask.registry import Registry
from polytask.tasks.cells import Where, describe, is_missing, row_of
from polytask.tasks.spec import OwnPredictions, TaskOptions, TaskSpec

IGNORE_INDEX = -100
#: what one prediction input is: a text, a sentence pair, or words (a text or a word list)
InputForm = Literal["text", "pair", "words"]

if TYPE_CHECKING:
    import datasets
    from transformers import BatchEncoding, PreTrainedTokenizerBase

__all__ = [
    "IGNORE_INDEX",
    "TASK_TYPES",
    "InputForm",
    "OwnPredictions",
    "TaskOptions",
    "TaskSpec",
    "TaskType",
    "Where",
    "describe",
    "is_missing",
    "row_of",
    "task_type",
]


@dataclass(frozen=True)
class ExportForm:
    """A task as ``transformers`` writes a classifier: ``labels`` (``id2label``), its
    ``problem_type`` (None for token classification) and ``y = scale · z + shift`` from the
    head's output ``z`` (regression: the training std and mean)."""

    labels: tuple[str, ...]
    problem_type: str | None
    scale: float = 1.0
    shift: float = 0.0


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
    #: which loader of ``polytask.data`` reads the task's files (``data.loading.LOADERS``):
    #: ``"table"`` (text, optional pair and label columns: this class's read/encode hooks),
    #: ``"texts"`` (plain texts, ``lm``) or ``"instruction"`` (prompt and answer pairs)
    reader: ClassVar[str] = "table"
    #: row columns beyond ``input_ids``/``target`` that :func:`polytask.data.batching.collate`
    #: keeps per task in ``Batch.extras`` (what :meth:`target_columns` adds)
    extra_columns: ClassVar[tuple[str, ...]] = ()
    #: serving asks :meth:`generate` for the answers instead of decoding one forward's logits
    generates: ClassVar[bool] = False

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

    def check_targets(self, texts: Sequence[Any], targets: Sequence[Any], where: Where) -> None:
        """Check a split's encoded labels against its texts (``where`` names the label
        column; tagging: one tag per word). Default: nothing to check."""
        return None

    def bind_tokenizer(self, spec: TaskSpec, tokenizer: PreTrainedTokenizerBase) -> TaskSpec:
        """Record in the spec what the task needs of the tokenizer (token ids of answers, the
        mask token); called once the data is loaded. Default: the spec unchanged."""
        return spec

    def input_form(self, spec: TaskSpec) -> InputForm:
        """What one prediction input of the task is (:mod:`polytask.predict.inputs`): a
        sentence pair when the task was trained on pairs, else a text."""
        return "pair" if spec.pair else "text"

    def encode_inputs(
        self,
        tokenizer: PreTrainedTokenizerBase,
        texts: list[Any],
        pairs: list[Any] | None,
        max_length: int,
    ) -> BatchEncoding:
        """Tokenize texts (and their pairs), cut at ``max_length``: the one place a type's
        inputs are tokenized, for training data and for serving alike."""
        return tokenizer(texts, pairs, truncation=True, max_length=max_length)

    def target_columns(
        self, encoding: BatchEncoding, texts: list[Any], targets: list[Any]
    ) -> dict[str, list[Any]]:
        """A tokenized batch's label columns: ``target`` (what :meth:`collate` stacks) and
        any of :attr:`extra_columns`. Default: the encoded labels as they are."""
        return {"target": targets}

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

    def predict_indices(self, spec: TaskSpec, logits: torch.Tensor) -> list[Any]:
        """Per-row predictions in the terms :meth:`metrics` compares with the encoded labels.
        Default: the index of the largest logit."""
        return list(logits.argmax(dim=-1).cpu().tolist())

    def eval_predictions(
        self, spec: TaskSpec, logits: torch.Tensor, rows: dict[str, list[Any]]
    ) -> tuple[list[Any], list[Any]]:
        """Predictions and references of one evaluation batch (``rows``: its columns, as
        :meth:`prepare` left them). Default: :meth:`predict_indices` and ``target``."""
        return self.predict_indices(spec, logits), rows["target"]

    def decode_inputs(
        self, spec: TaskSpec, logits: torch.Tensor, encoding: BatchEncoding, inputs: list[Any]
    ) -> list[dict[str, Any]]:
        """Served predictions of ``inputs`` from the logits of their :meth:`encode_inputs`
        encoding. Default: :meth:`decode` of the logits alone."""
        return list(self.decode(spec, logits))

    def generate(
        self,
        model: Any,
        spec: TaskSpec,
        tokenizer: PreTrainedTokenizerBase,
        inputs: list[Any],
        max_length: int,
        batch_size: int,
    ) -> list[dict[str, Any]]:
        """Served predictions of a type that :attr:`generates` them with forwards of its own."""
        raise PolytaskError(f"task '{spec.name}' is decoded from logits, not generated")

    def baseline_metrics(self, spec: TaskSpec, references: list[Any]) -> dict[str, float | None]:
        """Metrics of a trivial predictor on a split's encoded references (its ``target``
        column; ``None``: unlabelled), named ``<predictor>_<metric>`` so that reports set
        each beside the metric it bounds; ``None``: the metric is undefined for that
        predictor (a constant has no correlation). Classification: ``majority_accuracy``;
        regression: the training mean's ``mean_rmse``. Default: none."""
        return {}

    def export_form(self, spec: TaskSpec) -> ExportForm | None:
        """How ``polytask export`` writes the task as a plain ``transformers`` classifier:
        its output names, ``problem_type`` and the affine map from the head's output to the
        task's units. Default None: the task cannot be exported (lm, instruction)."""
        return None

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
