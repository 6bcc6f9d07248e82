"""Read a task's files into columns: CSV/TSV, JSON/JSONL, Parquet and CoNLL, with one-line errors.

Shared by every loader (:mod:`polytask.data.loading` for labelled tables,
:mod:`polytask.data.texts` for language modelling, :mod:`polytask.data.instructions`).
Errors name the file, the row and the column.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from polytask.cache import cache_dir
from polytask.data import bundled, hub
from polytask.data.source import SplitFile, TaskData, TaskSource, content_id
from polytask.errors import DataError, json_problem
from polytask.tasks.base import Where

__all__ = [
    "SplitFile",
    "Table",
    "TaskData",
    "content_id",
    "read_split",
    "read_table",
    "split_paths",
]

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

    path: Path | SplitFile
    columns: dict[str, list[Any]]
    text_cells: bool
    lines: list[int] | None = None
    unit: str = ""  # "line" or "row" (default: "line" with ``lines``); rows dropped keep it
    #: per column, the rows whose record lacks it (JSON): unlabelled, counted apart
    absent: dict[str, list[int]] = field(default_factory=dict)
    #: what the tokenised cache keys on (the files' sizes and times, or a dataset's fingerprint)
    identity: str = ""

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def where(self, column: str) -> Where:
        """``row -> "file, line N, column 'c'"`` (``-1``: the file alone)."""
        unit = self.unit or ("line" if self.lines is not None else "row")

        def at(row: int) -> str:
            if row < 0:
                return str(self.path)
            number = self.lines[row] if self.lines is not None else row + 1
            return f"{self.path}, {unit} {number}, column '{column}'"

        return at


def _read_json(
    path: Path, encoding: str
) -> tuple[dict[str, list[Any]], list[int] | None, dict[str, list[int]]]:
    """JSON lines (or one JSON array) parsed with Python's json: every value keeps its type
    (no column is converted; the task types check what they read). Returns the columns,
    for JSON lines the line of each row, and per column the rows whose record lacks it."""
    text = path.read_text(encoding)
    rows: list[Any]
    lines: list[int] | None = None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, {json_problem(exc)}") from None
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
                raise DataError(f"{path}, {json_problem(exc, number)}") from None
            if not isinstance(rows[-1], dict):
                raise DataError(f"{path}, line {number}: a record must be a JSON object")
            lines.append(number)
    columns: dict[str, list[Any]] = {}
    absent: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        for key in row:
            if key not in columns:  # the rows before it lack it
                columns[key], absent[key] = [None] * i, list(range(i))
        for key, values in columns.items():
            values.append(row.get(key))
            if key not in row:
                absent[key].append(i)
    return columns, lines, absent


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


def read_table(source: SplitFile, columns: tuple[str, str], needed: list[str], split: str) -> Table:
    """The ``needed`` columns of one split file (or saved dataset dir, or a split of a
    ``data.dataset``), cells as written.

    ``columns`` (text, label) names the two columns of a CoNLL file. Refuses a missing file,
    an empty split and a missing column.
    """
    if source.format == "dataset":
        return _dataset_table(source, needed, split)
    path, encoding = source.path, source.encoding
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    fmt = _format_of(path, source.format)
    lines: list[int] | None = None
    absent: dict[str, list[int]] = {}
    try:
        if fmt == "json":
            table, lines, absent = _read_json(path, encoding)
        elif fmt == "csv":
            table = _read_csv(path, encoding)
        else:
            table = hub.cells(read_split(path, fmt, encoding, columns, split), needed)
    except (UnicodeDecodeError, LookupError) as exc:
        raise DataError(f"{path}: cannot decode as {encoding} ({exc}); set data.encoding") from None
    except csv.Error as exc:
        raise DataError(f"{path}: cannot read as csv: {exc}") from None
    out = Table(path, table, text_cells=fmt in ("csv", "conll"), lines=lines, absent=absent)
    return _checked(out, needed, split, content_id(path))


def _dataset_table(source: SplitFile, needed: list[str], split: str) -> Table:
    """A split of ``data.dataset``, keyed for the cache by the folder's files, or for a
    hub name by the fingerprint ``datasets`` gives the split (its revision and files)."""
    assert source.split is not None
    name = str(source.path)
    ds = hub.read_dataset_split(source.task, name, source.subset, source.split, source.field)
    local = source.path.is_dir()
    identity = content_id(source.path) if local else f"{name}:{ds._fingerprint}"
    out = Table(source, hub.cells(ds, needed), text_cells=False)
    return _checked(out, needed, split, f"{identity}|{source.subset}|{source.split}")


def _checked(out: Table, needed: list[str], split: str, identity: str) -> Table:
    """``out`` with only the ``needed`` columns, refused when empty or missing one."""
    path = out.path
    out.identity = identity
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
        cache = str(cache_dir() / "hf")
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


def split_paths(config: TaskSource) -> dict[str, SplitFile]:
    """Where each split of ``config`` is read (bundled files, the task's files, or the
    splits of its ``data.dataset``)."""
    data = config.data
    if data.bundled is not None:
        files = bundled.split_files(data.bundled)
        return {s: SplitFile(p, "json", "utf-8") for s, p in files.items()}
    out: dict[str, SplitFile] = {}
    for split in ("train", "validation", "test"):
        if data.dataset is not None:
            name = getattr(data.splits, split) if data.splits is not None else None
            if name is not None:
                field = f"data.splits.{split}"
                out[split] = SplitFile(
                    Path(data.dataset), "dataset", "utf-8", data.subset, name, config.name, field
                )
            continue
        value = getattr(data, split)
        if value is not None:
            out[split] = SplitFile(Path(value), data.format, data.encoding)
    return out
