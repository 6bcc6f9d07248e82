"""Reading label and text cells: how a cell is named in messages and the checks that several
task types share (word and tag sequences)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from polytask.errors import DataError

Where = Callable[[int], str]  # row index -> "file, row N, column 'c'" for error messages


def describe(value: Any) -> str:
    """A cell's JSON type and (shortened) JSON text, for messages: ``a list ["a", 1]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        kind = "a bool"
    elif isinstance(value, int | float):
        kind = "a number"
    elif isinstance(value, str):
        kind = "a string"
    else:
        kind = "a list" if isinstance(value, list | tuple) else "a dict"
    shown = json.dumps(value, ensure_ascii=False, default=str)
    return f"{kind} {shown if len(shown) <= 40 else shown[:37] + '...'}"


def row_of(where: Where, row: int) -> str:
    """``line 3`` out of ``where(row)`` = ``file, line 3, column 'c'`` (to name a second row)."""
    return where(row)[len(where(-1)) :].strip(", ").split(", column")[0]


def is_missing(value: Any) -> bool:
    """A label cell that carries no label (partial labels): None or an empty string."""
    return value is None or (isinstance(value, str) and value.strip() == "")


def read_sequences(values: Sequence[Any], where: Where, what: str, empty: bool) -> list[Any]:
    """Check a column of word or tag sequences: every non-empty cell is a list of strings,
    or every one a space-separated string (one form per column); ``empty``: a null or blank
    cell is allowed (an unlabelled row). Returns the cells unchanged."""
    first: tuple[int, bool] | None = None  # (row, is a list) of the first cell
    for row, value in enumerate(values):
        if value is None or value == [] or (isinstance(value, str) and not value.strip()):
            if not empty:
                raise DataError(f"{where(row)}: no {what}")
            continue
        if not isinstance(value, str | list) or (
            isinstance(value, list) and not all(isinstance(v, str) for v in value)
        ):
            raise DataError(
                f"{where(row)}: {what} must be a list of strings or a space-separated string, "
                f"got {describe(value)}"
            )
        if first is None:
            first = (row, isinstance(value, list))
        elif first[1] != isinstance(value, list):
            forms = ("a list", "a string") if first[1] else ("a string", "a list")
            raise DataError(
                f"{where(row)}: {what} are {forms[1]} here but {forms[0]} on "
                f"{row_of(where, first[0])}; use one form in the whole column"
            )
    return list(values)


def check_tag_names(values: Sequence[Any], where: Where) -> None:
    """Refuse a listed tag that is empty or holds whitespace (a tag is one word), so that
    ``'B-PER '`` never becomes a second tag beside ``'B-PER'``."""
    for row, value in enumerate(values):
        if isinstance(value, list):
            for tag in value:
                if not tag or tag != "".join(tag.split()):
                    raise DataError(
                        f"{where(row)}: tag {tag!r} is empty or holds whitespace; a tag is one word"
                    )
