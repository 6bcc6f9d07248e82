"""A config's validation errors as one line each, in file order, keys named as a user names
them (``tasks.ner.weight``), with what was given for a wrong type."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from polytask.strict import UNKNOWN_KEY


def format_error(err: ValidationError, source: str, data: Any) -> list[str]:
    """Every error of the config, one line each with its key, in file order:
    ``FILE: a.b: msg``. A list item of ``tasks`` is named by its task's name (as overrides
    name it), a wrong type says what it got, and a union's alternatives are one line."""
    lines: dict[str, tuple[list[str], list[str]]] = {}
    for error in sorted(err.errors(), key=lambda e: _position(data, e["loc"])):
        loc = error["loc"][:-1] if error["type"] == UNKNOWN_KEY else error["loc"]
        where, value, found = _where(data, loc)
        msg = error["msg"].removeprefix("Value error, ")
        messages, got = lines.setdefault(where, ([], []))
        if messages and msg.startswith("Input should be "):  # another alternative of a union
            msg = msg.removeprefix("Input should be ")
        messages.append(msg)
        if (
            found
            and not got
            and error["type"] != UNKNOWN_KEY
            and not isinstance(value, dict | list)
        ):
            got.append(f", got {json.dumps(value, default=str)}")
    return [
        (f"{source}: {where}: " if where else f"{source}: ") + " or ".join(messages) + "".join(got)
        for where, (messages, got) in lines.items()
    ]


def _where(data: Any, loc: tuple[int | str, ...]) -> tuple[str, Any, bool]:
    """``loc`` as the user names it (``tasks.ner.weight``), cut where the file's data ends
    (pydantic adds a union member's tag after the value's key), the value there, and
    whether the value was found in the file."""
    parts: list[str] = []
    found = True
    for part in loc:
        if isinstance(data, dict) and part in data:
            parts.append(str(part))
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            item = data[part]
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(name if isinstance(name, str) and name and "." not in name else str(part))
            data = item
        elif isinstance(data, dict | list) or not parts:
            parts.append(str(part))
            found = False
            data = None
        else:
            break  # a union tag after a scalar value
    return ".".join(parts), data, found


def _position(data: Any, loc: tuple[int | str, ...]) -> tuple[int, ...]:
    """Where ``loc`` is in the file: the index of each key among its mapping's keys (YAML keeps
    file order) or of each list item; a key the file lacks goes after its siblings."""
    place: list[int] = []
    for part in loc:
        if isinstance(data, dict):
            keys = list(data)
            place.append(keys.index(part) if part in keys else len(keys))
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            place.append(part)
            data = data[part]
        else:
            break
    return tuple(place)
