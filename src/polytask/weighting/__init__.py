"""Loss weightings: per-task losses ``[T]`` → weights ``[T]``, one method per module.

Importing this package registers every built-in method in :data:`WEIGHTINGS`.
"""

from polytask.weighting import (
    cosmos,
    dwa,
    equal,
    famo,
    geometric_mean,
    gradnorm,
    imtl_l,
    pbi,
    rlw,
    scale_norm,
    static,
    stch,
    uncertainty,
)
from polytask.weighting.base import WEIGHTINGS, LossWeighting

__all__ = [
    "WEIGHTINGS",
    "LossWeighting",
    "cosmos",
    "dwa",
    "equal",
    "famo",
    "geometric_mean",
    "gradnorm",
    "imtl_l",
    "pbi",
    "rlw",
    "scale_norm",
    "static",
    "stch",
    "uncertainty",
]
