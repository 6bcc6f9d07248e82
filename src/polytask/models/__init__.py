"""Architectures. Importing this package registers every built-in one in :data:`ARCHITECTURES`."""

from polytask.models import (
    causal_lm,
    cgc,
    cross_stitch,
    dselect_k,
    film,
    hard,
    lora,
    mmoe,
    ple,
    prefix,
    soft,
    switch,
    task_embedding,
)
from polytask.models.base import ARCHITECTURES, MultiTaskModel

__all__ = [
    "ARCHITECTURES",
    "MultiTaskModel",
    "causal_lm",
    "cgc",
    "cross_stitch",
    "dselect_k",
    "film",
    "hard",
    "lora",
    "mmoe",
    "ple",
    "prefix",
    "soft",
    "switch",
    "task_embedding",
]
