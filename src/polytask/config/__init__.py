"""The run config: the only code that knows the config classes.

``run`` (:class:`RunConfig`, :func:`load_config`), ``sections`` (encoder, architecture, method
and train sections), ``tasks`` (one task's section), ``sampler`` (the sampler section),
``overrides`` (``key=value`` overrides from the command line).
"""

from polytask.config.run import (
    ArchitectureConfig,
    EncoderConfig,
    MethodConfig,
    RunConfig,
    TrainConfig,
    config_from_dict,
    dump_config,
    load_config,
)
from polytask.config.tasks import TaskConfig

__all__ = [
    "ArchitectureConfig",
    "EncoderConfig",
    "MethodConfig",
    "RunConfig",
    "TaskConfig",
    "TrainConfig",
    "config_from_dict",
    "dump_config",
    "load_config",
]
