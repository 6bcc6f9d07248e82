"""Task samplers: which task(s) each training step draws a micro-batch from.

A sampler owns a seeded ``torch.Generator``; its state (the generator and a round-robin
cursor) is a plain dict of tensors, checkpointed with the run so a resumed run draws the
same sequence of tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Any

import torch
from pydantic import Field

from polytask.errors import ConfigError
from polytask.registry import Registry


class Sampler(ABC):
    """Base: per-step task probabilities, then ``k`` distinct tasks drawn from them."""

    def __init__(self, sizes: list[int], seed: int) -> None:
        if not sizes or min(sizes) <= 0:
            raise ValueError("every task needs at least one training example")
        self.sizes = torch.tensor(sizes, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)

    @abstractmethod
    def probabilities(self, step: int, total_steps: int) -> torch.Tensor:
        """Probability of each task at ``step`` (of ``total_steps``)."""
        ...

    def sample(self, step: int, total_steps: int, k: int) -> list[int]:
        """Indices of the ``k`` distinct tasks trained at ``step``, in task order."""
        n = len(self.sizes)
        if k >= n:
            return list(range(n))
        probs = self.probabilities(step, total_steps)
        picked = torch.multinomial(probs, k, replacement=False, generator=self.generator)
        return sorted(picked.tolist())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sizes={self.sizes.long().tolist()})"


SAMPLERS: Registry[type[Sampler]] = Registry("sampler")


def _power(sizes: torch.Tensor, alpha: float) -> torch.Tensor:
    weights = sizes.pow(alpha)
    return weights / weights.sum()


@SAMPLERS.register("proportional")
class Proportional(Sampler):
    """p_t ∝ n_t: every training example is equally likely to be seen."""

    def probabilities(self, step: int, total_steps: int) -> torch.Tensor:
        return _power(self.sizes, 1.0)


@SAMPLERS.register("temperature")
class Temperature(Sampler):
    """p_t ∝ n_t^α (α < 1 lifts small tasks; α = 0.75 by default). Arivazhagan et al. 2019."""

    def __init__(
        self, sizes: list[int], seed: int, alpha: Annotated[float, Field(gt=0)] = 0.75
    ) -> None:
        super().__init__(sizes, seed)
        if alpha <= 0:
            raise ValueError(f"temperature sampler: alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def probabilities(self, step: int, total_steps: int) -> torch.Tensor:
        return _power(self.sizes, self.alpha)


@SAMPLERS.register("uniform")
class Uniform(Sampler):
    """p_t = 1/T regardless of dataset size."""

    def probabilities(self, step: int, total_steps: int) -> torch.Tensor:
        return torch.full_like(self.sizes, 1.0 / len(self.sizes))


@SAMPLERS.register("annealed")
class Annealed(Sampler):
    """p_t ∝ n_t^α with α moving linearly from ``alpha_start`` to ``alpha_end`` over training.

    Stickland & Murray 2019 ("BERT and PALs"): start near proportional, end near uniform.
    """

    def __init__(
        self,
        sizes: list[int],
        seed: int,
        alpha_start: Annotated[float, Field(ge=0)] = 1.0,
        alpha_end: Annotated[float, Field(ge=0)] = 0.2,
    ) -> None:
        super().__init__(sizes, seed)
        if alpha_start < 0 or alpha_end < 0:
            raise ValueError("annealed sampler: alpha_start and alpha_end must be >= 0")
        self.alpha_start, self.alpha_end = alpha_start, alpha_end

    def alpha(self, step: int, total_steps: int) -> float:
        frac = min(1.0, step / max(1, total_steps - 1))
        return self.alpha_start + (self.alpha_end - self.alpha_start) * frac

    def probabilities(self, step: int, total_steps: int) -> torch.Tensor:
        return _power(self.sizes, self.alpha(step, total_steps))


@SAMPLERS.register("round_robin")
class RoundRobin(Sampler):
    """Tasks in turn, k at a time: exactly balanced update counts."""

    def __init__(self, sizes: list[int], seed: int) -> None:
        super().__init__(sizes, seed)
        self.cursor = 0

    def probabilities(self, step: int, total_steps: int) -> torch.Tensor:
        return torch.full_like(self.sizes, 1.0 / len(self.sizes))

    def sample(self, step: int, total_steps: int, k: int) -> list[int]:
        n = len(self.sizes)
        if k >= n:
            return list(range(n))
        picked = sorted((self.cursor + i) % n for i in range(k))
        self.cursor = (self.cursor + k) % n
        return picked

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), "cursor": torch.tensor(self.cursor)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.cursor = int(state["cursor"])


class EveryTask(Sampler):
    """Every task at every step (``tasks_per_step: all``): nothing is drawn."""

    def probabilities(self, step: int, total_steps: int) -> torch.Tensor:
        return torch.full_like(self.sizes, 1.0 / len(self.sizes))

    def sample(self, step: int, total_steps: int, k: int) -> list[int]:
        return list(range(len(self.sizes)))


def build_sampler(
    name: str | None, sizes: list[int], seed: int, kwargs: dict[str, Any] | None = None
) -> Sampler:
    """Build a registered sampler from plain arguments: its name (None: every task at every
    step) and its own constructor arguments (``kwargs``, as the config binds them)."""
    if name is None:
        return EveryTask(sizes, seed)
    return SAMPLERS.get(name)(sizes, seed, **(kwargs or {}))


def check_sampler(name: str, kwargs: dict[str, Any]) -> None:
    """Run the sampler's own argument checks (at config load): a one-line ConfigError."""
    try:
        build_sampler(name, [1], 0, kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def update_counts(
    sampler: Sampler, steps: int, k: int, total_steps: int | None = None
) -> list[int]:
    """How many updates each task gets over the first ``steps`` steps (a dry run, own RNG)."""
    saved = sampler.state_dict()
    counts = [0] * len(sampler.sizes)
    for step in range(steps):
        for t in sampler.sample(step, total_steps or steps, k):
            counts[t] += 1
    sampler.load_state_dict(saved)
    return counts


def expected_share(sampler: Sampler, step: int, total_steps: int) -> list[float]:
    """Each task's probability at ``step``, rounded for logs."""
    return [round(float(p), 4) for p in sampler.probabilities(step, total_steps)]


__all__ = ["SAMPLERS", "Sampler", "build_sampler", "expected_share", "update_counts"]
