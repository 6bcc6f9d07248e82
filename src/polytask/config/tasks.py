"""The task part of a run configuration: each task's data, columns, labels and loss weight.

Split from :mod:`polytask.config.run` (which re-exports these names); the cross-task checks
(task names, samplers, architectures) stay there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from polytask.config.manifest import listing
from polytask.registry import unknown_name
from polytask.strict import StrictModel
from polytask.tasks.instruction_config import InstructionConfig


class Columns(StrictModel):
    """Which columns of the data files hold the text(s) and the label."""

    text: str = "text"
    text_pair: str | None = None
    label: str = "label"


class DatasetSplits(StrictModel):
    """Which split of a ``dataset`` each polytask split reads (any ``datasets`` split
    expression: ``train``, ``train[:90%]``)."""

    train: str = "train"
    validation: str = "validation"
    test: str | None = None


class DataConfig(StrictModel):
    """Where a task's examples come from.

    Either ``bundled`` (a dataset that ships with polytask, see ``polytask data list``),
    file paths per split (CSV, JSON lines, Parquet, or a ``datasets`` saved directory), or
    ``dataset``: a Hugging Face dataset name (resolved when online, or from the ``datasets``
    cache), a local folder in hub layout, or a saved ``DatasetDict``, read with ``subset``
    (the dataset's config name) and ``splits`` (which of its splits is train, validation,
    test). Relative paths (a ``dataset`` folder that exists) are resolved against the
    config file's folder. An ``lm`` task may also (or only) take its texts from other tasks
    of the run: ``from_tasks: [a, b]`` reads each split's texts of those tasks (their text
    column, their subsets).
    """

    bundled: str | None = None
    from_tasks: list[str] | None = None
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    dataset: str | None = Field(default=None, min_length=1)
    subset: str | None = None
    splits: DatasetSplits | None = None
    format: Literal["auto", "csv", "json", "parquet", "saved", "conll"] = "auto"
    encoding: str = "utf-8"
    #: a row whose text is empty: refused (one line naming the file and line), dropped, or
    #: kept (a blank string trained on as it is); counted in the run's output either way
    #: (polytask.data.counts). Default: error; keep for a bundled dataset (its published
    #: numbers were measured on it as it is: movie_snippets' train split has one)
    empty_texts: Literal["error", "drop", "keep"] = "error"
    max_train_examples: int | None = Field(default=None, gt=0)
    max_validation_examples: int | None = Field(default=None, gt=0)
    max_test_examples: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _bundled_keeps_empty_texts(self) -> DataConfig:
        if self.bundled is not None and "empty_texts" not in self.model_fields_set:
            self.empty_texts = "keep"
        return self

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        files = [self.train, self.validation, self.test]
        if self.from_tasks is not None:
            if not self.from_tasks:
                raise ValueError("'from_tasks' is empty: name at least one task")
            if len(set(self.from_tasks)) != len(self.from_tasks):
                raise ValueError("'from_tasks' has duplicates")
        if self.dataset is not None:
            return self._check_dataset(files)
        for name in ("subset", "splits"):
            if getattr(self, name) is not None:
                raise ValueError(f"'{name}' only applies with 'dataset'")
        if self.from_tasks is None and self.bundled is None and None in files[:2]:
            raise ValueError("give either 'bundled' or both 'train' and 'validation' files")
        if self.bundled is not None and any(f is not None for f in files):
            raise ValueError("'bundled' and file paths are exclusive: give one or the other")
        return self

    def _check_dataset(self, files: list[str | None]) -> DataConfig:
        if self.bundled is not None or any(f is not None for f in files):
            raise ValueError("'dataset' and 'bundled' or file paths are exclusive: give one")
        if self.format != "auto" or self.encoding != "utf-8":
            raise ValueError(
                "'format' and 'encoding' do not apply to 'dataset' (datasets reads its own "
                "files): drop them"
            )
        if self.splits is None:
            self.splits = DatasetSplits()
        return self


#: loss weight of an auxiliary task when its config gives none (docs/auxiliary.md)
AUXILIARY_WEIGHT = 0.1


class TaskConfig(StrictModel):
    """One task: its type, data, columns, labels and loss weight.

    ``auxiliary: true`` marks a task that is trained and evaluated but never served
    (``predict`` and the server refuse it) and never drives early stopping. ``lm`` tasks
    are always auxiliary. ``weight`` defaults to 1.0, and to :data:`AUXILIARY_WEIGHT`
    (0.1) for an auxiliary task; the resolved value is written to the run's config.yaml.
    ``critical`` marks the tasks ``polytask compare`` judges its verdict on: when any task
    says ``critical: true``, exactly those; otherwise every served task not marked
    ``critical: false``. Resolved at load (auxiliary and held-out tasks are not critical
    unless they say so).
    ``held_out: true`` marks a task that is evaluated but never trained on (the sampler
    never picks it): generalisation to an unseen task. ``instruction`` (required by, and
    only for, ``instruction`` tasks) holds the prompt template and how labels become answers.
    ``inputs: OTHER`` reads the rows of task ``OTHER`` (same data, same text columns): the
    two are drawn together and their rows encoded once per step (:mod:`polytask.config.inputs`).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    type: str
    data: DataConfig
    columns: Columns = Field(default_factory=Columns)
    labels: list[str] | None = None
    multi_label: bool = False
    label_separator: str = "|"
    weight: float = Field(default=1.0, ge=0.0)
    critical: bool | None = None
    auxiliary: bool = False
    max_length: int | None = Field(default=None, ge=8)
    held_out: bool = False
    instruction: InstructionConfig | None = None
    inputs: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """``lm`` tasks are auxiliary; an auxiliary task's weight defaults to 0.1."""
        if isinstance(data, dict):
            data = dict(data)
            if data.get("type") == "lm" and "auxiliary" not in data:
                data["auxiliary"] = True
            if "weight" not in data and data.get("auxiliary") is True:
                data["weight"] = AUXILIARY_WEIGHT
        return data

    @model_validator(mode="after")
    def _check_type(self) -> TaskConfig:
        task_types = listing("task_types")  # the manifest: no torch
        if self.type not in task_types:
            raise ValueError(unknown_name(task_types.kind, self.type, task_types.names()))
        if self.multi_label and self.type != "classification":
            raise ValueError("'multi_label' only applies to classification tasks")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("'labels' has duplicates")
        if self.type == "lm" and not self.auxiliary:
            raise ValueError(
                "lm tasks are auxiliary (they have nothing to serve): drop 'auxiliary'"
            )
        if self.data.from_tasks is not None and self.type != "lm":
            raise ValueError("'data.from_tasks' only applies to lm tasks")
        if (self.instruction is None) == (self.type == "instruction"):
            raise ValueError("'instruction' is required by, and only for, instruction tasks")
        if self.held_out and self.auxiliary:
            raise ValueError("a held-out task is evaluated only: it cannot be auxiliary")
        return self
