"""User-facing errors: one clear line naming what is wrong and where."""

from __future__ import annotations

import json


class PolytaskError(Exception):
    """An error caused by the user's input (config, data, arguments, run directory).

    The CLI prints ``str(error)`` on one line and exits with code 2, without a traceback.
    """


class ConfigError(PolytaskError):
    """The configuration is invalid (unknown key, wrong type, failed cross-field check).

    ``ConfigError(line, ...)``: one line per problem, in file order; the CLI prints each as
    its own ``error:`` line. ``str()`` joins them with newlines.
    """

    def __init__(self, *lines: str) -> None:
        super().__init__(*lines)

    @property
    def lines(self) -> list[str]:
        return [str(line) for line in self.args]

    def __str__(self) -> str:
        return "\n".join(self.lines)


class DataError(PolytaskError):
    """A data file is missing or malformed (names the file, row and column)."""


class RunDirError(PolytaskError):
    """A run directory is missing, incomplete or corrupt."""


class UnknownTaskError(PolytaskError):
    """A prediction asked for a task the model does not serve (the server answers 404)."""


class InputError(PolytaskError):
    """A prediction input has the wrong form or size (names it: ``inputs[3]: ...``)."""


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (transformers' messages run to several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def json_problem(exc: json.JSONDecodeError, line: int | None = None) -> str:
    """Where and why text is not JSON, whole: ``line 3, column 12: not valid JSON
    (unterminated string starting here)``. ``line``: the file's line when ``exc`` came from
    parsing that one line (JSON lines); else the line within the parsed text.

    >>> try:
    ...     json.loads('{"text": "a great film')
    ... except json.JSONDecodeError as exc:
    ...     print(json_problem(exc, 7))
    line 7, column 10: not valid JSON (unterminated string starting here)
    """
    reason = exc.msg[:1].lower() + exc.msg[1:]
    if reason.endswith(" at"):  # "Unterminated string starting at", "Invalid ... at"
        reason = reason[: -len(" at")] + " here"
    return f"line {line or exc.lineno}, column {exc.colno}: not valid JSON ({reason})"
