"""Periodic re-solving (``aggregator.resolve_every``): the aggregator is called on one full
step in N, the steps between write ``Σ_t c_t g_t`` with the cached ``c`` (computed here by
hand from per-task ``autograd.grad`` on the same forward), N = 1 is today's objective, a run
resumed mid-period is bit-identical, and the combinations it cannot apply are refused."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from polytask.config.run import config_from_dict
from polytask.data.batching import Batch, TaskStream, collate
from polytask.errors import ConfigError
from polytask.objective import Objective, build_objective
from polytask.objective.resolve import Resolve
from polytask.train import Setup, build, task_losses, train, train_step
from polytask.training.runlog import read_records
from tests.conftest import base_config, sentiment_rows, write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = ("a", "b", "c")
STATIC = [1.0, 0.5, 2.0]


@pytest.fixture(scope="module")
def built(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Setup, dict]:
    """Three classification tasks, b learning the opposite of a (conflicting gradients); no
    dropout, so a reference forward is the step's forward. The model and its initial state."""
    root = tmp_path_factory.mktemp("resolve")
    swap = {"pos": "neg", "neg": "pos", "neu": "neu"}
    rows = {"a": sentiment_rows(48, 1), "c": sentiment_rows(48, 3)}
    rows["b"] = [{**r, "label": swap[r["label"]]} for r in sentiment_rows(48, 2)]
    tasks = []
    for t in TASKS:
        path = write_jsonl(root / f"{t}.jsonl", rows[t])
        data = {"train": str(path), "validation": str(path)}
        tasks.append({"name": t, "type": "classification", "data": data})
    config = config_from_dict(
        {
            "encoder": {"name": str(tiny_encoder), "max_length": 16},
            "architecture": {"name": "hard", "head_dropout": 0.0},
            "tasks": tasks,
            "sampler": {"tasks_per_step": "all"},
            "train": {"batch_size": 4, "max_grad_norm": None},
        }
    )
    setup = build(config)
    setup.model.eval()
    return setup, copy.deepcopy(setup.model.state_dict())


class Recording(torch.optim.SGD):
    """SGD that keeps each step's gradients (exact, not recovered from the update)."""

    grads: dict[int, torch.Tensor]

    def step(self, closure: Any = None) -> Any:
        self.grads = {
            id(p): p.grad.detach().clone()
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        }
        return super().step(closure)


def objective(weighting: str, aggregator: str, every: int | None) -> Objective:
    kwargs = {"weights": STATIC} if weighting == "static" else {}
    extra = () if every is None else (every,)  # None: the option left out
    return build_objective(
        list(TASKS),
        dict.fromkeys(TASKS, 1.0),
        ["classification"] * 3,
        (weighting, kwargs),
        (aggregator, {}),
        "exact",
        *extra,
    )


class Run:
    """Steps of the loop's own ``train_step`` on the shared model, from its initial state."""

    def __init__(self, built: tuple[Setup, dict], obj: Objective) -> None:
        setup, initial = built
        setup.model.load_state_dict(initial)
        obj.attach(setup.model)
        self.setup = dataclasses.replace(setup, objective=obj)
        self.objective = obj
        self.params = [p for p in [*setup.model.parameters(), *obj.parameters()] if p.requires_grad]
        self.optimizer = Recording(self.params, lr=0.5)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        self.streams = {
            t: TaskStream(setup.data[t].splits["train"], 4, 1, i, setup.specs[t])
            for i, t in enumerate(TASKS)
        }
        self.accelerator = Accelerator(cpu=True)

    def batch(self) -> Batch:
        draws = [(self.setup.specs[t], self.streams[t].next_draw().rows) for t in TASKS]
        return collate(draws, 0)

    def step(self, batch: Batch | None = None) -> dict[str, Any]:
        return train_step(
            self.setup,
            self.setup.model,
            batch or self.batch(),
            self.accelerator,
            self.optimizer,
            self.scheduler,
        )


