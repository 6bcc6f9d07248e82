"""The ``sampler:`` section of a run config: a sampler bound to its constructor, and the
rule that every task in every step names no sampler."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

import polytask.config.manifest as manifest
from polytask.config.manifest import SAMPLER_SUPPLIED
from polytask.config.sections import bind_section
from polytask.registry import Problem
from polytask.strict import section_errors

__all__ = ["SAMPLER_SUPPLIED", "SamplerConfig"]


class SamplerConfig(BaseModel):
    """Which task(s) each step trains on: ``{name: temperature, alpha: 0.5, tasks_per_step: 1}``.

    The keys besides ``name`` and ``tasks_per_step`` are the sampler's own constructor
    arguments (``polytask ls`` lists samplers), checked against its signature at load (its
    own checks run when it is built). With every task in every step (``tasks_per_step:
    all``, or the number of trained tasks) there is nothing to sample: ``name`` resolves to
    null, and naming a sampler or its arguments there is refused (they would change nothing).
    """

    model_config = ConfigDict(extra="allow", strict=True)  # by type, never coerced

    name: str | None = "temperature"
    tasks_per_step: int | Literal["all"] = 1

    @property
    def kwargs(self) -> dict[str, Any]:
        """The sampler's own arguments, validated and typed by its signature ({} for null)."""
        return {} if self.name is None else bind_section(self, "samplers", self.name)

    @model_validator(mode="after")
    def _check_name(self) -> SamplerConfig:
        problems = []
        k = self.tasks_per_step
        if isinstance(k, bool) or (isinstance(k, int) and k < 1):
            problems.append(Problem(("tasks_per_step",), "must be >= 1 or 'all'"))
        if self.name is not None:
            problems += manifest.bind("samplers", self.name, dict(self.model_extra or {}))[1]
        if problems:
            raise section_errors(type(self).__name__, problems)
        return self

    def resolve(self, n_trained: int, what: str = "trained tasks") -> int:
        """The tasks per step as a number; with all of them, refuse sampler settings (they
        would do nothing) and resolve ``name`` to null. Returns ``k``."""
        k = n_trained if self.tasks_per_step == "all" else int(self.tasks_per_step)
        if k > n_trained:
            raise ValueError(f"sampler.tasks_per_step={k} exceeds the {n_trained} {what}")
        if k < n_trained:
            if self.name is None:
                raise ValueError(
                    f"sampler.name is null, but sampler.tasks_per_step is {k} of the {n_trained} "
                    f"{what}: name a sampler (polytask ls), or set tasks_per_step: all"
                )
            return k
        named = "name" in self.model_fields_set and self.name is not None
        given = [
            *(["sampler.name"] if named else []),
            *(f"sampler.{a}" for a in self.model_extra or {}),
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)}: no effect with every task in every step (sampler."
                f"tasks_per_step: {self.tasks_per_step}, {n_trained} {what}): remove "
                f"{'it' if len(given) == 1 else 'them'}"
                + (f", or set tasks_per_step below {n_trained}" if n_trained > 1 else "")
            )
        self.name = None
        return k
