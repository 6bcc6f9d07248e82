"""Read a task's files into columns: CSV/TSV, JSON/JSONL, Parquet and CoNLL, with one-line errors.

Shared by every loader (:mod:`polytask.data.loading` for labelled tables,
:mod:`polytask.data.texts` for language modelling, :mod:`polytask.data.instructions`).
Errors name the file, the row and the column.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from polytask.cache import cache_dir
from polytask.data import bundled
from polytask.data.source import TaskData, TaskSource
from polytask.errors import DataError
from polytask.tasks.base import Where

__all__ = ["Table", "TaskData", "read_split", "read_table", "split_paths"]

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


def split_paths(config: TaskSource) -> dict[str, tuple[Path, str, str]]:
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
