"""What a loader skips or masks, counted per split, so that none of it is silent.

Three kinds of rows carry less than they seem to:

- an **empty text** (null, blank, or an empty word list in a text column): refused with the
  file and line (``data.empty_texts: error``, the default for files); ``drop``: the row is
  dropped; ``keep`` (the default for bundled datasets, whose published numbers were
  measured on them as they are): a blank string is trained on as it is (null texts and
  empty word lists are still refused: there is nothing to keep);
- a row **without the label key** (a JSON record that lacks the label column): unlabelled,
  its loss and metrics masked;
- an **empty label cell** (null, blank or an empty CSV cell): unlabelled, masked.

Per split the counts are ``rows`` (in the file), ``empty_texts`` (found), ``dropped`` (for an
empty text), ``used`` (after ``max_*_examples``), ``labelled``, ``missing_label_key`` and
``empty_label`` (of the rows used). A split whose empty-text and unlabelled rows together
exceed :data:`WARN_SHARE` of its rows is warned about (:func:`count_warnings`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from polytask.data.read import Table
from polytask.errors import DataError
from polytask.tasks.base import is_missing

#: above this share of a split's rows dropped (empty text) or unlabelled, a run warns: a few
#: blank cells are noise of collection, a tenth of the split is a choice that changes what
#: the loss and the metrics measure (docs/errors.md)
WARN_SHARE = 0.10
#: the per-row label state kept through subsets: labelled, no label key, empty label cell
LABELLED, NO_KEY, EMPTY = "labelled", "missing_label_key", "empty_label"


def is_empty_text(value: Any) -> bool:
    """A text cell with nothing to encode: null, a blank string or an empty word list."""
    if isinstance(value, list):
        return all(isinstance(v, str) and not v.strip() for v in value)
    return value is None or (isinstance(value, str) and not value.strip())


def drop_empty_texts(table: Table, columns: Sequence[str], policy: str) -> tuple[Table, int, int]:
    """``table`` after ``policy`` for rows whose text (or text pair) is empty, how many
    there were and how many were dropped. ``"error"`` refuses the first one in one line
    naming the file, the line and the column; ``"drop"`` drops them (row numbers in later
    messages stay the file's); ``"keep"`` leaves them (the task type still refuses a null
    text or an empty word list)."""
    empty = sorted({r for c in columns for r, v in enumerate(table.columns[c]) if is_empty_text(v)})
    if not empty or policy == "keep":
        return table, len(empty), 0
    if policy != "drop":
        row = empty[0]
        column = next(c for c in columns if is_empty_text(table.columns[c][row]))
        raise DataError(
            f"{table.where(column)(row)}: text is empty ({len(empty)} such row(s) in the "
            "file); fill it, or set data.empty_texts: drop (skip such rows) or keep (train "
            "on blank strings as they are); both are counted in the run's output"
        )
    if len(empty) == len(table):
        raise DataError(f"{table.path}: every row has an empty text; nothing is left to read")
    gone = set(empty)
    keep = [r for r in range(len(table)) if r not in gone]
    numbers = [table.lines[r] if table.lines is not None else r + 1 for r in keep]
    unit = table.unit or ("line" if table.lines is not None else "row")
    renumber = {old: new for new, old in enumerate(keep)}
    absent = {c: [renumber[r] for r in rows if r in renumber] for c, rows in table.absent.items()}
    columns_kept = {c: [v[r] for r in keep] for c, v in table.columns.items()}
    out = replace(table, columns=columns_kept, lines=numbers, unit=unit, absent=absent)
    return out, len(empty), len(empty)


def label_states(table: Table, column: str, labels: Sequence[Any]) -> list[str]:
    """Each row's label state from its label (raw, or encoded: ``None`` is masked):
    :data:`LABELLED`, :data:`NO_KEY` (its record lacks the column) or :data:`EMPTY` (null,
    blank or an empty list)."""
    absent = set(table.absent.get(column, ()))
    return [
        NO_KEY if row in absent else EMPTY if is_missing(value) or value == [] else LABELLED
        for row, value in enumerate(labels)
    ]


def split_counts(rows: int, empty: int, dropped: int, states: Sequence[str]) -> dict[str, int]:
    """One split's counts: rows in the file, empty texts found and rows dropped for one,
    rows used, and of those the labelled ones, those without the label key and those with
    an empty label."""
    seen = Counter(states)
    return {
        "rows": rows,
        "empty_texts": empty,
        "dropped": dropped,
        "used": len(states),
        "labelled": seen[LABELLED],
        NO_KEY: seen[NO_KEY],
        EMPTY: seen[EMPTY],
    }


def flagged(counts: dict[str, int]) -> bool:
    """Whether a split's empty-text and unlabelled rows exceed :data:`WARN_SHARE` of it."""
    lost = counts.get("empty_texts", 0) + counts.get(NO_KEY, 0) + counts.get(EMPTY, 0)
    return lost > WARN_SHARE * max(1, counts.get("rows", 0))


def count_line(task: str, split: str, counts: dict[str, int]) -> str:
    """``task/split: N rows, k empty texts (d dropped), m without the label key, e empty
    labels (masked), u used``."""
    return (
        f"{task}/{split}: {counts.get('rows', 0)} rows, {counts.get('empty_texts', 0)} empty "
        f"texts ({counts.get('dropped', 0)} dropped), {counts.get(NO_KEY, 0)} without the "
        f"label key, {counts.get(EMPTY, 0)} empty labels (masked), {counts.get('used', 0)} used"
    )


def count_warnings(task: str, splits: dict[str, dict[str, int]]) -> list[str]:
    """One line per split above :data:`WARN_SHARE`, saying what was dropped or masked."""
    return [
        f"{count_line(task, split, counts)}: more than {WARN_SHARE:.0%} of the split has an "
        "empty text or no label"
        for split, counts in splits.items()
        if flagged(counts)
    ]
