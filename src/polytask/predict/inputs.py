"""What a prediction input may look like, checked before any tokenizer sees it.

Three forms, fixed by the task type (``TaskType.input_form``): a text (``"a great film"``)
for single-text classification and regression; a pair (``["a text", "its pair"]``) for
sentence-pair tasks; a text (split on whitespace) or a list of words for tagging. ``"*"``
takes texts (every single-text task and every tagging task answers) or pairs (every
sentence-pair task answers), not a mixture.
Errors name the input (``inputs[3]: ...``): the server returns them as 422, the CLI prints
them as one line.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from polytask.errors import InputError
from polytask.tasks.base import InputForm

ALL = "*"  # the task name that asks for every task
Form: TypeAlias = InputForm  # each task type names its own (``TaskType.input_form``)
WHAT: dict[Form, str] = {
    "text": "a text (a JSON string)",
    "pair": "a sentence pair (a list of two strings)",
    "words": "a text or a list of words (strings)",
}


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} item{'s' * (len(value) != 1)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _text(value: Any, where: str) -> int:
    """Check one string (non-blank, valid Unicode); return its length in characters."""
    if not isinstance(value, str):
        raise InputError(f"{where}: expected a string, got {_kind(value)}")
    if not value.strip():
        raise InputError(f"{where}: empty text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # a lone surrogate ("\ud800") parses as JSON but no tokenizer can read it
        raise InputError(f"{where}: not valid Unicode (lone surrogate)") from None
    return len(value)


def _parts(value: Any, form: Form, where: str) -> list[tuple[Any, str]]:
    """The strings an input is made of, each with where it is, or an error for its shape."""
    if form == "text" or (form == "words" and isinstance(value, str)):
        if not isinstance(value, str):
            raise InputError(f"{where}: expected {WHAT[form]}, got {_kind(value)}")
        return [(value, where)]
    if not isinstance(value, list | tuple):
        raise InputError(f"{where}: expected {WHAT[form]}, got {_kind(value)}")
    if form == "pair" and len(value) != 2:
        raise InputError(f"{where}: expected {WHAT[form]}, got {_kind(value)}")
    if form == "words" and not value:
        raise InputError(f"{where}: empty list of words")
    return [(v, f"{where}[{i}]") for i, v in enumerate(value)]


def check_input(value: Any, form: Form, where: str, max_chars: int | None = None) -> None:
    """Raise :class:`InputError` unless ``value`` is a valid input of ``form``.

    >>> check_input(["a text", "its pair"], "pair", "inputs[0]")
    >>> check_input("", "text", "inputs[1]")
    Traceback (most recent call last):
    polytask.errors.InputError: inputs[1]: empty text
    """
    chars = sum(_text(part, at) for part, at in _parts(value, form, where))
    if max_chars is not None and chars > max_chars:
        raise InputError(f"{where}: {chars} characters; the limit is {max_chars}")


def star_form(inputs: list[Any]) -> Form:
    """The form of a ``"*"`` request: all texts, or all pairs."""

    def form(value: Any) -> Form:
        return "pair" if isinstance(value, list | tuple) else "text"

    first = form(inputs[0])
    for i, value in enumerate(inputs):
        if form(value) != first:
            raise InputError(
                f"inputs[{i}]: task '*' takes all texts or all sentence pairs, "
                f"and inputs[0] is {WHAT[first]}"
            )
    return first


def columns(inputs: list[Any], form: Form) -> tuple[list[Any], list[Any] | None]:
    """Checked inputs as the text and pair columns ``TaskType.encode_inputs`` tokenizes
    (words stay as given: the task type splits them).

    >>> columns([["a text", "its pair"]], "pair")
    (['a text'], ['its pair'])
    """
    if form == "pair":
        return [x[0] for x in inputs], [x[1] for x in inputs]
    if form == "text":
        return [str(x) for x in inputs], None
    return list(inputs), None


def check_list(inputs: Any, max_inputs: int | None = None) -> None:
    """Check that a request's ``inputs`` is a non-empty list within the limit."""
    if not isinstance(inputs, list):
        raise InputError(f"inputs: expected a list of inputs, got {_kind(inputs)}")
    if not inputs:
        raise InputError("inputs: empty list; give at least one input")
    if max_inputs is not None and len(inputs) > max_inputs:
        raise InputError(f"inputs: {len(inputs)} inputs; the limit is {max_inputs} per request")


def check_inputs(
    inputs: Any, form: Form, max_inputs: int | None = None, max_chars: int | None = None
) -> None:
    """Check a whole request's ``inputs``: the list, then every input."""
    check_list(inputs, max_inputs)
    for i, value in enumerate(inputs):
        check_input(value, form, f"inputs[{i}]", max_chars)
