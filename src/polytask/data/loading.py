"""Load a task's splits with Hugging Face ``datasets``, validate them, encode labels, tokenise.

Every check that can fail on user data runs here, before a run directory exists: missing
files and columns, empty splits, labels outside the label set, NaN regression targets,
malformed CoNLL lines. Errors name the file, the row and the column.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from polytask import __version__
from polytask.cache import cache_dir
from polytask.data.counts import drop_empty_texts, label_states, split_counts
from polytask.data.instructions import load_instruction_data
from polytask.data.read import Table, read_table, split_paths
from polytask.data.source import Loader, SplitFile, TaskData, TaskSource, fields
from polytask.data.texts import load_text_data
from polytask.errors import DataError, PolytaskError
from polytask.tasks import TaskSpec, task_type
from polytask.tasks.base import TaskType, is_missing


def _fingerprint(*parts: Any) -> str:
    blob = json.dumps([__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _tokenizer_id(tokenizer: PreTrainedTokenizerBase) -> str:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()))[:100000]
    return hashlib.sha256((tokenizer.name_or_path + vocab).encode()).hexdigest()


def read_task(
    config: TaskSource,
    seed: int,
    spec: TaskSpec | None = None,
    only: tuple[str, ...] | None = None,
) -> tuple[TaskSpec, dict[str, str], dict[str, datasets.Dataset], dict[str, dict[str, int]]]:
    """Read, check and encode the splits of a task read from a table (classification,
    tagging, regression; no tokenizer): its spec, each split's identity (what the
    tokenised cache keys on: :attr:`Table.identity`), per split ``text`` (``text_pair``)
    and ``target`` columns, subsets (``max_*_examples``) drawn with ``seed``, and per split
    what was dropped or masked (:func:`polytask.data.counts.split_counts`)."""
    ttype, cols = task_type(config.type), config.columns
    paths = split_paths(config)
    if only is not None:
        missing = [s for s in only if s not in paths]
        if missing:
            raise DataError(f"task '{config.name}' has no {missing[0]} split")
        paths = {s: p for s, p in paths.items() if s in only}
    read = {split: read_task_table(config, split, path) for split, path in paths.items()}
    tables = {split: table for split, (table, _) in read.items()}
    # the label set comes from the whole training split: a subset must not shrink it
    if spec is None:
        train = tables["train"]
        spec = ttype.fit_spec(config, train.columns[cols.label], train.where(cols.label))
    raw = {split: encode_split(config, ttype, spec, split, t) for split, t in tables.items()}

    if (
        config.data.max_train_examples
        and "train" in raw
        and len(raw["train"]) > config.data.max_train_examples
    ):
        raw["train"] = raw["train"].shuffle(seed=seed).select(range(config.data.max_train_examples))
    for split, limit in (
        ("validation", config.data.max_validation_examples),
        ("test", config.data.max_test_examples),
    ):
        if limit and split in raw and len(raw[split]) > limit:
            raw[split] = raw[split].shuffle(seed=seed).select(range(limit))
    if "validation" in raw and all(y is None for y in raw["validation"]["target"]):
        raise DataError(
            f"{paths['validation']}: no row of the validation split used "
            f"(max_validation_examples={config.data.max_validation_examples}) has a label in "
            f"column '{cols.label}'; the task is evaluated on it"
        )
    counts = {s: split_counts(*read[s][1], ds["label_state"]) for s, ds in raw.items()}
    raw = {s: ds.remove_columns("label_state") for s, ds in raw.items()}
    return spec, {s: t.identity for s, t in tables.items()}, raw, counts


def load_task_data(
    config: TaskSource,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    seed: int,
    spec: TaskSpec | None = None,
    only: tuple[str, ...] | None = None,
    tasks: Mapping[str, TaskSource] | None = None,
) -> TaskData:
    """Load, validate, encode and tokenise the splits of one task.

    ``spec`` (from a saved model) replaces fitting the label set on the training split;
    ``only`` restricts which splits are read; ``tasks`` (every task of the run by name)
    lets an ``lm`` task read other tasks' texts (``data.from_tasks``). The loader is the
    one the task type names (:attr:`~polytask.tasks.TaskType.reader`, :data:`LOADERS`).
    """
    reader = task_type(config.type).reader
    if reader not in LOADERS:
        raise PolytaskError(
            f"task type '{config.type}' is read by '{reader}', which is not a loader "
            f"({', '.join(sorted(LOADERS))})"
        )
    return LOADERS[reader](config, tokenizer, max_length, seed, spec, only, tasks)


def load_table_data(
    config: TaskSource,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    seed: int,
    spec: TaskSpec | None = None,
    only: tuple[str, ...] | None = None,
    tasks: Mapping[str, TaskSource] | None = None,
) -> TaskData:
    """The ``"table"`` loader: :func:`read_task`, then each split tokenized by the task
    type's :meth:`~polytask.tasks.TaskType.encode_inputs` and ``target_columns`` (cached)."""
    ttype, cols = task_type(config.type), config.columns
    spec, identities, raw, counts = read_task(config, seed, spec, only)
    spec = ttype.bind_tokenizer(spec, tokenizer)
    tok_id = _tokenizer_id(tokenizer)
    splits = {}
    for split, ds in raw.items():
        featurize = _Featurizer(ttype, tokenizer, cols.text_pair is not None, max_length)
        fingerprint = _fingerprint(
            identities[split],
            split,
            seed,
            fields(config.data),
            tok_id,
            max_length,
            spec.to_dict(),
            fields(cols),
        )
        cache = cache_dir() / "tokenized"
        cache.mkdir(parents=True, exist_ok=True)
        splits[split] = ds.map(
            featurize,
            batched=True,
            remove_columns=ds.column_names,
            new_fingerprint=fingerprint,
            cache_file_name=str(cache / f"{config.name}-{split}-{fingerprint}.arrow"),
        )
    return TaskData(spec=spec, splits=splits, counts=counts)


