"""Typed, strict run configuration: YAML on disk, ``key=value`` overrides, saved with every run.

Unknown keys fail with a "did you mean"; cross-field checks run at load, before anything is
written; every problem is reported, one line each, in file order. Registered names and
hyperparameters (task types, samplers, architectures, weightings, aggregators) are checked
against the registry manifest (:mod:`polytask.config.manifest`), so a typo is caught here in
a fraction of a second, without importing torch, not an hour into training.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from polytask.config.inputs import check_shared_inputs
from polytask.config.manifest import listing
from polytask.config.messages import format_error
from polytask.config.overrides import load_yaml, parse_overrides, set_path
from polytask.config.rule import matrix_refusal, refusal, two_batch_refusal
from polytask.config.sampler import SAMPLER_SUPPLIED, SamplerConfig
from polytask.config.sections import (
    ARCHITECTURE_SUPPLIED,
    AggregatorConfig,
    ArchitectureConfig,
    EncoderConfig,
    MethodConfig,
    TrainConfig,
    WeightingConfig,
)
from polytask.config.tasks import TaskConfig
from polytask.errors import ConfigError
from polytask.registry import Problem, did_you_mean
from polytask.strict import StrictModel, section_errors

__all__ = [
    "ARCHITECTURE_SUPPLIED",
    "DEMO_CONFIG",
    "PACKAGED_CONFIGS",
    "SAMPLER_SUPPLIED",
    "AggregatorConfig",
    "ArchitectureConfig",
    "EncoderConfig",
    "MethodConfig",
    "RunConfig",
    "SamplerConfig",
    "TaskConfig",
    "TrainConfig",
    "WeightingConfig",
    "config_from_dict",
    "dump_config",
    "load_config",
]

DEMO_CONFIG = "demo"
#: configs shipped in ``polytask/configs/``: a config argument may name one (``instruct``)
PACKAGED_CONFIGS = ("demo", "sentiment_transfer", "instruct", "diversity_single", "diversity_mixed")


class RunConfig(StrictModel):
    """Everything a run needs; saved as ``config.yaml`` in the run directory."""

    seed: int = 13
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    architecture: ArchitectureConfig = Field(default_factory=ArchitectureConfig)
    tasks: list[TaskConfig]
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    weighting: WeightingConfig = Field(default_factory=lambda: WeightingConfig(name="equal"))
    aggregator: AggregatorConfig = Field(default_factory=lambda: AggregatorConfig(name="sum"))
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        if not self.tasks:
            raise ValueError("'tasks' is empty: give at least one task")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; repeated: {', '.join(dupes)}")
        primary = self.train.primary_task
        if primary is not None and primary not in names:
            raise ValueError(
                f"train.primary_task '{primary}' is not a task{did_you_mean(primary, names)}"
            )
        if all(t.auxiliary for t in self.tasks):
            raise ValueError("every task is auxiliary: at least one task must be served")
        trained = [t.name for t in self.tasks if not t.held_out]
        if not trained:
            raise ValueError("every task is held out: at least one task must be trained")
        if primary is not None and (self.task(primary).auxiliary or self.task(primary).held_out):
            raise ValueError(
                f"train.primary_task '{primary}' is auxiliary or held out; "
                "early stopping follows a trained, served task"
            )
        self._check_sources(names)
        shared = check_shared_inputs(self)
        if shared:
            raise section_errors("RunConfig", [Problem((), msg) for msg in shared])
        self._resolve_critical()
        units = len(self.units)
        what = "trained tasks" + (" reading their own rows" if units < len(trained) else "")
        k = self.sampler.resolve(units, what)  # a task reading another's rows rides along
        self._check_methods(len(trained) if k == units else k, len(trained))
        return self

    def _check_sources(self, names: list[str]) -> None:
        for t in self.tasks:
            for source in t.data.from_tasks or []:
                if source not in names:
                    raise ValueError(
                        f"tasks.{t.name}.data.from_tasks: '{source}' is not a task"
                        f"{did_you_mean(source, names)}"
                    )
                if self.task(source).type == "lm":
                    raise ValueError(
                        f"tasks.{t.name}.data.from_tasks: '{source}' is an lm task; "
                        "name tasks that have their own data"
                    )

    def _resolve_critical(self) -> None:
        """``critical`` of every task as a bool (the rule is in :class:`TaskConfig`)."""
        for t in self.tasks:
            if t.auxiliary and t.critical:
                raise ValueError(f"tasks.{t.name}: an auxiliary task cannot be critical")
        chosen = any(t.critical for t in self.tasks)
        for t in self.tasks:
            plain = t.critical is None and not (t.auxiliary or t.held_out)
            t.critical = bool(t.critical) if chosen else plain

    def _check_methods(self, k: int, n_tasks: int) -> None:
        """The one rule of what a step applies (:func:`polytask.config.rule.refusal`, from the
        manifest's capability flags); resolve ``train.monitor_every``. The sections have
        checked the names and hyperparameters; the constructors' own checks run when the
        methods are built (:func:`polytask.config.constructors.check_constructors`)."""
        w, a, arch = self.weighting.name, self.aggregator.name, self.architecture
        shared = arch.trains_shared
        problem = refusal(
            (w, listing("weightings").get(w)),
            (a, listing("aggregators").get(a)),
            k=k,
            n_tasks=n_tasks,
            architecture=(arch.name, shared),
            resolve_every=self.aggregator.resolve_every,
        )
        for rule in (two_batch_refusal, matrix_refusal):
            problem = problem or rule(
                (a, listing("aggregators").get(a)),
                single_input=self.train.single_input,
                resolve_every=getattr(self.aggregator, "resolve_every", 1),
            )
        if problem is not None:
            raise ValueError(problem)
        self._resolve_monitor(k, n_tasks, shared)

    def _resolve_monitor(self, k: int, n_tasks: int, shared: bool) -> None:
        """Gradient cosines need every task in a step and trained shared parameters: the
        default (20) resolves to null where it could never fire; a value set there is refused."""
        why = None
        if k < n_tasks:
            why = f"sampler.tasks_per_step is {k} of {n_tasks}: no step holds every task"
        elif n_tasks < 2:
            why = "one trained task has no pair to compare"
        elif not shared:
            why = f"architecture '{self.architecture.name}' trains no shared parameters"
        if why is None or self.train.monitor_every is None:
            return
        if "monitor_every" in self.train.model_fields_set:
            raise ValueError(
                f"train.monitor_every: gradient cosines can never be measured here ({why}): "
                "remove it or set it to null"
            )
        self.train.monitor_every = None

    @property
    def units(self) -> list[str]:
        """The trained tasks the sampler picks from: those reading their own rows (a task
        with ``inputs: OTHER`` is trained whenever ``OTHER`` is, on its rows)."""
        return [t.name for t in self.tasks if not t.held_out and t.inputs is None]

    @property
    def picks_per_step(self) -> int:
        """How many of :attr:`units` each step picks (``all`` resolved)."""
        k = self.sampler.tasks_per_step
        return len(self.units) if k == "all" else int(k)

    @property
    def tasks_per_step(self) -> int:
        """The tasks each step trains (at least): every trained task when every unit is
        picked, else the picks (each brings the tasks reading its rows)."""
        trained = sum(not t.held_out for t in self.tasks)
        k = self.picks_per_step
        return trained if k == len(self.units) else k

    @property
    def primary(self) -> str:
        """The task whose validation metric drives early stopping (default: the first
        non-auxiliary task)."""
        return self.train.primary_task or next(
            t.name for t in self.tasks if not (t.auxiliary or t.held_out)
        )

    def task(self, name: str) -> TaskConfig:
        for t in self.tasks:
            if t.name == name:
                return t
        raise ConfigError(
            f"unknown task '{name}'{did_you_mean(name, [t.name for t in self.tasks])}"
        )


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for task in data.get("tasks") or []:
        source = task.get("data") if isinstance(task, dict) else None
        if not isinstance(source, dict):
            continue
        for split in ("train", "validation", "test"):
            value = source.get(split)
            if isinstance(value, str) and not Path(value).is_absolute():
                source[split] = str((base / value).resolve())
        name = source.get("dataset")  # a folder beside the config, else a hub name
        if isinstance(name, str) and name and (base / name).is_dir():
            source["dataset"] = str((base / name).resolve())


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (``None``: the bundled demo), apply overrides, validate strictly."""
    name = DEMO_CONFIG if path is None else str(path)
    if name in PACKAGED_CONFIGS and not Path(name).exists():
        text = resources.files("polytask").joinpath(f"configs/{name}.yaml").read_text("utf-8")
        source, base = f"{name}.yaml", Path.cwd()
    else:
        file = Path(name)
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        try:
            text = file.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: cannot read config: {exc}") from None
        source, base = str(file), file.resolve().parent
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise ConfigError(
            f"{source}:{where} is not valid YAML" + (f" ({problem})" if problem else "")
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    data = copy.deepcopy(data)
    _resolve_paths(data, base)
    for key, value in parse_overrides(overrides or []):
        set_path(data, key, value, source)
    return config_from_dict(data, source)


def config_from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a plain dict as a :class:`RunConfig`, raising one-line :class:`ConfigError`."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(*format_error(err, source, data)) from None


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (every default written out)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
