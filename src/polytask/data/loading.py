"""Load a task's splits with Hugging Face ``datasets``, validate them, encode labels, tokenise.

Every check that can fail on user data runs here, before a run directory exists: missing
files and columns, empty splits, labels outside the label set, NaN regression targets,
malformed CoNLL lines. Errors name the file, the row and the column.
"""

from __future__ import annotations

import csv
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
from polytask.tasks.base import TaskType, Where, is_missing
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


@dataclass
class Table:
    """The columns a task reads from one split file, every cell as the file has it.

    ``text_cells``: the format stores text only (CSV, TSV, CoNLL), so a number arrives as
    the text written; ``lines``: the line of each row (JSON lines), else rows count from 1.
    """

    path: Path
    columns: dict[str, list[Any]]
    text_cells: bool
    lines: list[int] | None = None

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def where(self, column: str) -> Where:
        """``row -> "file, line N, column 'c'"`` (``-1``: the file alone)."""
        unit = "line" if self.lines is not None else "row"

        def at(row: int) -> str:
            if row < 0:
                return str(self.path)
            number = self.lines[row] if self.lines is not None else row + 1
            return f"{self.path}, {unit} {number}, column '{column}'"

        return at


def _read_json(path: Path, encoding: str) -> tuple[dict[str, list[Any]], list[int] | None]:
    """JSON lines (or one JSON array) parsed with Python's json: every value keeps its type
    (no column is converted; the task types check what they read). Returns the columns and,
    for JSON lines, the line of each row."""
    text = path.read_text(encoding)
    rows: list[Any]
    lines: list[int] | None = None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not all(isinstance(r, dict) for r in rows):
            raise DataError(f"{path}: every record must be a JSON object")
    else:
        rows, lines = [], []
        for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 is data
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(rows[-1], dict):
                raise DataError(f"{path}, line {number}: a record must be a JSON object")
            lines.append(number)
    columns: dict[str, list[Any]] = {}
    for i, row in enumerate(rows):
        for key in row:
            columns.setdefault(key, [None] * i)
        for key, values in columns.items():
            values.append(row.get(key))
    return columns, lines


def _read_csv(path: Path, encoding: str) -> dict[str, list[Any]]:
    """CSV/TSV read with Python's csv module: every cell is the text written (an empty cell
    is ``""``, a missing label); a row with more or fewer cells than the header is an error."""
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding=encoding, newline="") as fh:
        records = [(n, r) for n, r in enumerate(csv.reader(fh, delimiter=sep)) if r]
    if not records:
        return {}
    header = [h.lstrip("\ufeff") if i == 0 else h for i, h in enumerate(records[0][1])]
    if len(set(header)) != len(header):
        raise DataError(f"{path}: the header repeats a column name ({', '.join(header)})")
    columns: dict[str, list[Any]] = {name: [] for name in header}
    for row, (_, cells) in enumerate(records[1:], start=1):
        if len(cells) != len(header):
            raise DataError(
                f"{path}, row {row}: cannot read as csv: {len(cells)} cells, "
                f"the header has {len(header)}"
            )
        for name, cell in zip(header, cells, strict=True):
            columns[name].append(cell)
    return columns


def read_table(
    path: Path, fmt: str, encoding: str, columns: tuple[str, str], needed: list[str], split: str
) -> Table:
    """The ``needed`` columns of one split file (or saved dataset dir), cells as written.

    ``columns`` (text, label) names the two columns of a CoNLL file. Refuses a missing file,
    an empty split and a missing column.
    """
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    fmt = _format_of(path, fmt)
    lines: list[int] | None = None
    try:
        if fmt == "json":
            table, lines = _read_json(path, encoding)
        elif fmt == "csv":
            table = _read_csv(path, encoding)
        else:
            ds = read_split(path, fmt, encoding, columns, split)
            table = {c: list(ds[c]) for c in needed if c in ds.column_names}
            table.update({c: [] for c in ds.column_names if c not in table})
    except (UnicodeDecodeError, LookupError) as exc:
        raise DataError(f"{path}: cannot decode as {encoding} ({exc}); set data.encoding") from None
    except csv.Error as exc:
        raise DataError(f"{path}: cannot read as csv: {exc}") from None
    out = Table(path, table, text_cells=fmt in ("csv", "conll"), lines=lines)
    if len(out) == 0:
        raise DataError(f"{path}: the {split} split is empty")
    for column in needed:
        if column not in out.columns:
            raise DataError(f"{path}: missing column '{column}' (has: {', '.join(out.columns)})")
    out.columns = {c: out.columns[c] for c in needed}
    return out


