"""Bind a config section ``{name: ..., **hyperparameters}`` to a registered method's constructor.

The YAML binds to the constructor signature (STYLE 4): keys are the constructor's arguments
(except ``n_tasks``, which polytask supplies), typed by its annotations; an unknown key fails
with a "did you mean", a bad value with the key's name, and the constructor's own checks run
at config load, before anything is trained.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model
from torch import nn

from polytask.errors import ConfigError
from polytask.registry import Registry, did_you_mean

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
) -> nn.Module:
    """Construct a registered method for ``n_tasks`` tasks; constructor errors name ``where``."""
    bound = bind(registry, name, kwargs, where)
    try:
        module: nn.Module = registry.get(name)(n_tasks, **bound)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"{where}: {name}: {exc}") from None
    return module
