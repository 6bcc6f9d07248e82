"""Gradient aggregators: per-task gradients ``[T, P]`` → one update ``[P]``, one per module.

Importing this package registers every built-in method in :data:`AGGREGATORS`. Optional
solvers (quadprog for UPGrad and DualProj) are imported when a method is constructed, not here.
"""

from polytask.aggregation import (
    aligned_mtl,
    cagrad,
    conflict_free,
    cr_mogm,
    db_mtl,
    dualproj,
    excess_mtl,
    fairgrad,
    graddrop,
    gradvac,
    imtl_g,
    krum,
    mean,
    mgda,
    moco,
    modo,
    nash_mtl,
    ntkmtl,
    pcd,
    pcgrad,
    sdmgrad,
    sum,
    trimmed_mean,
    upgrad,
)
from polytask.aggregation.base import AGGREGATORS, Aggregator

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "aligned_mtl",
    "cagrad",
    "conflict_free",
    "cr_mogm",
    "db_mtl",
    "dualproj",
    "excess_mtl",
    "fairgrad",
    "graddrop",
    "gradvac",
    "imtl_g",
    "krum",
    "mean",
    "mgda",
    "moco",
    "modo",
    "nash_mtl",
    "ntkmtl",
    "pcd",
    "pcgrad",
    "sdmgrad",
    "sum",
    "trimmed_mean",
    "upgrad",
]
