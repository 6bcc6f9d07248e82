"""Task types. Importing this package registers every built-in type in :data:`TASK_TYPES`."""

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
