"""One tiny registry used for every pluggable part (architectures, samplers, task types, ...),
and the binding of a config section ``{name: ..., **hyperparameters}`` to a registered
constructor.

The YAML binds to the constructor signature (STYLE 4): keys are the constructor's arguments
(except ``n_tasks``, which polytask supplies), typed by its annotations; an unknown key fails
with a "did you mean", a bad value with the key's name; every problem of a section is listed.
The config binds against the committed manifest of these signatures
(:mod:`polytask.config.manifest`, no torch); :func:`build` binds against the live class and
runs the constructor's own checks.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import ConfigDict, ValidationError, create_model

from polytask.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, choices: list[str]) -> str:
    """``unknown sampler 'x' (did you mean 'y'?); choose one of: ...``."""
    return (
        f"unknown {kind} '{name}'{did_you_mean(name, choices)}; choose one of: {', '.join(choices)}"
    )


class Registry(Generic[T]):
    """Maps names to objects (usually classes).

    >>> samplers: Registry[type] = Registry("sampler")
    >>> @samplers.register("uniform")
    ... class Uniform: ...
    >>> samplers.get("uniform") is Uniform
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(unknown_name(self.kind, name, self.names())) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]


SUPPLIED = ("self", "n_tasks")

#: ``{argument: (annotation, default)}`` of a constructor (``...``: no default): what a config
#: section binds to
Fields = dict[str, tuple[Any, Any]]


class Problem(NamedTuple):
    """One problem of a config section: where below the section, and what.

    ``unknown``: ``loc`` ends with an unknown key, reported at its parent (``train: unknown
    key 'x'``) but kept in the location so that problems sort in file order."""

    loc: tuple[str | int, ...]
    msg: str
    unknown: bool = False

    @property
    def at(self) -> tuple[str | int, ...]:
        """The location the message is reported at."""
        return self.loc[:-1] if self.unknown else self.loc


def signature_fields(cls: Any, supplied: tuple[str, ...] = SUPPLIED) -> Fields:
    """The configurable arguments of ``cls.__init__``, typed by its annotations.

    ``supplied`` names the arguments polytask fills itself (not configurable)."""
    signature = inspect.signature(cls.__init__)
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    fields: Fields = {}
    for arg, param in signature.parameters.items():
        if arg in supplied or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[arg] = (hints.get(arg, Any), default)
    return fields


def check_kwargs(
    fields: Fields, name: str, kwargs: dict[str, Any]
) -> tuple[dict[str, Any], list[Problem]]:
    """Validate ``kwargs`` against ``fields`` (pydantic, by type): the typed values (defaults
    filled) and every problem, unknown keys (with a "did you mean") in the order given."""
    problems: list[Problem] = []
    choices = sorted(fields)
    for key in kwargs:
        if key not in fields:
            hint = did_you_mean(str(key), choices)
            takes = ", ".join(choices) or "none"
            msg = f"'{name}' has no hyperparameter '{key}'{hint}; it takes: {takes}"
            problems.append(Problem((key,), msg, unknown=True))
    known = {k: _tuple_from_list(fields[k][0], v) for k, v in kwargs.items() if k in fields}
    for key, value in list(known.items()):  # pydantic takes True for Literal[0, 1, 2]'s 1
        if isinstance(value, bool) and not _takes(fields[key][0], bool):
            problems.append(Problem((key,), "Input should not be a boolean"))
            del known[key]
    definitions: dict[str, Any] = dict(fields)
    strict = ConfigDict(extra="forbid", strict=True)  # by type: "0.1", true, 2.0 for an int fail
    model = create_model(f"{name}Args", __config__=strict, **definitions)
    try:
        values = model.model_validate(known)
    except ValidationError as err:
        problems += [Problem(tuple(e["loc"]), e["msg"]) for e in err.errors()]
        problems.sort(key=lambda p: _order(kwargs, p.loc))
        return {}, problems
    return {k: getattr(values, k) for k in fields}, problems


def _tuple_from_list(annotation: Any, value: Any) -> Any:
    """YAML has lists, not tuples: a list for a tuple-typed argument (FAMO's ``betas``) is
    that tuple (its items are still checked by type)."""
    if isinstance(value, list) and _takes_tuple(annotation):
        return tuple(value)
    return value


def _takes_tuple(annotation: Any) -> bool:
    if typing.get_origin(annotation) is tuple:
        return True
    return any(_takes_tuple(a) for a in typing.get_args(annotation))


def _takes(annotation: Any, kind: type) -> bool:
    """Whether ``annotation`` admits values of ``kind`` (``Any``, the type, or a union with it)."""
    if annotation is Any or annotation is kind:
        return True
    return any(_takes(a, kind) for a in typing.get_args(annotation) if not isinstance(a, int))


def _order(kwargs: dict[str, Any], loc: tuple[str | int, ...]) -> int:
    keys = list(kwargs)
    return keys.index(loc[0]) if loc and loc[0] in keys else len(keys)


def problem_lines(where: str, problems: list[Problem]) -> list[str]:
    """``where.loc: message``, one line per problem."""
    return [".".join(map(str, (where, *p.at))) + f": {p.msg}" for p in problems]


def bind(
    registry: Registry[Any],
    name: str,
    kwargs: dict[str, Any],
    where: str,
    supplied: tuple[str, ...] = SUPPLIED,
) -> dict[str, Any]:
    """Validate ``kwargs`` against the constructor of ``registry.get(name)``; typed values back.

    ``supplied`` names the constructor arguments polytask fills itself (not configurable).
    Every problem is one line of the :class:`ConfigError`."""
    values, problems = check_kwargs(signature_fields(registry.get(name), supplied), name, kwargs)
    if problems:
        raise ConfigError(*problem_lines(where, problems))
    return values


def build(
    registry: Registry[Any], name: str, kwargs: dict[str, Any], n_tasks: int, where: str
) -> Any:
    """Construct a registered method for ``n_tasks`` tasks; constructor errors name ``where``."""
    bound = bind(registry, name, kwargs, where)
    try:
        module = registry.get(name)(n_tasks, **bound)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"{where}: {name}: {exc}") from None
    return module
