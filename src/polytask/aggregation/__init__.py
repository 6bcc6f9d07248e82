"""Gradient aggregators: per-task gradients ``[T, P]`` → one update ``[P]``, one per module.

Importing this package registers every built-in method in :data:`AGGREGATORS`. Optional
solvers (quadprog for UPGrad) are imported when a method is constructed, not here.
"""

from polytask.aggregation import (
    aligned_mtl,
    cagrad,
    gradvac,
    imtl_g,
    mean,
    mgda,
    nash_mtl,
    pcgrad,
    sum,
    upgrad,
)
from polytask.aggregation.base import AGGREGATORS, Aggregator

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "aligned_mtl",
    "cagrad",
    "gradvac",
    "imtl_g",
    "mean",
    "mgda",
    "nash_mtl",
    "pcgrad",
    "sum",
    "upgrad",
]
