"""What the loaders read of a task, as protocols: any object with these attributes will do.

:class:`polytask.config.TaskConfig` provides them; the data floor never imports the config
(builders take plain arguments).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import datasets

from polytask.tasks.base import TaskOptions
from polytask.tasks.spec import TaskSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class TaskData:
    """A task's spec and its tokenised splits (``train``, ``validation`` and maybe ``test``)."""

    spec: TaskSpec
    splits: dict[str, datasets.Dataset]
    #: per split, the rows dropped (empty text) or masked (no label key, empty label):
    #: :mod:`polytask.data.counts`
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


class SplitFile(NamedTuple):
    """Where one split is read: a file (or saved folder) in a format and an encoding, or
    (``format == "dataset"``) a split of a task's ``data.dataset``."""

    path: Path
    format: str
    encoding: str
    #: for a ``dataset``: the subset, the dataset's split, the task and the config key
    subset: str | None = None
    split: str | None = None
    task: str = ""
    field: str = ""

    def __str__(self) -> str:
        """How errors name the split: the file, or the task's dataset and split."""
        if self.format != "dataset":
            return str(self.path)
        subset = f" ({self.subset})" if self.subset else ""
        return f"task '{self.task}', dataset '{self.path}'{subset}, split '{self.split}'"


def content_id(path: Path) -> str:
    """Identity of a data file (or folder): path, size and modification time of each file."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return ";".join(
        f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file()
    )


class DatasetSplitNames(Protocol):
    """Which split of a ``data.dataset`` each polytask split reads."""

    @property
    def train(self) -> str: ...
    @property
    def validation(self) -> str: ...
    @property
    def test(self) -> str | None: ...


class DataSource(Protocol):
    """Where a task's examples come from (``polytask.config.tasks.DataConfig`` is one)."""

    @property
    def bundled(self) -> str | None: ...
    @property
    def from_tasks(self) -> list[str] | None: ...
    @property
    def train(self) -> str | None: ...
    @property
    def validation(self) -> str | None: ...
    @property
    def test(self) -> str | None: ...
    @property
    def dataset(self) -> str | None: ...
    @property
    def subset(self) -> str | None: ...
    @property
    def splits(self) -> DatasetSplitNames | None: ...
    @property
    def format(self) -> str: ...
    @property
    def encoding(self) -> str: ...
    @property
    def empty_texts(self) -> str: ...
    @property
    def max_train_examples(self) -> int | None: ...
    @property
    def max_validation_examples(self) -> int | None: ...
    @property
    def max_test_examples(self) -> int | None: ...


class ColumnNames(Protocol):
    """Which columns hold the text(s) and the label (``polytask.config.tasks.Columns``)."""

    @property
    def text(self) -> str: ...
    @property
    def text_pair(self) -> str | None: ...
    @property
    def label(self) -> str: ...


class TaskSource(TaskOptions, Protocol):
    """What the loaders read of one task: its type, files and columns, and the options its
    task type reads. :class:`polytask.config.TaskSource` provides them; the loaders never
    import the config, so any object with these attributes will do."""

    @property
    def type(self) -> str: ...
    @property
    def data(self) -> DataSource: ...
    @property
    def columns(self) -> ColumnNames: ...


def fields(record: Any) -> dict[str, Any]:
    """A record's attribute values as a plain dict (for cache fingerprints)."""
    return dict(vars(record))


class Loader(Protocol):
    """What every loader takes (``data.loading.LOADERS``, named by a type's ``reader``)."""

    def __call__(
        self,
        config: TaskSource,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        seed: int,
        spec: TaskSpec | None = None,
        only: tuple[str, ...] | None = None,
        tasks: Mapping[str, TaskSource] | None = None,
    ) -> TaskData: ...
