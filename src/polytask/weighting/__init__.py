"""Loss weightings: per-task losses ``[T]`` → weights ``[T]``, one method per module.

Importing this package registers every built-in method in :data:`WEIGHTINGS`.
"""

from polytask.weighting import dwa, equal, famo, gradnorm, rlw, scale_norm, static, uncertainty
from polytask.weighting.base import WEIGHTINGS, LossWeighting

__all__ = [
    "WEIGHTINGS",
    "LossWeighting",
    "dwa",
    "equal",
    "famo",
    "gradnorm",
    "rlw",
    "scale_norm",
    "static",
    "uncertainty",
]
