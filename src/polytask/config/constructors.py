"""The constructors' own checks of a loaded config's methods: the part of validation that needs
torch (the live classes), run after :func:`polytask.config.load_config` and before anything is
built or written.

:func:`polytask.config.load_config` checks names, types, defaults and the one rule from the
registry manifest without importing torch; a constructor check that depends on the run (a
``static`` weighting's one weight per task) or is written in code runs here, and again when
training builds the methods, always as one :class:`ConfigError` line.
"""

from __future__ import annotations

from polytask.config.run import RunConfig
from polytask.errors import ConfigError


def check_constructors(config: RunConfig, source: str = "config") -> None:
    """Build the weighting and the aggregator for the trained tasks, and the sampler, as
    training will (their ``__init__`` checks); a one-line :class:`ConfigError` per problem."""
    from polytask.aggregation import AGGREGATORS
    from polytask.registry import build
    from polytask.samplers import check_sampler
    from polytask.weighting import WEIGHTINGS

    trained = [t for t in config.tasks if not t.held_out]  # as training builds them
    n_tasks = len(trained)
    kinds = ["regression" if t.type == "regression" else "classification" for t in trained]
    lines = []
    for section, registry in (("weighting", WEIGHTINGS), ("aggregator", AGGREGATORS)):
        method = getattr(config, section)
        kwargs = dict(method.kwargs)
        if "kinds" in _arguments(registry.get(method.name)) and "kinds" not in kwargs:
            kwargs["kinds"] = kinds  # filled from the task types, as build_objective does
        try:
            build(registry, method.name, kwargs, n_tasks, section)
        except ConfigError as exc:
            lines += [f"{source}: {line}" for line in exc.lines]
    if config.sampler.name is not None:
        try:
            check_sampler(config.sampler.name, config.sampler.kwargs)
        except ConfigError as exc:
            lines += [f"{source}: sampler: {line}" for line in exc.lines]
    if lines:
        raise ConfigError(*lines)


def _arguments(cls: type) -> list[str]:
    import inspect

    return list(inspect.signature(cls).parameters)