def test_one_is_the_objective_without_the_option(built: tuple[Setup, dict]) -> None:
    """N = 1: no cache, the same state_dict keys (old checkpoints load), the same updates."""
    runs, finals = [], []
    for every in (None, 1):
        obj = objective("static", "nash_mtl", every)
        assert obj.resolve is None
        run = Run(built, obj)
        runs.append([run.step() for _ in range(3)])
        finals.append([p.detach().clone() for p in run.params])
        keys = sorted(obj.state_dict())
    assert keys == sorted(objective("static", "nash_mtl", None).state_dict())
    assert runs[0] == runs[1]
    assert all(torch.equal(a, b) for a, b in zip(*finals, strict=True))


def test_aggregator_is_called_on_solve_steps_only(built: tuple[Setup, dict]) -> None:
    obj = objective("equal", "upgrad", 3)
    run = Run(built, obj)
    calls: list[int] = []
    solve = obj.aggregator.weights
    step = 0

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(step)
        return solve(*args, **kwargs)

    obj.aggregator.weights = counted  # type: ignore[method-assign]
    records = []
    for step in range(7):  # noqa: B007 - read by counted()
        records.append(run.step())
    assert calls == [0, 3, 6]
    methods = [r["grad_method"] for r in records]
    assert methods == ["segments", "reused", "reused"] * 2 + ["segments"]
    for i in (1, 2, 4, 5):  # a reuse step logs the coefficients of the solve before it
        assert records[i]["combine"] == records[3 * (i // 3)]["combine"]
        assert "cosine" not in records[i] and "grad_norm" not in records[i]


def reference(
    run: Run, batch: Batch, c: torch.Tensor
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Every parameter's gradient of a step with coefficients ``c`` (shared: ``Σ c_t g_t``,
    task ``t``'s head: ``g_t``, with ``g_t = ∇(w_t L_t)`` by ``autograd.grad``), and the ``c``
    the aggregator would solve from this step's Gramian (on a copy: it keeps state)."""
    model, obj = run.setup.model, run.objective
    losses = task_losses(model, batch, run.setup.specs)
    vector = torch.stack([losses[t].detach() for t in TASKS])
    w = obj.weighting(vector).detach()
    params = [p for p in model.parameters() if p.requires_grad]
    shared = {id(p) for _, p in model.shared_parameters()}
    grads = [
        torch.autograd.grad(w[i] * losses[t], params, retain_graph=True, allow_unused=True)
        for i, t in enumerate(TASKS)
    ]
    gramian = torch.zeros(3, 3, dtype=torch.float64)
    expected = {}
    for k, p in enumerate(params):
        parts = [torch.zeros_like(p) if g[k] is None else g[k] for g in grads]
        if id(p) in shared:
            flat = torch.stack([g.double().flatten() for g in parts])
            gramian += flat @ flat.T
            expected[id(p)] = torch.stack([float(c[i]) * parts[i] for i in range(3)]).sum(0)
        else:
            expected[id(p)] = torch.stack(parts).sum(0)
    eps = float(torch.finfo(torch.float32).eps)
    fresh = copy.deepcopy(obj.aggregator).weights(gramian, vector.double(), eps=eps)
    return expected, fresh


@pytest.mark.parametrize("aggregator", ["nash_mtl", "mgda"])
@pytest.mark.parametrize("weighting", ["static", "uncertainty"])
def test_reuse_step_writes_the_cached_combination(
    built: tuple[Setup, dict], weighting: str, aggregator: str
) -> None:
    obj = objective(weighting, aggregator, 4)
    run = Run(built, obj)
    solved = run.step()
    assert solved["grad_method"] == "segments"
    c = obj.resolve.coefficients.clone() if obj.resolve is not None else None
    assert c is not None and bool((c != 0).any())
    for _ in range(2):  # two reuse steps on a model the updates have moved
        batch = run.batch()
        expected, fresh = reference(run, batch, c)
        record = run.step(batch)
        assert record["grad_method"] == "reused"
        # the aggregator would have chosen otherwise here: the step reused, it did not solve
        assert float((fresh - c).abs().max()) > 1e-3 * float(c.abs().max()), (fresh, c)
        for p in run.setup.model.parameters():
            if not p.requires_grad:
                continue
            want = expected[id(p)]  # zero for a parameter no loss reaches (BERT's pooler)
            got = run.optimizer.grads.get(id(p), torch.zeros_like(p))
            scale = float(want.abs().max())
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale + 1e-9), (
                f"{tuple(p.shape)}: off by {float((got - want).abs().max()):.3g} "
                f"(scale {scale:.3g})"
            )
        if weighting == "uncertainty":  # the learned weights train on reuse steps too
            assert bool(run.optimizer.grads[id(obj.weighting.log_vars)].abs().min() > 0)


def test_a_solve_that_is_not_finite_is_not_cached() -> None:
    cache = Resolve(n_tasks=2, every=5)
    cache.step(torch.tensor([float("nan"), 1.0], dtype=torch.float64))
    assert cache.due and bool((cache.coefficients == 0).all())
    cache.step(torch.tensor([0.5, 2.0], dtype=torch.float64))
    assert not cache.due and cache.coefficients.tolist() == [0.5, 2.0]
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="resolve_every must be an integer >= 1"):
            Resolve(n_tasks=2, every=bad)


def test_resume_mid_period_is_bit_identical(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    """Checkpoint after step 4 of N = 3 (one step into a period): the resumed run reuses the
    cached c on steps 5 and 6 as the uninterrupted run does, and ends with its weights."""
    data = base_config(tiny_encoder, task_files, max_steps=8, eval_every=8, checkpoint_every=4)
    data["sampler"] = {"tasks_per_step": "all"}
    data["aggregator"] = {"name": "upgrad", "resolve_every": 3}
    cfg = config_from_dict(data)
    out = tmp_path / "run"
    train(cfg, out, show_progress=False)
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())["state"]
    assert state["step"] == 4
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    (resumed / "final_metrics.json").unlink()
    train(cfg, resumed, resume=True, show_progress=False)
    records = [r for r in read_records(resumed / "metrics.jsonl") if r["event"] == "train"]
    methods = {r["step"]: r["grad_method"] for r in records}
    assert [methods[s] for s in range(1, 9)] == ["segments", "reused", "reused"] * 2 + [
        "segments",
        "reused",
    ]
    a = load_file(str(out / "model" / "model.safetensors"))
    b = load_file(str(resumed / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("weighting", "aggregator", "says"),
    [
        ("equal", "sum", "'sum' has fixed coefficients"),
        ("equal", "mean", "'mean' has fixed coefficients"),
        ("gradnorm", "upgrad", "'gradnorm' needs the per-task gradient norms"),
    ],
)
def test_what_it_cannot_apply_is_refused_at_load(
    tiny_encoder: Path, task_files: Any, weighting: str, aggregator: str, says: str
) -> None:
    data = base_config(tiny_encoder, task_files)
    data["sampler"] = {"tasks_per_step": "all"}
    data["weighting"] = {"name": weighting}
    data["aggregator"] = {"name": aggregator, "resolve_every": 3}
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    message = str(err.value)
    assert "\n" not in message, message
    assert says in message and "aggregator.resolve_every is 3" in message, message
    assert "remove aggregator.resolve_every (or set it to 1)" in message, message
    data["aggregator"]["resolve_every"] = 1  # today's behaviour: accepted
    config_from_dict(data)
    with pytest.raises(
        ValueError, match="resolve_every=3 needs an aggregator that solves a Gramian"
    ):
        objective(weighting, aggregator, 3)  # the library refuses it too


@pytest.mark.parametrize("value", [0, -2, True, 2.0, "3"])
def test_resolve_every_is_a_positive_integer(
    tiny_encoder: Path, task_files: Any, value: Any
) -> None:
    data = base_config(tiny_encoder, task_files)
    data["sampler"] = {"tasks_per_step": "all"}
    data["aggregator"] = {"name": "upgrad", "resolve_every": value}
    with pytest.raises(ConfigError, match=r"aggregator\.resolve_every"):
        config_from_dict(data)
    data["aggregator"]["resolve_every"] = 50
    assert config_from_dict(data).aggregator.resolve_every == 50
