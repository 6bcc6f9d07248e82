"""Plain texts for ``lm`` tasks: from the task's own files and/or other tasks' splits.

An ``lm`` task reads the ``text`` column (``columns.text``) of its own data, and with
``data.from_tasks`` the text column of the same split of each named task — the very
subset that task trains and is evaluated on (its ``max_*_examples`` applied with the run's
seed). Word lists (tagging data) are joined with spaces. Each example keeps its tokens, the
special-token mask and its row number: the masks are drawn per step (see ``tasks/lm.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from polytask.data.counts import LABELLED, drop_empty_texts, split_counts
from polytask.data.read import read_table, split_paths
from polytask.data.source import TaskData, TaskSource
from polytask.errors import DataError
from polytask.tasks import TaskSpec, task_type
from polytask.tasks.base import Where, describe

SPLITS = ("train", "validation", "test")


def _limit(ds: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    if limit and len(ds) > limit:
        return ds.shuffle(seed=seed).select(range(limit))
    return ds


def _as_text(value: Any, row: int, where: Where) -> str | None:
    """A text cell: a string, or a word list joined with spaces; null or blank: no text."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = " ".join(value)
    if value is not None and not isinstance(value, str):
        raise DataError(
            f"{where(row)}: text must be a string or a list of strings, got {describe(value)}"
        )
    return value if value is not None and value.strip() else None


def _texts(config: TaskSource, split: str, seed: int) -> tuple[list[str], int, int, int] | None:
    """The texts of one split of ``config``'s own data (None: it has no such split), the
    rows of the file, how many had an empty text and how many were dropped for one
    (``data.empty_texts``; ``keep`` skips them after the subset: nothing to predict)."""
    data = config.data
    paths = split_paths(config) if (data.bundled or data.train or data.dataset) else {}
    if split not in paths:
        return None
    column = config.columns.text
    limit = getattr(config.data, f"max_{split}_examples")
    table = read_table(paths[split], (column, config.columns.label), [column], split)
    rows = len(table)
    table, empty, dropped = drop_empty_texts(table, [column], config.data.empty_texts)
    where = table.where(column)
    texts = [_as_text(v, i, where) for i, v in enumerate(table.columns[column])]
    # the subset is drawn as the task's own loader draws it (a dataset of the same length)
    ds = _limit(datasets.Dataset.from_dict({"row": list(range(len(texts)))}), limit, seed)
    subset = [texts[i] for i in ds["row"]]
    kept = [t for t in subset if t is not None]
    return kept, rows, empty, dropped + len(subset) - len(kept)


def load_text_data(
    config: TaskSource,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    seed: int,
    spec: TaskSpec | None = None,
    only: tuple[str, ...] | None = None,
    tasks: Mapping[str, TaskSource] | None = None,
) -> TaskData:
    """Read, join and tokenise an ``lm`` task's texts per split (train and validation needed)."""
    ttype = task_type(config.type)
    sources: list[TaskSource] = [config]  # its own files (if any), then from_tasks'
    for name in config.data.from_tasks or []:
        if tasks is None or name not in tasks:
            raise DataError(f"task '{config.name}': data.from_tasks names unknown task '{name}'")
        sources.append(tasks[name])
    wanted = only or SPLITS
    splits: dict[str, datasets.Dataset] = {}
    counts: dict[str, dict[str, int]] = {}
    for split in wanted:
        parts = [t for t in (_texts(s, split, seed) for s in sources) if t is not None]
        if not parts:
            if split == "test" and only is None:
                continue
            raise DataError(f"task '{config.name}' has no {split} split")
        texts = [t for part, *_ in parts for t in part]
        if not texts:
            raise DataError(f"task '{config.name}': the {split} split has no text")
        ds = datasets.Dataset.from_dict({"text": texts})
        own_limit = getattr(config.data, f"max_{split}_examples")
        splits[split] = _tokenize(_limit(ds, own_limit, seed), tokenizer, max_length)
        rows, empty = sum(p[1] for p in parts), sum(p[2] for p in parts)
        dropped = sum(p[3] for p in parts)
        counts[split] = split_counts(rows, empty, dropped, [LABELLED] * len(splits[split]))
    if spec is None:
        spec = ttype.fit_spec(config, [], lambda i: config.name)
    return TaskData(spec=ttype.bind_tokenizer(spec, tokenizer), splits=splits, counts=counts)


def _tokenize(
    ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> datasets.Dataset:
    enc = tokenizer(
        list(ds["text"]), truncation=True, max_length=max_length, return_special_tokens_mask=True
    )
    columns: dict[str, list[Any]] = {
        "input_ids": enc["input_ids"],
        "special": enc["special_tokens_mask"],
        "example": list(range(len(ds))),
        "length": [len(ids) for ids in enc["input_ids"]],
    }
    if "token_type_ids" in enc:
        columns["token_type_ids"] = enc["token_type_ids"]
    return datasets.Dataset.from_dict(columns)
