"""Configured = applied, over the whole registry: every weighting × aggregator × sampler mode
(1, 2 or all 3 tasks per step) × architecture family (shared encoder, soft sharing, frozen
encoder) is either refused when the config loads, or trains through the loop's own step
function with the update a hand computation predicts and a visible effect of the method.

The reference is computed apart from :class:`polytask.objective.Objective` and the per-task
gradient engine: one ``torch.autograd.grad`` per task on the same forward, the Gramian of
the shared parameters' gradients, the aggregator's coefficients from it, and the weights from
the method (static and uncertainty: from their formulas, written out here). With SGD at
learning rate 1 and no clipping, a parameter's change is minus its gradient, so the step's
update is compared with the reference parameter by parameter, the learned loss weights
(uncertainty's log σ²) included.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from polytask.aggregation import AGGREGATORS
from polytask.config.run import RunConfig, config_from_dict
from polytask.data.batching import TaskStream, collate
from polytask.errors import ConfigError
from polytask.models import ARCHITECTURES
from polytask.objective import Objective, build_objective
from polytask.train import Setup, build, task_losses, train_step
from polytask.weighting import WEIGHTINGS
from tests.conftest import sentiment_rows, write_jsonl

TASKS = ("a", "b", "c")
#: the arguments a method cannot do without (static's weights), and ones that show its effect
KWARGS: dict[str, dict[str, Any]] = {"static": {"weights": [1.0, 0.1, 2.0]}}
ARCHS: dict[str, dict[str, Any]] = {
    "shared": {"name": "hard", "head_dropout": 0.0},
    "soft": {"name": "soft", "penalty": 0.0, "head_dropout": 0.0},
    "frozen": {"name": "prefix", "prefix_length": 2, "head_dropout": 0.0},
}
MODES: dict[str, int | str] = {"1": 1, "2": 2, "all": "all"}
#: steps per sampler mode: enough for a weight to move after the task's first step, and for
#: DWA's two periods of history
STEPS = {"1": 4, "2": 3, "all": 3}
EPS = float(torch.finfo(torch.float32).eps)
LOG_VARS = -1  # the key of uncertainty's learned log σ² in a reference


def _flipped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    swap = {"pos": "neg", "neg": "pos", "neu": "neu"}
    return [{**r, "label": swap[r["label"]]} for r in rows]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three classification tasks: b learns the opposite of a (conflicting gradients)."""
    root = tmp_path_factory.mktemp("applied")
    rows = {"a": sentiment_rows(48, 1), "b": _flipped(sentiment_rows(48, 2))}
    rows["c"] = sentiment_rows(48, 3)
    return {t: write_jsonl(root / f"{t}.jsonl", r) for t, r in rows.items()}


def raw_config(
    encoder: Path, files: dict[str, Path], arch: str, mode: str, weighting: str, aggregator: str
) -> dict[str, Any]:
    sampler: dict[str, Any] = {"tasks_per_step": MODES[mode]}
    if mode != "all":
        sampler["name"] = "round_robin"
    return {
        "seed": 3,
        "encoder": {"name": str(encoder), "max_length": 16},
        "architecture": ARCHS[arch],
        "tasks": [
            {
                "name": t,
                "type": "classification",
                "data": {"train": str(files[t]), "validation": str(files[t])},
            }
            for t in TASKS
        ],
        "sampler": sampler,
        "weighting": {"name": weighting, **KWARGS.get(weighting, {})},
        "aggregator": {"name": aggregator},
        "train": {"batch_size": 4, "max_steps": 10, "max_grad_norm": None},
    }


@pytest.fixture(scope="module")
def setups(tiny_encoder: Path, files: dict[str, Path]) -> dict[str, tuple[Setup, dict]]:
    """One built model per architecture family (and its initial weights), reused by every
    method: each run starts from the same state."""
    out = {}
    for arch in ARCHS:
        config = config_from_dict(raw_config(tiny_encoder, files, arch, "all", "equal", "sum"))
        setup = build(config)
        setup.model.eval()  # no dropout: the reference forward is the step's forward
        out[arch] = (setup, copy.deepcopy(setup.model.state_dict()))
    return out


CELLS = [
    (arch, mode, w, a)
    for arch in ARCHS
    for mode in MODES
    for w in WEIGHTINGS.names()
    for a in AGGREGATORS.names()
]


def _objective(config: RunConfig) -> Objective:
    return build_objective(
        list(TASKS),
        {t: 1.0 for t in TASKS},
        ["classification"] * len(TASKS),
        (config.weighting.name, config.weighting.kwargs),
        (config.aggregator.name, config.aggregator.kwargs),
    )


