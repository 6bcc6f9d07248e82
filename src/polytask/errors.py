"""User-facing errors: one clear line naming what is wrong and where."""

from __future__ import annotations


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
