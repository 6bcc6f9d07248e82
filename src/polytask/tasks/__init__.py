"""Task types. Reading any name of this package (``from polytask.tasks import TASK_TYPES``)
registers every built-in type in :data:`TASK_TYPES`.

The task types import torch; they are imported on first use, not with the package, so that
:mod:`polytask.tasks.instruction_config` (the run config's ``instruction:`` section) loads
without torch. Every module outside this package imports names from the package, never
from ``polytask.tasks.base``, so a registry it reads is always complete.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polytask.tasks import classification, instruction, lm, regression, tagging
    from polytask.tasks.base import IGNORE_INDEX, TASK_TYPES, TaskSpec, TaskType, task_type

__all__ = [
    "IGNORE_INDEX",
    "TASK_TYPES",
    "TaskSpec",
    "TaskType",
    "classification",
    "instruction",
    "lm",
    "regression",
    "tagging",
    "task_type",
]

_TYPES = ("classification", "instruction", "lm", "regression", "tagging")
_BASE = ("IGNORE_INDEX", "TASK_TYPES", "TaskSpec", "TaskType", "task_type")


def __getattr__(name: str) -> Any:
    if name not in _TYPES and name not in _BASE:
        raise AttributeError(f"module 'polytask.tasks' has no attribute '{name}'")
    for module in _TYPES:  # registers every built-in type
        globals()[module] = importlib.import_module(f"polytask.tasks.{module}")
    base = importlib.import_module("polytask.tasks.base")
    for attr in _BASE:
        globals()[attr] = getattr(base, attr)
    return globals()[name]
