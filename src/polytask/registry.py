"""One tiny registry used for every pluggable part (architectures, samplers, task types, ...),
and the binding of a config section ``{name: ..., **hyperparameters}`` to a registered
constructor.

The YAML binds to the constructor signature (STYLE 4): keys are the constructor's arguments
(except ``n_tasks``, which polytask supplies), typed by its annotations; an unknown key fails
with a "did you mean", a bad value with the key's name, and the constructor's own checks run
at config load, before anything is trained.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pydantic import ConfigDict, ValidationError, create_model

from polytask.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


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
            choices = self.names()
            raise ConfigError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, choices)}; "
                f"choose one of: {', '.join(choices)}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]


SUPPLIED = ("self", "n_tasks")


def bind(
    registry: Registry[Any],
    name: str,
    kwargs: dict[str, Any],
    where: str,
    supplied: tuple[str, ...] = SUPPLIED,
) -> dict[str, Any]:
    """Validate ``kwargs`` against the constructor of ``registry.get(name)``; typed values back.

    ``supplied`` names the constructor arguments polytask fills itself (not configurable).
    """
    cls = registry.get(name)
    signature = inspect.signature(cls.__init__)
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    fields: dict[str, Any] = {}
    for arg, param in signature.parameters.items():
        if arg in supplied or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[arg] = (hints.get(arg, Any), default)
    for key in kwargs:
        if key not in fields:
            choices = sorted(fields)
            raise ConfigError(
                f"{where}: '{name}' has no hyperparameter '{key}'{did_you_mean(key, choices)}"
                f"; it takes: {', '.join(choices) or 'none'}"
            )
    model = create_model(f"{cls.__name__}Args", __config__=ConfigDict(extra="forbid"), **fields)
    try:
        values = model.model_validate(kwargs)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}.{loc}: {first['msg']}") from None
    return {k: getattr(values, k) for k in fields}


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