def read_split(
    path: Path, fmt: str, encoding: str, columns: tuple[str, str], split: str = "train"
) -> datasets.Dataset:
    """Read one CoNLL, Parquet or saved-dataset split into a ``datasets.Dataset``."""
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    fmt = _format_of(path, fmt)
    try:
        if fmt == "conll":
            return _read_conll(path, encoding, *columns)
        if fmt == "saved":
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                raise DataError(f"{path}: a DatasetDict; point each split at its own folder")
            return loaded
        cache = str(bundled.cache_dir() / "hf")
        out = datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=cache)
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


def read_task(
    config: TaskConfig,
    seed: int,
    spec: TaskSpec | None = None,
    only: tuple[str, ...] | None = None,
) -> tuple[TaskSpec, dict[str, Path], dict[str, datasets.Dataset]]:
    """Read, check and encode the splits of a classification, tagging or regression task
    (no tokenizer): its spec, each split's file, and per split ``text`` (``text_pair``) and
    ``target`` columns, subsets (``max_*_examples``) drawn with ``seed``."""
    ttype, cols = task_type(config.type), config.columns
    paths = _split_paths(config)
    if only is not None:
        missing = [s for s in only if s not in paths]
        if missing:
            raise DataError(f"task '{config.name}' has no {missing[0]} split")
        paths = {s: p for s, p in paths.items() if s in only}
    tables = {split: read_task_table(config, split, path) for split, path in paths.items()}
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
            f"{paths['validation'][0]}: no row of the validation split used "
            f"(max_validation_examples={config.data.max_validation_examples}) has a label in "
            f"column '{cols.label}'; the task is evaluated on it"
        )
    return spec, {s: p[0] for s, p in paths.items()}, raw


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
    ttype, cols = task_type(config.type), config.columns
    spec, paths, raw = read_task(config, seed, spec, only)
    tok_id = _tokenizer_id(tokenizer)
    splits = {}
    for split, ds in raw.items():
        featurize = _Featurizer(ttype, tokenizer, cols.text_pair is not None, max_length)
        fingerprint = _fingerprint(
            _content_id(paths[split]),
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
            remove_columns=ds.column_names,
            new_fingerprint=fingerprint,
            cache_file_name=str(cache / f"{config.name}-{split}-{fingerprint}.arrow"),
        )
    return TaskData(spec=spec, splits=splits)


def read_task_table(config: TaskConfig, split: str, path: tuple[Path, str, str]) -> Table:
    """One split of a classification, tagging or regression task: its text, text pair and
    label columns, every cell checked for type by the task type (nothing converted)."""
    ttype, cols = task_type(config.type), config.columns
    needed = [c for c in (cols.text, cols.text_pair, cols.label) if c is not None]
    table = read_table(path[0], path[1], path[2], (cols.text, cols.label), needed, split)
    for column in needed[:-1]:
        table.columns[column] = ttype.read_texts(config, table.columns[column], table.where(column))
    where = table.where(cols.label)
    labels = ttype.read_labels(config, table.columns[cols.label], where, table.text_cells)
    table.columns[cols.label] = labels
    if split == "validation" and all(is_missing(v) for v in labels):
        raise DataError(
            f"{path[0]}: column '{cols.label}' has no label in any row; the validation "
            "split is what the task is evaluated on"
        )
    return table


def encode_split(
    config: TaskConfig, ttype: TaskType, spec: TaskSpec, split: str, table: Table
) -> datasets.Dataset:
    """The split's texts and encoded labels (``target``) as a ``datasets.Dataset``; a
    tagging row must have one tag per word."""
    cols = config.columns
    where = table.where(cols.label)
    targets = [ttype.encode(spec, v, i, where) for i, v in enumerate(table.columns[cols.label])]
    out: dict[str, list[Any]] = {"text": table.columns[cols.text], "target": targets}
    if cols.text_pair is not None:
        out["text_pair"] = table.columns[cols.text_pair]
    if isinstance(ttype, Tagging):
        for i, (words, y) in enumerate(zip(out["text"], targets, strict=True)):
            if y is not None and len(y) != len(words):
                raise DataError(f"{where(i)}: {len(y)} tags for {len(words)} words")
    return datasets.Dataset.from_dict(out)


class _Featurizer:
    """Tokenises one batch of checked rows (a picklable callable for ``map``)."""

    def __init__(
        self,
        task_type: Any,
        tokenizer: PreTrainedTokenizerBase,
        pair: bool,
        max_length: int,
    ) -> None:
        self.task_type, self.tokenizer = task_type, tokenizer
        self.pair, self.max_length = pair, max_length

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        labels = batch["target"]
        if isinstance(self.task_type, Tagging):
            return self._tagging(batch["text"], labels)
        pairs = batch["text_pair"] if self.pair else None
        enc = self.tokenizer(batch["text"], pairs, truncation=True, max_length=self.max_length)
        out = {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}
        out["target"] = labels
        out["length"] = [len(ids) for ids in enc["input_ids"]]
        return out

    def _tagging(self, words: list[list[str]], labels: list[Any]) -> dict[str, list[Any]]:
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
