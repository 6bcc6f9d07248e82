"""What the loaders read of a task, as protocols: any object with these attributes will do.

:class:`polytask.config.TaskConfig` provides them; the data floor never imports the config
(builders take plain arguments).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

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
    def format(self) -> str: ...
    @property
    def encoding(self) -> str: ...
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
