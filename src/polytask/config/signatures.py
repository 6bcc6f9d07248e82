"""Constructor signatures as plain JSON, and back: what the registry manifest stores.

An annotation becomes a small tree (``"int"``, ``{"union": [...]}``, ``{"list": ...}``,
``{"tuple": [...]}``, ``{"dict": [k, v]}``, ``{"literal": [...]}``, ``{"annotated": ...,
"field": {"gt": 0}}``); a default becomes JSON (a tuple as ``{"tuple": [...]}``). Anything
else is refused when the manifest is written, so what it stores always decodes to the same
validator (:mod:`polytask.config.manifest_build` checks that too).

>>> from typing import Literal
>>> encode_type(int | None)
{'union': ['int', 'None']}
>>> decode_type(encode_type(list[Literal["a", "b"]]))
list[typing.Literal['a', 'b']]
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import Field
from pydantic.fields import FieldInfo

from polytask.registry import Fields

__all__ = ["decode_fields", "decode_type", "encode_default", "encode_fields", "encode_type"]

_SCALARS: dict[str, Any] = {"int": int, "float": float, "bool": bool, "str": str, "Any": Any}
#: the ``Field(...)`` constraints a stored annotation may carry (annotated-types' names)
_CONSTRAINTS = ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length")


def encode_type(annotation: Any) -> Any:
    """A JSON tree for ``annotation``; ``TypeError`` for a kind the manifest cannot store."""
    if annotation is type(None) or annotation is None:
        return "None"
    for name, scalar in _SCALARS.items():
        if annotation is scalar:
            return name
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        infos = [a for a in args[1:] if isinstance(a, FieldInfo)]
        if len(infos) != len(args) - 1 or len(infos) != 1:
            raise TypeError(f"only Annotated[T, Field(...)] is supported, not {annotation}")
        return {"annotated": encode_type(args[0]), "field": _encode_field(infos[0])}
    if origin in (Union, types.UnionType):
        return {"union": [encode_type(a) for a in args]}
    if origin is Literal:
        return {"literal": list(args)}
    if origin is list:
        return {"list": encode_type(args[0])}
    if origin is tuple:
        return {"tuple": [encode_type(a) for a in args]}
    if origin is dict:
        return {"dict": [encode_type(a) for a in args]}
    raise TypeError(f"the registry manifest cannot store the annotation {annotation!r}")


def _encode_field(info: FieldInfo) -> dict[str, Any]:
    constraints: dict[str, Any] = {}
    for item in info.metadata:
        found = [c for c in _CONSTRAINTS if hasattr(item, c)]
        if len(found) != 1:
            raise TypeError(f"the registry manifest cannot store the constraint {item!r}")
        constraints[found[0]] = getattr(item, found[0])
    return constraints


def decode_type(tree: Any) -> Any:
    """The annotation a JSON tree of :func:`encode_type` stands for."""
    if isinstance(tree, str):
        return type(None) if tree == "None" else _SCALARS[tree]
    (kind, value), *_ = tree.items()
    if kind == "annotated":
        return Annotated[decode_type(value), Field(**tree["field"])]
    if kind == "union":
        return Union[tuple(decode_type(a) for a in value)]  # noqa: UP007 - built at run time
    if kind == "literal":
        return Literal[tuple(value)]
    if kind == "list":
        return list[decode_type(value)]  # type: ignore[misc]
    if kind == "tuple":
        return tuple[tuple(decode_type(a) for a in value)]  # type: ignore[misc]
    if kind == "dict":
        key, item = (decode_type(a) for a in value)
        return dict[key, item]  # type: ignore[valid-type]
    raise ValueError(f"unknown type tree {tree!r}")


def encode_default(value: Any) -> Any:
    """A default as JSON (tuples tagged, so that they come back as tuples)."""
    if isinstance(value, tuple):
        return {"tuple": [encode_default(v) for v in value]}
    if isinstance(value, list):
        return [encode_default(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"the registry manifest cannot store the default {value!r}")


def _decode_default(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"tuple"}:
        return tuple(_decode_default(v) for v in value["tuple"])
    if isinstance(value, list):
        return [_decode_default(v) for v in value]
    return value


def encode_fields(fields: Fields) -> dict[str, Any]:
    """``{arg: {"type": tree, "default": json}}`` (no ``default``: the argument is required)."""
    out: dict[str, Any] = {}
    for arg, (annotation, default) in fields.items():
        out[arg] = {"type": encode_type(annotation)}
        if default is not ...:
            out[arg]["default"] = encode_default(default)
    return out


def decode_fields(stored: dict[str, Any]) -> Fields:
    """The :data:`~polytask.registry.Fields` that :func:`encode_fields` stored."""
    return {
        arg: (
            decode_type(spec["type"]),
            _decode_default(spec["default"]) if "default" in spec else ...,
        )
        for arg, spec in stored.items()
    }
