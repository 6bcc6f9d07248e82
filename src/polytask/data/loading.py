"""Load a task's splits with Hugging Face ``datasets``, validate them, encode labels, tokenise.

Every check that can fail on user data runs here, before a run directory exists: missing
files and columns, empty splits, labels outside the label set, NaN regression targets,
malformed CoNLL lines. Errors name the file, the row and the column.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from polytask import __version__
from polytask.config import TaskConfig
from polytask.data import bundled
from polytask.errors import DataError
from polytask.tasks import TaskSpec, task_type
from polytask.tasks.tagging import Tagging

datasets.disable_progress_bars()
# polytask reports data problems itself, in one line; datasets' own error logs would duplicate them
datasets.logging.set_verbosity(datasets.logging.CRITICAL)
logging.getLogger("datasets").setLevel(logging.CRITICAL)

_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".conll": "conll",
    ".txt": "conll",
    ".bio": "conll",
}


@dataclass
class TaskData:
    """A task's spec and its tokenised splits (``train``, ``validation`` and maybe ``test``)."""

    spec: TaskSpec
    splits: dict[str, datasets.Dataset]


def _format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    if path.is_dir():
        return "saved"
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: cannot tell the format from the extension; set data.format")
    return fmt


def _read_conll(path: Path, encoding: str, text_col: str, label_col: str) -> datasets.Dataset:
    """CoNLL-style tagging file: ``token<TAB>tag`` per line, a blank line between examples."""
    rows: list[dict[str, list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, encoding=encoding) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                if tokens:
                    rows.append({text_col: tokens, label_col: tags})
                tokens, tags = [], []
                continue
            parts = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            if len(parts) < 2 or not parts[-1].strip():
                raise DataError(f"{path}, line {number}: token {parts[0].strip()!r} has no tag")
            tokens.append(parts[0].strip())
            tags.append(parts[-1].strip())
    if tokens:
        rows.append({text_col: tokens, label_col: tags})
    return datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict({})


def _read_json(path: Path, encoding: str) -> datasets.Dataset:
    """JSON lines (or one JSON array) parsed with Python's json, so values keep their types.

    Arrow's own reader silently turns a value of the wrong type into null (a string "NaN"
    in a numeric column would become a missing label); here such columns become text and
    the task's label checks see the real value.
    """
    text = path.read_text(encoding)
    rows: list[Any]
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    else:
        rows = []
        for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 is data
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(rows[-1], dict):
                raise DataError(f"{path}, line {number}: a record must be a JSON object")
    if not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: every record must be a JSON object")
    columns: dict[str, list[Any]] = {}
    for i, row in enumerate(rows):
        for key in row:
            columns.setdefault(key, [None] * i)
        for key, values in columns.items():
            values.append(row.get(key))
    for key, values in columns.items():
        kinds = {type(v) for v in values if v is not None}
        if len(kinds) > 1 and not kinds <= {int, float}:
            columns[key] = [
                v if v is None or isinstance(v, str | list) else json.dumps(v) for v in values
            ]
            if any(isinstance(v, list) for v in columns[key]):
                columns[key] = [
                    v if v is None or isinstance(v, str) else json.dumps(v) for v in values
                ]
    return datasets.Dataset.from_dict(columns)


def read_split(
    path: Path, fmt: str, encoding: str, columns: tuple[str, str], split: str = "train"
) -> datasets.Dataset:
    """Read one split file (or saved dataset dir) into a ``datasets.Dataset``."""
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    fmt = _format_of(path, fmt)
    try:
        if fmt == "conll":
            return _read_conll(path, encoding, *columns)
        if fmt == "json":
            return _read_json(path, encoding)
        if fmt == "saved":
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                raise DataError(f"{path}: a DatasetDict; point each split at its own folder")
            return loaded
        kwargs: dict[str, Any] = {}
        if fmt == "csv":
            # keep empty cells as "" (a missing label) and "nan" as text, so NaN is caught
            kwargs = {"keep_default_na": False, "encoding": encoding}
            if path.suffix.lower() == ".tsv":
                kwargs["sep"] = "\t"
        cache = str(bundled.cache_dir() / "hf")
        out = datasets.load_dataset(
            fmt, data_files=str(path), split="train", cache_dir=cache, **kwargs
        )
        assert isinstance(out, datasets.Dataset)
        return out
    except DataError:
        raise
    except (UnicodeDecodeError, LookupError) as exc:
        raise DataError(f"{path}: cannot decode as {encoding} ({exc}); set data.encoding") from None
    except Exception as exc:  # datasets wraps parser errors in several exception types
        root = exc
        while root.__cause__ is not None or root.__context__ is not None:
            root = root.__cause__ or root.__context__  # type: ignore[assignment]
        if (
            isinstance(root, UnicodeDecodeError)
            or "UTF8" in str(root)
            or "codec can't decode" in str(root)
        ):
            raise DataError(f"{path}: cannot decode as {encoding}; set data.encoding") from None
        message = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
        if "corresponds to no data" in message or "No columns to parse" in message:
            raise DataError(f"{path}: the {split} split is empty") from None
        raise DataError(f"{path}: cannot read as {fmt}: {message}") from None


def _split_paths(config: TaskConfig) -> dict[str, tuple[Path, str, str]]:
    data = config.data
    if data.bundled is not None:
        files = bundled.split_files(data.bundled)
        return {s: (p, "json", "utf-8") for s, p in files.items()}
    out: dict[str, tuple[Path, str, str]] = {}
    for split in ("train", "validation", "test"):
        value = getattr(data, split)
        if value is not None:
            out[split] = (Path(value), data.format, data.encoding)
    return out


def _fingerprint(*parts: Any) -> str:
    blob = json.dumps([__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _content_id(path: Path) -> str:
    """Identity of a data file (or saved-dataset folder): path, size and modification time."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return ";".join(
        f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file()
    )


def _tokenizer_id(tokenizer: PreTrainedTokenizerBase) -> str:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()))[:100000]
    return hashlib.sha256((tokenizer.name_or_path + vocab).encode()).hexdigest()


def load_task_data(
    config: TaskConfig,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    seed: int,
    spec: TaskSpec | None = None,
    only: tuple[str, ...] | None = None,
    tasks: Mapping[str, TaskConfig] | None = None,
) -> TaskData:
    """Load, validate, encode and tokenise the splits of one task.

    ``spec`` (from a saved model) replaces fitting the label set on the training split;
    ``only`` restricts which splits are read; ``tasks`` (every task of the run by name)
    lets an ``lm`` task read other tasks' texts (``data.from_tasks``).
    """
    if config.type == "lm":
        from polytask.data.texts import load_text_data

        return load_text_data(config, tokenizer, max_length, seed, spec, only, tasks)
    if config.type == "instruction":
        from polytask.data.instructions import load_instruction_data

        return load_instruction_data(config, tokenizer, max_length, seed, spec, only)
    ttype = task_type(config.type)
    cols = config.columns
    label_col = cols.label
    raw: dict[str, datasets.Dataset] = {}
    paths = _split_paths(config)
    if only is not None:
        missing = [s for s in only if s not in paths]
        if missing:
            raise DataError(f"task '{config.name}' has no {missing[0]} split")
        paths = {s: p for s, p in paths.items() if s in only}
    for split, (path, fmt, encoding) in paths.items():
        ds = read_split(path, fmt, encoding, (cols.text, label_col), split)
        if len(ds) == 0:
            raise DataError(f"{path}: the {split} split is empty")
        needed = [c for c in (cols.text, cols.text_pair, label_col) if c is not None]
        for column in needed:
            if column not in ds.column_names:
                raise DataError(
                    f"{path}: missing column '{column}' (has: {', '.join(ds.column_names)})"
                )
        raw[split] = ds.select_columns(needed)

    def where_for(split: str) -> Any:
        path = paths[split][0]
        unit = "line" if path.suffix.lower() == ".jsonl" else "row"
        return lambda i: f"{path}" if i < 0 else f"{path}, {unit} {i + 1}, column '{label_col}'"

    # the label set comes from the whole training split: a subset must not shrink it
    if spec is None:
        spec = ttype.fit_spec(config, raw["train"][label_col], where_for("train"))

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

    tok_id = _tokenizer_id(tokenizer)
    splits = {}
    for split, ds in raw.items():
        where = where_for(split)
        featurize = _Featurizer(
            ttype, spec, tokenizer, cols.text, cols.text_pair, label_col, max_length, where
        )
        fingerprint = _fingerprint(
            _content_id(paths[split][0]),
            split,
            seed,
            config.data.model_dump(),
            tok_id,
            max_length,
            spec.to_dict(),
            cols.model_dump(),
        )
        cache = bundled.cache_dir() / "tokenized"
        cache.mkdir(parents=True, exist_ok=True)
        splits[split] = ds.map(
            featurize,
            batched=True,
            with_indices=True,
            remove_columns=ds.column_names,
            new_fingerprint=fingerprint,
            cache_file_name=str(cache / f"{config.name}-{split}-{fingerprint}.arrow"),
        )
    return TaskData(spec=spec, splits=splits)


class _Featurizer:
    """Encodes labels and tokenises one batch of raw rows (a picklable callable for ``map``)."""

    def __init__(
        self,
        task_type: Any,
        spec: TaskSpec,
        tokenizer: PreTrainedTokenizerBase,
        text: str,
        text_pair: str | None,
        label: str,
        max_length: int,
        where: Any,
    ) -> None:
        self.task_type, self.spec, self.tokenizer = task_type, spec, tokenizer
        self.text, self.text_pair, self.label = text, text_pair, label
        self.max_length, self.where = max_length, where

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        labels = [
            self.task_type.encode(self.spec, v, i, self.where)
            for v, i in zip(batch[self.label], indices, strict=True)
        ]
        if isinstance(self.task_type, Tagging):
            return self._tagging(batch, labels, indices)
        texts = [
            _as_text(t, i, self.text, self.where)
            for t, i in zip(batch[self.text], indices, strict=True)
        ]
        pairs = None
        if self.text_pair is not None:
            pairs = [
                _as_text(t, i, self.text_pair, self.where)
                for t, i in zip(batch[self.text_pair], indices, strict=True)
            ]
        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        out = {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}
        out["target"] = labels
        out["length"] = [len(ids) for ids in enc["input_ids"]]
        return out

    def _tagging(
        self, batch: dict[str, list[Any]], labels: list[Any], indices: list[int]
    ) -> dict[str, list[Any]]:
        words = [
            _as_words(w, i, self.text, self.where)
            for w, i in zip(batch[self.text], indices, strict=True)
        ]
        for w, y, i in zip(words, labels, indices, strict=True):
            if y is not None and len(y) != len(w):
                raise DataError(f"{self.where(i)}: {len(y)} tags for {len(w)} words")
        enc = self.tokenizer(
            words, is_split_into_words=True, truncation=True, max_length=self.max_length
        )
        out = {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}
        aligned, starts = [], []
        for row, y in enumerate(labels):
            word_ids = enc.word_ids(row)
            aligned.append(Tagging.align(word_ids, y))
            starts.append(Tagging.word_starts(word_ids))
        out["target"] = aligned
        out["word_labels"] = labels
        out["word_starts"] = starts
        out["n_words"] = [len(w) for w in words]
        out["length"] = [len(ids) for ids in enc["input_ids"]]
        return out


def _as_text(value: Any, row: int, column: str, where: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        raise DataError(f"{where(row).rsplit(', column', 1)[0]}, column '{column}': text is empty")
    return str(value)


def _as_words(value: Any, row: int, column: str, where: Any) -> list[str]:
    words = value.split() if isinstance(value, str) else [str(v) for v in (value or [])]
    if not words:
        raise DataError(f"{where(row).rsplit(', column', 1)[0]}, column '{column}': no words")
    return words
