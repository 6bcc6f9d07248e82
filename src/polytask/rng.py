"""A private, checkpointed random generator for methods that draw random numbers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class SeededState(nn.Module):
    """Mixin for methods that draw random numbers: a private, checkpointed generator.

    The generator's state lives in the ``rng_state`` buffer (a plain uint8 tensor), so
    ``state_dict()`` carries it and safetensors can store it; the global torch RNG is never
    touched. Call :meth:`_init_rng` in ``__init__`` and draw inside ``with self._rng() as g``.
    """

    rng_state: Tensor

    def _init_rng(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.register_buffer("rng_state", torch.Generator().manual_seed(seed).get_state())

    def extra_repr(self) -> str:
        # the method's own repr first (n_tasks and its other hyperparameters), then the seed
        base: str = super().extra_repr()
        return f"{base}, seed={self.seed}" if base else f"seed={self.seed}"

    @contextmanager
    def _rng(self) -> Iterator[torch.Generator]:
        generator = torch.Generator()
        generator.set_state(self.rng_state.detach().cpu())
        yield generator
        self.rng_state.copy_(generator.get_state())
