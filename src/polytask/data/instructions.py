"""Instruction data: a task's labelled rows turned into tokenized (prompt, answer) examples.

The rows come from the task's own files or a bundled dataset (the same readers as every
task); ``instruction.answer`` says how a row's label becomes the answer text. Each example
keeps ``input_ids`` (prompt + answer), ``target`` (the answer's ids, ``-100`` on the prompt),
``prompt_length`` (where generation starts) and ``answer`` (the reference text).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
import torch
from transformers import PreTrainedTokenizerBase

from polytask.data.counts import drop_empty_texts, label_states, split_counts
from polytask.data.read import Table, read_table, split_paths
from polytask.data.source import TaskData, TaskSource
from polytask.errors import DataError
from polytask.tasks import TaskSpec, task_type
from polytask.tasks.base import Where
from polytask.tasks.prompts import NONE_ANSWER, ExampleEncoder, as_text, make_answer

SPLITS = ("train", "validation", "test")


def load_instruction_data(
    config: TaskSource,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    seed: int,
    spec: TaskSpec | None = None,
    only: tuple[str, ...] | None = None,
    tasks: Mapping[str, TaskSource] | None = None,
) -> TaskData:
    """Read, turn into (prompt, answer) pairs and tokenize an ``instruction`` task's splits.

    ``spec`` (from a saved model) replaces fitting the answer set on the training split;
    ``only`` restricts which splits are read; ``tasks`` is not read (the task has its own
    files; every loader takes the same arguments).
    """
    ttype = task_type(config.type)
    ins = config.instruction
    assert ins is not None
    cols = config.columns
    paths = split_paths(config)
    wanted = only or tuple(s for s in SPLITS if s in paths)
    missing = [s for s in (*wanted, *(() if spec else ("train",))) if s not in paths]
    if missing:
        raise DataError(f"task '{config.name}' has no {missing[0]} split")
    raw: dict[str, datasets.Dataset] = {}
    wheres: dict[str, Where] = {}
    read: dict[str, tuple[int, int, int]] = {}  # rows in the file, empty texts, dropped
    for split in dict.fromkeys((*wanted, *(() if spec else ("train",)))):
        table = read_table(paths[split], (cols.text, cols.label), [cols.text, cols.label], split)
        rows = len(table)
        table, empty, dropped = drop_empty_texts(table, [cols.text], config.data.empty_texts)
        read[split] = (rows, empty, dropped)
        wheres[split] = table.where(cols.label)
        raw[split] = datasets.Dataset.from_dict(_checked(config, table))
    if spec is None:
        spec = ttype.fit_spec(config, raw["train"][cols.label], wheres["train"])
    spec = ttype.bind_tokenizer(spec, tokenizer)
    encode = ExampleEncoder(tokenizer, ins, max_length)
    splits: dict[str, datasets.Dataset] = {}
    counts: dict[str, dict[str, int]] = {}
    for split in wanted:
        ds = raw[split]
        if split == "train" and ins.max_none_share is not None:
            ds = _cap_none(ds, config, seed)
        limit = getattr(config.data, f"max_{split}_examples")
        if limit and len(ds) > limit:
            ds = ds.shuffle(seed=seed).select(range(limit))
        counts[split] = split_counts(*read[split], ds["label_state"])
        splits[split] = _examples(config, spec, ds, encode, wheres[split])
    return TaskData(spec=spec, splits=splits, counts=counts)


def _examples(
    config: TaskSource, spec: TaskSpec, ds: datasets.Dataset, encode: ExampleEncoder, where: Where
) -> datasets.Dataset:
    """One split's tokenized examples: prompt + answer ids, their targets, where the answer
    starts, the reference answer and the length (each answer checked by the task type)."""
    ins, cols, ttype = config.instruction, config.columns, task_type(config.type)
    assert ins is not None
    columns: dict[str, list[object]] = {
        "input_ids": [],
        "target": [],
        "prompt_length": [],
        "answer": [],
        "length": [],
    }
    for text, label, line in zip(ds[cols.text], ds[cols.label], ds[_ROW], strict=True):
        answer = make_answer(ins, text, label)
        ttype.encode(spec, answer, line, where)
        ids, target, prompt_length = encode(as_text(text), answer)
        columns["input_ids"].append(ids)
        columns["target"].append(target)
        columns["prompt_length"].append(prompt_length)
        columns["answer"].append(answer or "")
        columns["length"].append(len(ids))
    return datasets.Dataset.from_dict(columns)


_ROW = "__row"  # each row's index in its file, kept through subsets for error messages


def _checked(config: TaskSource, table: Table) -> dict[str, list[Any]]:
    """The text and label columns checked for type by the task type (nothing converted but
    what its ``read_labels`` converts: a missing label is ``None``, a tag string is split)."""
    ttype, cols = task_type(config.type), config.columns
    texts = ttype.read_texts(config, table.columns[cols.text], table.where(cols.text))
    where = table.where(cols.label)
    labels = ttype.read_labels(config, table.columns[cols.label], where, table.text_cells)
    states = label_states(table, cols.label, labels)
    rows = list(range(len(texts)))
    return {cols.text: texts, cols.label: labels, _ROW: rows, "label_state": states}


def _cap_none(ds: datasets.Dataset, config: TaskSource, seed: int) -> datasets.Dataset:
    """The rows left when texts answering ``none`` may be at most ``max_none_share`` of them
    (a seeded sample of those rows is kept; every row with an entity stays)."""
    ins, cols = config.instruction, config.columns
    assert ins is not None and ins.max_none_share is not None
    answers = [make_answer(ins, t, y) for t, y in zip(ds[cols.text], ds[cols.label], strict=True)]
    none = [i for i, a in enumerate(answers) if a == NONE_ANSWER]
    some = [i for i, a in enumerate(answers) if a is not None and a != NONE_ANSWER]
    share = ins.max_none_share
    allowed = int(share * len(some) / (1.0 - share))
    if len(none) <= allowed:
        return ds
    order = torch.randperm(len(none), generator=torch.Generator().manual_seed(seed)).tolist()
    kept = sorted(some + [none[k] for k in order[:allowed]])
    return ds.select(kept)
