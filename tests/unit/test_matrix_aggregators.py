"""Aggregators that need the per-task gradient matrix (``needs_matrix``: GradDrop,
TrimmedMean, ExcessMTL, MoCo, DB-MTL) in the engine, the objective and the config.

* the engine hands the method the ``[T, P]`` matrix autograd gives (segments and exact
  per-task passes), writes its update (times the fp16 loss scale) and each head its own
  gradient;
* the objective passes the losses of the terms (``w_t L_t``): MoCo's update changes with them;
* the config refuses ``single_input: representation`` and ``resolve_every`` with one line;
* the ``[T, P]`` state survives a checkpoint into a fresh instance; argument checks.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from polytask.aggregation import AGGREGATORS
from polytask.autograd.engine import PerTaskGradients
from polytask.autograd.matrix import MatrixCombine
from polytask.config.manifest import listing
from polytask.config.rule import matrix_refusal
from polytask.config.run import config_from_dict
from polytask.errors import ConfigError
from tests.conftest import base_config
from tests.unit.test_autograd import losses_of, make_batch, reference, tiny_bert_model
from tests.unit.test_two_batch import flat

pytestmark = pytest.mark.usefixtures("one_thread")
MATRIX = ["graddrop", "trimmed_mean", "excess_mtl", "moco", "db_mtl"]


@pytest.mark.parametrize("single_input", [False, True])
@pytest.mark.parametrize("grad_scale", [1.0, 8.0])
def test_engine_hands_the_matrix_and_writes_the_update(
    single_input: bool, grad_scale: float
) -> None:
    """Dropout off: the matrix equals autograd's per-task gradients of the shared parameters
    (in their order, zeros where none flows), ``.grad`` is the update (times the loss scale)
    and each head gets ``∇(w_t L_t)`` (times the scale)."""
    T = 3
    model = tiny_bert_model(T).eval()
    ids, mask, segments, labels = make_batch(T, 1, single_input)
    w = {"t0": 1.0, "t1": 0.5, "t2": 2.0}
    refs = reference(model, losses_of(model, ids, mask, segments, labels), w)
    shared = [p for _, p in model.shared_parameters()]
    G = torch.stack([flat(refs[f"t{i}"][0], shared) for i in range(T)])
    seen: list[Tensor] = []
    marker = torch.arange(G.shape[1], dtype=torch.float32)  # an update no Σ c_t g_t gives

    def aggregate(matrix: Tensor) -> tuple[Tensor, Tensor]:
        seen.append(matrix)
        return marker, torch.tensor([0.1, 0.2, 0.3])

    engine = PerTaskGradients(model)
    with engine.capture(segments):
        losses = losses_of(model, ids, mask, segments, labels)
    scaled = {t: losses[t] * w[t] for t in losses}
    stats = engine.backward(scaled, MatrixCombine(aggregate), grad_scale=grad_scale)
    (matrix,) = seen
    assert matrix.shape == G.shape and matrix.dtype == torch.float32
    torch.testing.assert_close(matrix.double(), G, rtol=1e-5, atol=1e-7)
    written = torch.cat([p.grad.reshape(-1) for p in shared])
    torch.testing.assert_close(written, marker * grad_scale)
    assert stats.weights.tolist() == pytest.approx([0.1, 0.2, 0.3])
    torch.testing.assert_close(stats.gramian, G @ G.T, rtol=1e-5, atol=1e-9)
    for i in range(T):
        for k, (name, p) in enumerate(model.task_parameters(f"t{i}")):
            want = refs[f"t{i}"][1][k] * grad_scale
            torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-6, msg=name)


def test_objective_passes_the_terms_losses() -> None:
    """MoCo scales each normalised gradient by its term's loss: the written update is the
    rule's on the matrix with ``w_t L_t`` (static weights 1, 2), not with the plain losses."""
    from accelerate import Accelerator

    from polytask.objective import build_objective

    T = 2
    model = tiny_bert_model(T).eval()
    ids, mask, segments, labels = make_batch(T, 3)
    objective = build_objective(
        ["t0", "t1"], {"t0": 1.0, "t1": 2.0}, ["classification"] * T, ("equal", {}), ("moco", {})
    )
    objective.attach(model)
    losses_now = losses_of(model, ids, mask, segments, labels)
    values = torch.stack([losses_now["t0"].detach(), 2.0 * losses_now["t1"].detach()])
    refs = reference(model, losses_now, {"t0": 1.0, "t1": 2.0})
    shared = [p for _, p in model.shared_parameters()]
    G = torch.stack([flat(refs[f"t{i}"][0], shared) for i in range(T)])
    with objective.capture(segments):
        losses = losses_of(model, ids, mask, segments, labels)
    objective.backward(Accelerator(cpu=True), losses)
    written = torch.cat(
        [(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in shared]
    ).double()
    fresh = AGGREGATORS.get("moco")(T)
    want = fresh(G, values.double())
    torch.testing.assert_close(written, want, rtol=1e-4, atol=1e-7 * float(want.abs().max()))
    plain = AGGREGATORS.get("moco")(T)(G, values.double() / torch.tensor([1.0, 2.0]))
    assert float((written - plain).norm()) > 0.1 * float(want.norm())


def test_the_rule_reads_the_manifest_flag() -> None:
    entries = listing("aggregators")
    for name in MATRIX:
        entry = (name, entries.get(name))
        assert (
            entries.get(name).needs_matrix and matrix_refusal(entry, single_input="exact") is None
        )
        assert "train.single_input is representation" in str(
            matrix_refusal(entry, single_input="representation")
        )
        assert "aggregator.resolve_every is 4" in str(
            matrix_refusal(entry, single_input=None, resolve_every=4)
        )
    for name in ("mgda", "sum", "modo"):
        assert not entries.get(name).needs_matrix
        assert matrix_refusal((name, entries.get(name)), single_input="representation") is None


def test_config_refuses_what_never_forms_the_matrix(
    tiny_encoder: Path, task_files: Any, tmp_path: Path
) -> None:
    """One line each, naming the setting and the fix; accepted without it."""
    from tests.unit.test_shared_inputs import shared_config, shared_files

    raw = shared_config(tiny_encoder, shared_files(tmp_path), aggregator={"name": "moco"})
    raw["train"]["single_input"] = "representation"
    data = base_config(tiny_encoder, task_files)
    data["sampler"] = {"tasks_per_step": "all"}
    data["aggregator"] = {"name": "moco", "resolve_every": 3}
    for config, says in (
        (raw, "train.single_input is representation: set train.single_input: exact"),
        (data, "aggregator.resolve_every is 3: remove aggregator.resolve_every"),
    ):
        with pytest.raises(ConfigError) as err:
            config_from_dict(config)
        message = str(err.value)
        assert "\n" not in message and "aggregator 'moco' needs the per-task gradients" in message
        assert says in message, message
    raw["train"]["single_input"] = "exact"
    data["aggregator"] = {"name": "moco"}
    config_from_dict(raw)
    config_from_dict(data)


def test_library_refuses_resolve_every_and_smoothing() -> None:
    from polytask.objective import build_objective

    with pytest.raises(ValueError, match="resolve_every=2 needs an aggregator"):
        build_objective(
            ["a", "b"],
            {"a": 1.0, "b": 1.0},
            ["classification"] * 2,
            ("equal", {}),
            ("graddrop", {}),
            resolve_every=2,
        )
    message = "inner aggregator 'excess_mtl' cannot be smoothed: it needs the gradient matrix"
    with pytest.raises(ValueError, match=re.escape(message)):
        AGGREGATORS.get("cr_mogm")(2, inner="excess_mtl")


@pytest.mark.parametrize("name", ["excess_mtl", "moco", "db_mtl"])
def test_matrix_state_survives_a_checkpoint(name: str, tmp_path: Path) -> None:
    """The ``[T, P]`` buffers go through safetensors into a fresh instance (created empty)
    and the next updates are identical; a matrix of another width is refused."""
    from safetensors.torch import load_file, save_file

    gen = torch.Generator().manual_seed(1)
    steps = [torch.randn(3, 7, generator=gen) for _ in range(4)]
    losses = torch.tensor([0.5, 1.0, 2.0])
    agg = AGGREGATORS.get(name)(3)
    for G in steps[:2]:
        agg(G, losses)
    save_file(agg.state_dict(), str(tmp_path / "state.safetensors"))
    restored = AGGREGATORS.get(name)(3)
    restored.load_state_dict(load_file(str(tmp_path / "state.safetensors")))
    for G in steps[2:]:
        assert torch.equal(restored(G, losses), agg(G, losses))
    with pytest.raises(ValueError, match="holds state for 7 gradient coordinates, got 5"):
        agg(torch.randn(3, 5), losses)


def test_losses_change_the_loss_reading_methods() -> None:
    G = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], dtype=torch.float64)
    for name in ("moco", "db_mtl"):
        make = partial(AGGREGATORS.get(name), 2)
        assert make().needs_losses
        one, other = make()(G, torch.tensor([1.0, 1.0])), make()(G, torch.tensor([0.2, 3.0]))
        assert not torch.allclose(one, other), name
        torch.testing.assert_close(make()(G), one)  # no losses: ones
    for name in ("graddrop", "trimmed_mean", "excess_mtl"):
        assert not AGGREGATORS.get(name)(3).needs_losses


@pytest.mark.parametrize(
    ("name", "kwargs", "says"),
    [
        ("graddrop", {"leak": 1.5}, "leak must be a number in [0, 1]"),
        ("graddrop", {"leak": True}, "leak must be a number in [0, 1]"),
        ("trimmed_mean", {"trim_number": -1}, "trim_number must be an integer >= 0"),
        ("trimmed_mean", {"trim_number": 2}, "needs n_tasks >= 2 * trim_number + 1"),
        ("excess_mtl", {"robust_step_size": 0.0}, "robust_step_size must be > 0"),
        ("excess_mtl", {"n_warmup_steps": 1.5}, "n_warmup_steps must be an integer >= 0"),
        ("moco", {"gamma": -1.0}, "gamma must be > 0"),
        ("moco", {"rho": -0.1}, "rho must be ≥ 0"),
        ("db_mtl", {"beta": 1.5}, "beta must be in [0, 1]"),
        ("db_mtl", {"beta_sigma": -1.0}, "beta_sigma must be ≥ 0"),
    ],
)
def test_bad_arguments(name: str, kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        AGGREGATORS.get(name)(3, **kwargs)
