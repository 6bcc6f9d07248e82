"""The run config's own sections: encoder, architecture, the two methods, training.

Split from :mod:`polytask.config.run` (which re-exports these names), as the task and sampler
sections are in :mod:`polytask.config.tasks` and :mod:`polytask.config.sampler`. The
architecture and method sections bind their extra keys to a registered constructor's
signature, as the registry manifest (:mod:`polytask.config.manifest`) records it.
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from polytask.config.manifest import ARCHITECTURE_SUPPLIED, bind, listing
from polytask.strict import StrictModel, section_errors

__all__ = [
    "ARCHITECTURE_SUPPLIED",
    "AggregatorConfig",
    "ArchitectureConfig",
    "EncoderConfig",
    "MethodConfig",
    "TrainConfig",
    "WeightingConfig",
    "bind_section",
]


class EncoderConfig(StrictModel):
    """The shared pretrained encoder: a local path, a hub name (when online), or ``bundled:``."""

    name: str = "bundled:all-minilm-l6-v2"
    pooling: Literal["mean", "cls"] = "mean"
    max_length: int = Field(default=128, ge=8, le=8192)


def bind_section(model: BaseModel, key: str, name: str) -> dict[str, Any]:
    """A registered section's own keys (``model_extra``), typed by the manifest's signature
    of ``name`` in registry ``key``; every problem of the section raised at once."""
    values, problems = bind(key, name, dict(model.model_extra or {}))
    if problems:
        raise section_errors(type(model).__name__, problems)
    return values


class ArchitectureConfig(BaseModel):
    """How tasks share parameters: ``{name: soft, penalty: 0.01}``.

    ``hard`` (default): one encoder, one head per task. ``head_hidden``/``head_dropout``
    shape every architecture's heads; the other keys are the architecture's own
    constructor arguments (``polytask ls`` lists architectures), checked against its
    signature at load.
    """

    model_config = ConfigDict(extra="allow", strict=True)  # by type, never coerced

    name: str = "hard"
    head_hidden: int | None = Field(default=None, gt=0)
    head_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The architecture's own arguments, validated and typed by its signature."""
        return bind_section(self, "architectures", self.name)

    @property
    def trains_shared(self) -> bool:
        """Whether the architecture, with these arguments, trains shared parameters."""
        return listing("architectures").get(self.name).trains_shared(self.kwargs)

    @model_validator(mode="after")
    def _check_name(self) -> ArchitectureConfig:
        self.kwargs  # noqa: B018 - validates the name and the arguments
        return self


class MethodConfig(BaseModel):
    """A registered method and its hyperparameters: ``{name: pcgrad, seed: 3}``.

    The other keys are the method's constructor arguments (``polytask ls`` lists methods,
    ``docs/methods.md`` their hyperparameters); they are checked against the signature at
    load (:class:`WeightingConfig`, :class:`AggregatorConfig`), the constructor's own checks
    when it is built.
    """

    model_config = ConfigDict(extra="allow", strict=True)  # by type, never coerced
    #: the manifest registry the name belongs to (None: not checked here)
    registry: ClassVar[str | None] = None

    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_name(self) -> MethodConfig:
        if self.registry is not None:
            bind_section(self, self.registry, self.name)
        return self


class WeightingConfig(MethodConfig):
    """The ``weighting:`` section: a loss weighting and its hyperparameters."""

    registry: ClassVar[str | None] = "weightings"


class AggregatorConfig(MethodConfig):
    """The ``aggregator:`` section: a gradient aggregator and its hyperparameters.

    ``resolve_every``: solve the aggregator's coefficients on one full step in N and reuse them
    on the steps between (:mod:`polytask.objective.resolve`); 1 (default) solves every step.
    Refused at load with a Gramian-free aggregator and with a weighting that needs gradient
    norms (:func:`polytask.config.rule.refusal`).
    """

    registry: ClassVar[str | None] = "aggregators"

    resolve_every: int = Field(default=1, ge=1)


#: each ``train.report_to`` tracker: the module it imports and how to install it
TRACKERS = {
    "tensorboard": ("tensorboard", "pip install 'polytask[tensorboard]'"),
    "mlflow": ("mlflow", "pip install 'polytask[mlflow]'"),
    "wandb": ("wandb", "pip install 'polytask[wandb]'"),
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found without importing it: no cost at load)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None
        return False


class TrainConfig(StrictModel):
    """Optimisation, evaluation and early stopping.

    ``batch_size`` is each task's global micro-batch: under ``accelerate launch`` with N
    processes every rank trains on its slice (about ``batch_size / N`` rows), so a run's
    trajectory does not depend on N (``docs/distributed.md``). ``max_bad_steps``: stop after
    this many consecutive steps with a non-finite loss (each is skipped: no update).
    ``single_input``: how the per-task gradients of tasks reading the same rows
    (``tasks.N.inputs``) are computed: ``exact`` (default; one activation-gradient pass per
    task) or ``representation`` (MGDA-UB: the Gramian at the encoder's output, one backward).
    ``report_to``: experiment trackers that receive what ``metrics.jsonl`` holds, through
    Accelerate's trackers, under ``RUN/tracking/`` (``docs/tracking.md``).
    """

    batch_size: int = Field(default=32, gt=0)
    eval_batch_size: int = Field(default=128, gt=0)
    max_steps: int = Field(default=1000, gt=0)
    lr: float = Field(default=5e-5, gt=0.0)
    head_lr: float | None = Field(default=None, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_ratio: float = Field(default=0.06, ge=0.0, lt=1.0)
    max_grad_norm: float | None = Field(default=1.0, gt=0.0)
    eval_every: int = Field(default=200, gt=0)
    checkpoint_every: int | None = Field(default=None, gt=0)
    monitor_every: int | None = Field(default=20, gt=0)  # gradient cosines, every N steps
    patience: int | None = Field(default=5, gt=0)
    primary_task: str | None = None
    bucket_batches: int = Field(default=50, ge=1)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    max_bad_steps: int | None = Field(default=5, gt=0)
    single_input: Literal["exact", "representation"] | None = None
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)

    @field_validator("report_to")
    @classmethod
    def _trackers_installed(cls, value: list[str]) -> list[str]:
        """Each tracker once, and installed: refused here, not at the first logged step."""
        repeated = sorted({t for t in value if value.count(t) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} repeated: name each tracker once")
        for tracker in value:
            module, hint = TRACKERS[tracker]
            if not installed(module):
                raise ValueError(f"'{tracker}' needs the {module} package: {hint}")
        return value

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        """YAML reads a bare ``no`` (``mixed_precision: no``, ``train.mixed_precision=no``)
        as false: that means "no" here."""
        return "no" if value is False else value
