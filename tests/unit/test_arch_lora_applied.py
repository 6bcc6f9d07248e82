"""Configured = applied for ``lora``: every weighting and every aggregator in each sampler
mode (1, 2 or all 3 tasks per step) on per-task LoRA adapters plus a shared adapter is
refused at load or trains through the loop's own step with the update of the hand reference of
:mod:`tests.unit.test_applied` (one ``autograd.grad`` per task; the Gramian of the shared
adapter's gradients). Without the shared adapter (frozen encoder) nothing shared trains, and
only the methods that need no per-task gradients load."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from polytask.aggregation import AGGREGATORS
from polytask.config.run import config_from_dict
from polytask.errors import ConfigError
from polytask.train import Setup, build
from polytask.weighting import WEIGHTINGS
from tests.unit.test_applied import MODES, assert_applied, raw_config
from tests.unit.test_applied import files as files  # the module's task files fixture

pytestmark = pytest.mark.usefixtures("one_thread")
SHARED = {"name": "lora", "r": 2, "shared_adapter": True, "head_dropout": 0.0}
ALONE = {"name": "lora", "r": 2, "head_dropout": 0.0}


def config(encoder: Path, files: dict[str, Path], arch: dict[str, Any], *cell: str) -> Any:
    raw = raw_config(encoder, files, "shared", *cell)
    return config_from_dict({**raw, "architecture": arch})


@pytest.fixture(scope="module")
def lora(tiny_encoder: Path, files: dict[str, Path]) -> tuple[Setup, dict]:
    """The built model, every adapter moved off its init (B = 0 would zero A's gradients)."""
    setup = build(config(tiny_encoder, files, SHARED, "all", "equal", "sum"))
    setup.model.eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for params in setup.model.adapters.values():
            for _, p in params:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return setup, copy.deepcopy(setup.model.state_dict())


# every weighting (with the plain sum) and every aggregator (with equal weights) in every
# mode: the pairs' joint rule is test_applied's over all cells; here what is checked is that
# each method reaches the adapters (the full product took 580 s of one loaded thread)
CELLS = sorted(
    {(m, w, "sum") for m in MODES for w in WEIGHTINGS.names()}
    | {(m, "equal", a) for m in MODES for a in AGGREGATORS.names()}
)


@pytest.mark.parametrize(("mode", "weighting", "aggregator"), CELLS)
def test_every_method_is_applied_or_refused(
    lora: tuple[Setup, dict],
    tiny_encoder: Path,
    files: dict[str, Path],
    mode: str,
    weighting: str,
    aggregator: str,
) -> None:
    try:
        configured = config(tiny_encoder, files, SHARED, mode, weighting, aggregator)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and f"aggregator '{aggregator}'" in message, message
        assert mode != "all", f"every pair applies with a shared adapter: {message}"
        return
    assert_applied(*lora, configured, mode, weighting, aggregator)


def test_without_a_shared_adapter_only_gradient_free_methods_load(
    tiny_encoder: Path, files: dict[str, Path]
) -> None:
    loaded = set()
    for w in WEIGHTINGS.names():
        for a in AGGREGATORS.names():
            try:
                config(tiny_encoder, files, ALONE, "all", w, a)
            except ConfigError as exc:
                assert "'lora': it trains no shared parameters" in str(exc), str(exc)
                continue
            loaded.add((w, a))
    free = {n for n in AGGREGATORS.names() if not AGGREGATORS.get(n).needs_shared_gradients}
    plain = {n for n in WEIGHTINGS.names() if not WEIGHTINGS.get(n).needs_grad_norms}
    assert loaded == {(w, a) for w in plain for a in free}
    assert ("equal", "sum") in loaded and ("equal", "pcgrad") not in loaded