def read_task_table(
    config: TaskSource, split: str, path: SplitFile
) -> tuple[Table, tuple[int, int, int]]:
    """One split of a classification, tagging or regression task: its text, text pair and
    label columns, every cell checked for type by the task type (nothing converted), with
    the rows in the file, how many had an empty text and how many of those were dropped."""
    ttype, cols = task_type(config.type), config.columns
    needed = [c for c in (cols.text, cols.text_pair, cols.label) if c is not None]
    table = read_table(path, (cols.text, cols.label), needed, split)
    rows = len(table)
    table, empty, dropped = drop_empty_texts(table, needed[:-1], config.data.empty_texts)
    for column in needed[:-1]:
        table.columns[column] = ttype.read_texts(config, table.columns[column], table.where(column))
    where = table.where(cols.label)
    labels = ttype.read_labels(config, table.columns[cols.label], where, table.text_cells)
    table.columns[cols.label] = labels
    if split == "validation" and all(is_missing(v) for v in labels):
        raise DataError(
            f"{path}: column '{cols.label}' has no label in any row; the validation "
            "split is what the task is evaluated on"
        )
    return table, (rows, empty, dropped)


def encode_split(
    config: TaskSource, ttype: TaskType, spec: TaskSpec, split: str, table: Table
) -> datasets.Dataset:
    """The split's texts and encoded labels (``target``) as a ``datasets.Dataset``, the
    labels checked against the texts by the task type (tagging: one tag per word)."""
    cols = config.columns
    where = table.where(cols.label)
    targets = [ttype.encode(spec, v, i, where) for i, v in enumerate(table.columns[cols.label])]
    out: dict[str, list[Any]] = {"text": table.columns[cols.text], "target": targets}
    out["label_state"] = label_states(table, cols.label, targets)  # counted after subsets
    if cols.text_pair is not None:
        out["text_pair"] = table.columns[cols.text_pair]
    ttype.check_targets(out["text"], targets, where)
    return datasets.Dataset.from_dict(out)


class _Featurizer:
    """Tokenises one batch of checked rows (a picklable callable for ``map``) through the
    task type's hooks: inputs by ``encode_inputs``, labels by ``target_columns``."""

    def __init__(
        self,
        task_type: TaskType,
        tokenizer: PreTrainedTokenizerBase,
        pair: bool,
        max_length: int,
    ) -> None:
        self.task_type, self.tokenizer = task_type, tokenizer
        self.pair, self.max_length = pair, max_length

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        texts, pairs = batch["text"], batch["text_pair"] if self.pair else None
        enc = self.task_type.encode_inputs(self.tokenizer, texts, pairs, self.max_length)
        out = {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}
        out.update(self.task_type.target_columns(enc, texts, batch["target"]))
        out["length"] = [len(ids) for ids in enc["input_ids"]]
        return out


#: the loaders a task type's ``reader`` names
LOADERS: dict[str, Loader] = {
    "table": load_table_data,
    "texts": load_text_data,
    "instruction": load_instruction_data,
}