def _hand_weights(objective: Objective, losses: torch.Tensor, index: list[int]) -> torch.Tensor:
    """The weights of the present tasks: by formula for static and uncertainty."""
    w = objective.weighting
    name = type(w).__name__
    if name == "Static":
        return torch.tensor(KWARGS["static"]["weights"])[index]
    if name == "Uncertainty":
        return (w.factors * torch.exp(-w.log_vars.detach()))[index]
    if len(index) < len(TASKS):
        return w.subset(losses, index).detach()
    return w(losses).detach()


def reference(
    setup: Setup, objective: Objective, batch: Any
) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """The expected gradient of every trainable parameter (keyed by id), and the expected
    logged weights and coefficients, computed without the objective's backward."""
    model = setup.model
    losses = task_losses(model, batch, setup.specs)
    present = [t for t in TASKS if t in losses]
    index = [TASKS.index(t) for t in present]
    vector = torch.stack([losses[t].detach() for t in present])
    w = _hand_weights(objective, vector, index)
    params = [p for p in model.parameters() if p.requires_grad]
    shared = {id(p) for _, p in model.shared_parameters() if p.requires_grad}
    grads = [
        torch.autograd.grad(w[i] * losses[t], params, retain_graph=True, allow_unused=True)
        for i, t in enumerate(present)
    ]
    agg = copy.deepcopy(objective.aggregator)
    if agg.needs_matrix:  # the [T, P] matrix of the shared parameters, in the engine's order
        expected, c = _matrix_reference(model, params, grads, agg, w * vector)
        _learned_reference(expected, objective, losses, index, present)
        return expected, {"weights": dict(zip(present, w.tolist(), strict=True)), "combine": c}
    if agg.gramian_free:
        c = agg.weights(torch.eye(len(TASKS), dtype=torch.float64))[index]
    else:  # the config admits Gramian methods only when every task is in the step
        G = torch.zeros(len(present), len(present), dtype=torch.float64)
        for k, p in enumerate(params):
            if id(p) in shared:
                flat = torch.stack(
                    [
                        (g[k] if g[k] is not None else torch.zeros_like(p)).double().flatten()
                        for g in grads
                    ]
                )
                G += flat @ flat.T
        loss_arg = vector.double() if agg.needs_losses else None
        c = agg.weights(G, loss_arg, eps=EPS)
    expected: dict[int, torch.Tensor] = {}
    for k, p in enumerate(params):
        total = torch.zeros_like(p)
        for i, g in enumerate(grads):
            if g[k] is not None:
                # shared parameters get Σ c_t g_t; a task's own parameters its own g_t
                # (times the fixed coefficient of a Gramian-free aggregator, as one backward)
                scale = c[i] if (id(p) in shared or agg.gramian_free) else 1.0
                total += float(scale) * g[k]
        expected[id(p)] = total
    _learned_reference(expected, objective, losses, index, present)
    return expected, {"weights": dict(zip(present, w.tolist(), strict=True)), "combine": c}


def _learned_reference(
    expected: dict[int, torch.Tensor],
    objective: Objective,
    losses: dict[str, torch.Tensor],
    index: list[int],
    present: list[str],
) -> None:
    learned = objective.weighting
    if type(learned).__name__ == "Uncertainty":  # d/ds (f e^-s L + s/2), present tasks only
        s = learned.log_vars.detach()
        grad = torch.zeros_like(s)
        for i, t in zip(index, present, strict=True):
            grad[i] = -learned.factors[i] * torch.exp(-s[i]) * losses[t].detach() + 0.5
        expected[LOG_VARS] = grad


