"""What a task is, apart from its type: the settings a task type reads (:class:`TaskOptions`),
what it learned from the data (:class:`TaskSpec`) and its own evaluation pass's results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


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