def _matrix_reference(
    model: nn.Module,
    params: list[nn.Parameter],
    grads: list[Any],
    agg: Any,
    values: torch.Tensor,
) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
    """A matrix aggregator's expected gradients: its update of the per-task gradients of the
    shared parameters (with the values of the terms ``w_t L_t``), each head its own g_t; and
    its logged weights where they are coefficients (a coordinate-mask share, GradDrop's or
    TrimmedMean's, flips with the float rounding between the engine's gradients and these:
    the update, checked coordinate-wise, does not)."""
    position = {id(p): k for k, p in enumerate(params)}
    shared = [p for _, p in model.shared_parameters() if p.requires_grad]
    rows = []
    for g in grads:
        parts = [g[position[id(p)]] for p in shared]
        flat = [torch.zeros_like(p) if x is None else x for x, p in zip(parts, shared, strict=True)]
        rows.append(torch.cat([x.reshape(-1) for x in flat]))
    update, c = agg.aggregate(torch.stack(rows), values)
    expected: dict[int, torch.Tensor] = {}
    offset = 0
    for p in shared:
        expected[id(p)] = update[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()
    for k, p in enumerate(params):
        if id(p) not in expected:
            expected[id(p)] = sum((g[k] for g in grads if g[k] is not None), torch.zeros_like(p))
    return expected, c if agg.weights_are_coefficients else None


def _step_batch(setup: Setup, streams: dict[str, TaskStream], picked: list[str]) -> Any:
    draws = {n: streams[n].next_draw() for n in picked}
    return collate([(setup.specs[n], d.rows) for n, d in draws.items()], 0)


def _trainable(setup: Setup, objective: Objective) -> list[nn.Parameter]:
    return [p for p in [*setup.model.parameters(), *objective.parameters()] if p.requires_grad]


def run_cell(
    setup: Setup, initial: dict, config: RunConfig, mode: str
) -> tuple[list[dict[str, Any]], Objective]:
    """STEPS steps through ``train_step``, each checked against :func:`reference`."""
    setup.model.load_state_dict(initial)
    objective = _objective(config)
    setup = dataclasses.replace(setup, config=config, objective=objective)
    objective.attach(setup.model)
    params = _trainable(setup, objective)
    free = {id(p) for p in objective.weighting.parameters()} - {
        id(getattr(objective.weighting, "log_vars", None))
    }
    optimizer = torch.optim.SGD(params, lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    streams = {
        t: TaskStream(setup.data[t].splits["train"], 4, 1, i, setup.specs[t])
        for i, t in enumerate(TASKS)
    }
    k = len(TASKS) if MODES[mode] == "all" else int(MODES[mode])
    seen = []
    accelerator = Accelerator(cpu=True)
    for step in range(STEPS[mode]):
        picked = [TASKS[(step + i) % len(TASKS)] for i in range(k)]
        batch = _step_batch(setup, streams, sorted(picked, key=TASKS.index))
        expected, logged = reference(setup, copy.deepcopy(objective), batch)
        if LOG_VARS in expected:  # computed on a copy: key it by the trained tensor
            expected[id(objective.weighting.log_vars)] = expected.pop(LOG_VARS)
        before = {id(p): p.detach().clone() for p in params}
        record = train_step(setup, setup.model, batch, accelerator, optimizer, scheduler)
        top = max(float(g.abs().max()) for g in expected.values())
        for p in params:
            moved = before[id(p)] - p.detach()
            if id(p) in free:  # a learned weighting with no formula here (GradNorm's)
                assert step == 0 or bool(moved.abs().max() > 0), "its learned weights froze"
                continue
            want = expected.get(id(p), torch.zeros_like(p))
            # float32 rounding of ``before - after`` is about eps · |p|
            scale = float(want.abs().max())
            atol = 1e-3 * scale + 8 * EPS * float(before[id(p)].abs().max()) + 1e-6 * top
            assert torch.allclose(moved, want, rtol=1e-3, atol=atol), (
                f"step {step}: update of a {tuple(p.shape)} parameter differs from the "
                f"reference by {float((moved - want).abs().max()):.3g} (scale {scale:.3g})"
            )
        assert set(record.get("weights", {})) == set(picked), record
        for t, v in logged["weights"].items():
            assert record["weights"][t] == pytest.approx(v, rel=1e-4, abs=1e-6), (t, record)
        if "combine" in record and logged["combine"] is not None:
            got = torch.tensor([record["combine"][t] for t in TASKS], dtype=torch.float64)
            assert torch.allclose(got, logged["combine"].cpu(), rtol=1e-3, atol=1e-5), record
        if logged["combine"] is None:  # mask shares: the step's own, for the checks below
            logged["combine"] = torch.tensor([record["combine"][t] for t in TASKS])
        seen.append({**logged, "record": record})
    return seen, objective


def run_two_batch_cell(setup: Setup, initial: dict, config: RunConfig, mode: str) -> list[dict]:
    """A two-batch aggregator (MoDo, SDMGrad): steps through ``train_step`` with the second
    batch drawn after the first; its exact update (cross-Gramian, mean of both batches'
    gradients) is checked against autograd in ``tests/unit/test_two_batch.py``. Here: the
    step applies (every trainable parameter moves, finite) and logs its weights."""
    from polytask.training.step import Second

    setup.model.load_state_dict(initial)
    objective = _objective(config)
    setup = dataclasses.replace(setup, config=config, objective=objective)
    objective.attach(setup.model)
    params = _trainable(setup, objective)
    optimizer = torch.optim.SGD(params, lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    streams = {
        t: TaskStream(setup.data[t].splits["train"], 4, 1, i, setup.specs[t])
        for i, t in enumerate(TASKS)
    }
    seen, accelerator = [], Accelerator(cpu=True)
    for _ in range(STEPS[mode]):
        batch, again = (
            _step_batch(setup, streams, list(TASKS)),
            _step_batch(setup, streams, [*TASKS]),
        )
        before = [p.detach().clone() for p in params]
        second = Second(again, {})
        parts = (accelerator, optimizer, scheduler, False, None, second)
        record = train_step(setup, setup.model, batch, *parts)
        assert record["grad_method"].endswith("two batches"), record
        assert all(torch.isfinite(p).all() for p in params)
        moved = sum(bool((b != p.detach()).any()) for b, p in zip(before, params, strict=True))
        assert moved >= len(params) - 2, moved  # all but the pooler's (unused) two
        coefficients = torch.tensor([record["combine"][t] for t in TASKS], dtype=torch.float64)
        seen.append({"weights": record["weights"], "combine": coefficients, "record": record})
    return seen


def _differs(values: list[float], baseline: float) -> bool:
    return any(abs(v - baseline) > 1e-4 * max(1.0, abs(baseline)) for v in values)


@pytest.mark.parametrize(("arch", "mode", "weighting", "aggregator"), CELLS)
def test_configured_method_is_applied_or_refused(
    setups: dict[str, tuple[Setup, dict]],
    tiny_encoder: Path,
    files: dict[str, Path],
    arch: str,
    mode: str,
    weighting: str,
    aggregator: str,
) -> None:
    raw = raw_config(tiny_encoder, files, arch, mode, weighting, aggregator)
    try:
        config = config_from_dict(raw)
    except ConfigError as exc:
        message = str(exc)
        assert (
            "\n" not in message
            and f"weighting '{weighting}' with aggregator '{aggregator}'" in (message)
        ), message
        assert arch != "shared" or mode != "all", f"every pair applies there: {message}"
        return
    assert_applied(*setups[arch], config, mode, weighting, aggregator)


def assert_applied(
    setup: Setup, initial: dict, config: RunConfig, mode: str, weighting: str, aggregator: str
) -> None:
    """Steps ``config`` through the loop (a two-batch aggregator with its second batch, each
    step checked against the hand reference) and asserts the method's effect shows: weights
    other than 1 unless it is equal weighting, coefficients other than 1 unless it is the
    plain sum, all finite."""
    if AGGREGATORS.get(aggregator).needs_two_batches:
        steps = run_two_batch_cell(setup, initial, config, mode)
    else:
        steps, _ = run_cell(setup, initial, config, mode)
    weights = [v for s in steps for v in s["weights"].values()]
    if weighting != "equal":
        assert _differs(weights, 1.0), f"'{weighting}' kept every weight at 1: {weights}"
    coefficients = [float(v) for s in steps for v in s["combine"]]
    if aggregator != "sum":
        assert _differs(coefficients, 1.0), f"'{aggregator}' kept c = 1: {coefficients}"
    assert all(math.isfinite(v) for v in weights + coefficients)


def test_learned_weights_train_on_subset_steps(
    setups: dict[str, tuple[Setup, dict]], tiny_encoder: Path, files: dict[str, Path]
) -> None:
    """The issue's case: uncertainty with one task per step moves its log-variances (the
    present task's only) and logs its weights."""
    config = config_from_dict(raw_config(tiny_encoder, files, "shared", "1", "uncertainty", "sum"))
    setup, initial = setups["shared"]
    steps, objective = run_cell(setup, initial, config, "1")
    assert [list(s["record"]["weights"]) for s in steps] == [["a"], ["b"], ["c"], ["a"]]
    assert bool((objective.weighting.log_vars.detach().abs() > 1e-3).all())  # each one moved
    assert steps[3]["weights"]["a"] != pytest.approx(1.0)


ENCODER_ARCHS = [n for n in ARCHITECTURES.names() if n != "causal_lm"]  # decoder: test_instruction


@pytest.mark.parametrize("name", ENCODER_ARCHS)
def test_trains_shared_matches_the_built_model(
    tiny_encoder: Path, files: dict[str, Path], name: str
) -> None:
    """What the config reads at load (``trains_shared``) is what the built model has."""
    raw = raw_config(tiny_encoder, files, "shared", "all", "equal", "sum")
    variants = [{"name": name}] + (
        [{"name": name, "freeze_encoder": False}] if name == "prefix" else []
    )
    for arch in variants:
        config = config_from_dict({**raw, "architecture": arch})
        model = build(config).model
        trained = any(p.requires_grad for _, p in model.shared_parameters())
        assert ARCHITECTURES.get(name).trains_shared(config.architecture.kwargs) == trained, arch


def test_applicability_table_is_what_the_config_does() -> None:
    """benchmarks/results/applicability.json (rendered into docs/methods.md) is current."""
    import importlib.util
    import json

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "applicability", root / "benchmarks/applicability.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = json.loads((root / "benchmarks/results/applicability.json").read_text())
    assert saved == module.measure(), "re-run python benchmarks/applicability.py"
