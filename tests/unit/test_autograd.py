"""The per-task gradient engine against plain autograd on the same forward graph.

Reference: ``torch.autograd.grad(w_t L_t, params, retain_graph=True)`` per task on the SAME
graph the engine differentiates, so dropout masks are identical. Tolerance: max abs
difference ≤ 1e-6 in float32 (``ATOL``) for every shared parameter and head parameter.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import polytask.autograd.engine
from polytask.autograd.engine import GradStats, PerTaskGradients, gramian_to_cosine
from polytask.segments import Segment

ATOL = 1e-6
ROWS, LENGTH, VOCAB = 3, 10, 100


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread


def tiny_bert_model(n_tasks: int, seed: int = 0) -> nn.Module:
    """HardSharing over a random 2-layer, 32-wide BERT (with its unused pooler)."""
    from transformers import BertConfig, BertModel

    from polytask.models.hard import HardSharing
    from polytask.tasks import TaskSpec

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    specs = [
        TaskSpec(name=f"t{i}", type="classification", labels=["a", "b", "c"])
        for i in range(n_tasks)
    ]
    return HardSharing(BertModel(config), specs)


def make_batch(
    n_tasks: int, seed: int, single_input: bool = False
) -> tuple[Tensor, Tensor, list[Segment], dict[str, Tensor]]:
    """Random padded token ids; each task owns ROWS rows (or all tasks read the same rows)."""
    gen = torch.Generator().manual_seed(seed)
    rows = ROWS if single_input else ROWS * n_tasks
    ids = torch.randint(1, VOCAB, (rows, LENGTH), generator=gen)
    lengths = torch.randint(4, LENGTH + 1, (rows,), generator=gen)
    mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # padding id 0 (BERT's padding_idx) after each row's end
    ids[::2, 1] = 0  # ... and inside real text: autograd gives the padding row no gradient
    starts = [0] * n_tasks if single_input else [ROWS * i for i in range(n_tasks)]
    segments = [Segment(f"t{i}", s, s + ROWS) for i, s in enumerate(starts)]
    labels = {s.task: torch.randint(0, 3, (ROWS,), generator=gen) for s in segments}
    return ids, mask, segments, labels


def losses_of(model: Any, ids: Tensor, mask: Tensor, segments: list[Segment], labels: Any) -> Any:
    logits = model(ids, mask, None, segments)
    return {t: F.cross_entropy(logits[t], labels[t]) for t in labels}


def reference(model: Any, losses: dict[str, Tensor], weights: dict[str, float]) -> Any:
    """Per-task gradients of shared and head parameters by plain autograd (graph kept)."""
    shared = [p for _, p in model.shared_parameters()]
    out = {}
    for t, loss in losses.items():
        heads = [p for _, p in model.task_parameters(t)]
        grads = torch.autograd.grad(
            weights[t] * loss, shared + heads, retain_graph=True, allow_unused=True
        )
        out[t] = (grads[: len(shared)], grads[len(shared) :])
    return out


def run_engine(
    model: Any,
    engine: PerTaskGradients,
    batch: Any,
    c: Tensor,
    weights: dict[str, float],
    seed: int = 1,
) -> tuple[GradStats, Any]:
    ids, mask, segments, labels = batch
    torch.manual_seed(seed)
    with engine.capture(segments):
        losses = losses_of(model, ids, mask, segments, labels)
    ref = reference(model, losses, weights)
    stats = engine.backward(losses, lambda gramian: c, weights, keep_task_grads=True)
    return stats, ref


def assert_matches(model: Any, stats: GradStats, ref: Any, c: Tensor) -> float:
    """Every per-task gradient, the written sum, heads and Gramian equal the reference."""
    tasks, worst = stats.tasks, 0.0
    assert stats.task_grads is not None
    flat = torch.zeros(len(tasks), 0, dtype=torch.float64)
    for i, (name, p) in enumerate(model.shared_parameters()):
        per_task = [ref[t][0][i] for t in tasks]
        if all(g is None for g in per_task):  # the pooler: no gradient flows
            assert "pooler" in name, name
            assert p.grad is None and name not in stats.task_grads
            continue
        per_task = [torch.zeros_like(p) if g is None else g for g in per_task]
        expected = torch.stack(per_task)
        worst = max(worst, float((stats.task_grads[name] - expected).abs().max()))
        written = torch.tensordot(c.to(p.dtype), expected, dims=1)
        assert torch.allclose(p.grad, written, rtol=0, atol=ATOL), name
        flat = torch.cat([flat, expected.reshape(len(tasks), -1).double()], dim=1)
    assert worst <= ATOL, worst
    for t in tasks:
        for (name, p), g in zip(model.task_parameters(t), ref[t][1], strict=True):
            assert torch.allclose(p.grad, g, rtol=0, atol=ATOL), name
    assert torch.allclose(stats.gramian, flat @ flat.T, rtol=1e-5, atol=1e-10)
    assert torch.equal(stats.weights, c.double())
    return worst


@pytest.mark.parametrize("n_tasks", [2, 4])
@pytest.mark.parametrize("dropout", [False, True])
def test_one_backward_equals_autograd_per_task(n_tasks: int, dropout: bool) -> None:
    model = tiny_bert_model(n_tasks)
    model.train(dropout)
    engine = PerTaskGradients(model)
    c = torch.linspace(-0.5, 1.5, n_tasks)
    weights = {f"t{i}": 0.5 + i for i in range(n_tasks)}
    stats, ref = run_engine(model, engine, make_batch(n_tasks, seed=n_tasks), c, weights)
    assert stats.method == "segments"
    worst = assert_matches(model, stats, ref, c)
    print(f"segments T={n_tasks} dropout={dropout}: max abs diff {worst:.2e}")


def test_dropout_really_differs_between_forwards() -> None:
    """Guards the dropout test: with dropout on, two forwards differ (masks are random)."""
    model = tiny_bert_model(2)
    model.train()
    ids, mask, segments, labels = make_batch(2, seed=0)
    a = losses_of(model, ids, mask, segments, labels)["t0"]
    b = losses_of(model, ids, mask, segments, labels)["t0"]
    assert not torch.equal(a, b)


def test_unsupported_shared_layer_falls_back_exactly() -> None:
    model = tiny_bert_model(2)
    model.encoder.encoder.layer[0].intermediate.intermediate_act_fn = nn.PReLU()
    with pytest.warns(RuntimeWarning, match="PReLU"):
        engine = PerTaskGradients(model)
    c = torch.tensor([0.7, -0.2])
    weights = {"t0": 1.0, "t1": 2.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, at construction, not every step
        for seed in (3, 4):
            model.zero_grad(set_to_none=True)
            stats, ref = run_engine(model, engine, make_batch(2, seed=seed), c, weights)
            assert stats.method == "per-task"
            assert_matches(model, stats, ref, c)


def test_parameter_used_outside_its_layer_falls_back_exactly() -> None:
    """A shared weight also read directly (not through its module) is caught by the graph check."""
    model = tiny_bert_model(2)
    model.eval()
    dense = model.encoder.encoder.layer[1].attention.output.dense

    def direct_use(module: nn.Module, args: Any, out: Any) -> None:
        out.last_hidden_state = out.last_hidden_state + F.linear(
            out.last_hidden_state, dense.weight
        )

    model.encoder.register_forward_hook(direct_use)
    engine = PerTaskGradients(model)
    c = torch.tensor([1.0, 0.5])
    with pytest.warns(RuntimeWarning, match="used outside its layer"):
        stats, ref = run_engine(model, engine, make_batch(2, seed=5), c, {"t0": 1.0, "t1": 1.0})
    assert stats.method == "per-task"
    assert_matches(model, stats, ref, c)


@pytest.mark.parametrize("dropout", [False, True])
def test_single_input_exact_equals_autograd(dropout: bool, monkeypatch: Any) -> None:
    """The hooked path (T activation-gradient passes, weight gradients by the hooks)."""

    def unhooked(*args: Any) -> None:
        raise AssertionError("the plain per-task passes ran instead of the hooked ones")

    monkeypatch.setattr(polytask.autograd.engine, "per_task_passes", unhooked)
    model = tiny_bert_model(3)
    model.train(dropout)
    engine = PerTaskGradients(model)
    c = torch.tensor([0.2, -1.0, 0.9])
    weights = {"t0": 1.0, "t1": 0.3, "t2": 2.0}
    batch = make_batch(3, seed=6, single_input=True)
    stats, ref = run_engine(model, engine, batch, c, weights)
    assert stats.method == "per-task"
    worst = assert_matches(model, stats, ref, c)
    print(f"single-input exact dropout={dropout}: max abs diff {worst:.2e}")


def test_representation_mode() -> None:
    """Gramian of the feature gradients; the written update is exactly Σ c_t g_t."""
    model = tiny_bert_model(3)
    model.eval()
    engine = PerTaskGradients(model, single_input="representation")
    ids, mask, segments, labels = make_batch(3, seed=7, single_input=True)
    kept: list[Tensor] = []
    handle = model.encoder.register_forward_hook(lambda m, a, out: kept.append(out[0]))
    with engine.capture(segments):
        losses = losses_of(model, ids, mask, segments, labels)
    handle.remove()
    weights = {"t0": 1.0, "t1": 0.5, "t2": 2.0}
    ref = reference(model, losses, weights)
    features = [
        torch.autograd.grad(weights[t] * losses[t], kept[0], retain_graph=True)[0] for t in losses
    ]
    c = torch.tensor([0.5, 1.5, -0.25])
    seen: list[Tensor] = []
    stats = engine.backward(losses, lambda g: seen.append(g) or c, weights, keep_task_grads=True)
    assert stats.method == "representation" and stats.task_grads is not None
    Z = stats.task_grads["representation"]
    assert Z.shape == (3, ROWS, LENGTH, 32)
    assert torch.allclose(Z, torch.stack(features), rtol=0, atol=ATOL)
    flat = torch.stack(features).reshape(3, -1).double()
    assert torch.allclose(seen[0], flat @ flat.T, rtol=1e-6)
    for i, (name, p) in enumerate(model.shared_parameters()):
        grads = [ref[t][0][i] for t in losses]
        if grads[0] is None:
            assert p.grad is None and "pooler" in name
            continue
        expected = torch.tensordot(c, torch.stack(grads), dims=1)
        assert torch.allclose(p.grad, expected, rtol=0, atol=ATOL), name


def test_backward_needs_a_captured_forward() -> None:
    engine = PerTaskGradients(tiny_bert_model(2))
    with pytest.raises(RuntimeError, match="capture"):
        engine.backward({"t0": torch.tensor(1.0, requires_grad=True)}, lambda g: torch.ones(1))


def test_gramian_to_cosine() -> None:
    g = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [2.0, 0.0, 16.0]], dtype=torch.float64)
    cos = gramian_to_cosine(g)
    assert torch.allclose(
        cos, torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0], [0.5, 0.0, 1.0]], dtype=torch.float64)
    )


class ToyEncoder(nn.Module):
    """Row-independent: embeddings (positions broadcast over rows) → LayerNorm → residual MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Embedding(VOCAB, 8, padding_idx=0)
        self.positions = nn.Embedding(LENGTH, 8)
        self.norm = nn.LayerNorm(8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))

    def forward(self, ids: Tensor) -> Tensor:
        positions = self.positions(torch.arange(ids.shape[1])[None, :])  # [1, L, 8]
        h = self.norm(self.words(ids) + positions)
        return h + self.mlp(h)


class ToyModel(nn.Module):
    """A small multi-task model without transformers: mean-pooled toy encoder, linear heads."""

    def __init__(self, n_tasks: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = ToyEncoder()
        self.heads = nn.ModuleDict({f"t{i}": nn.Linear(8, 3) for i in range(n_tasks)})

    def forward(self, ids: Tensor, mask: Tensor, types: Any, segments: list[Segment]) -> Any:
        h = self.encoder(ids)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return {s.task: self.heads[s.task](pooled[s.start : s.stop]) for s in segments}

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters()]

    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        return [(f"heads.{task}.{n}", p) for n, p in self.heads[task].named_parameters()]


def test_interleaved_segments_and_broadcast_embeddings() -> None:
    """A task owning several segments; positions broadcast over rows; toy model vs autograd."""
    model = ToyModel(2)
    ids, mask, _, _ = make_batch(2, seed=8)
    gen = torch.Generator().manual_seed(9)
    segments = [Segment("t0", 0, 2), Segment("t1", 2, 3), Segment("t0", 3, 5), Segment("t1", 3, 3)]
    segments.append(Segment("t1", 5, 6))
    labels = {t: torch.randint(0, 3, (n,), generator=gen) for t, n in (("t0", 4), ("t1", 2))}

    def losses_by_task() -> dict[str, Tensor]:
        h = model.encoder(ids)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        out = {}
        for t in labels:
            rows = torch.cat([pooled[s.start : s.stop] for s in segments if s.task == t])
            out[t] = F.cross_entropy(model.heads[t](rows), labels[t])
        return out

    engine = PerTaskGradients(model)
    with engine.capture(segments):
        losses = losses_by_task()
    weights = {"t0": 1.0, "t1": 3.0}
    ref = reference(model, losses, weights)
    c = torch.tensor([1.5, -0.5])
    stats = engine.backward(losses, lambda g: c, weights, keep_task_grads=True)
    assert stats.method == "segments"
    assert_matches(model, stats, ref, c)


def spread(gramian: Tensor) -> Tensor:
    """A combine that depends on the Gramian (equal ranks ⇒ same Gramian)."""
    d = gramian.diagonal()
    return d / d.sum() + gramian.sum(0) / gramian.abs().sum()


def both_modes(model: ToyModel, rank_batches: list[Any]) -> dict[str, Any]:
    """Per mode: c and written grads from the engine on this process's batch(es)."""
    out = {}
    for mode, engine in (
        ("segments", PerTaskGradients(model)),
        ("representation", PerTaskGradients(model, single_input="representation")),
    ):
        ids, mask, segments, labels = rank_batches[mode == "representation"]
        model.zero_grad(set_to_none=True)
        with engine.capture(segments):
            losses = losses_of(model, ids, mask, segments, labels)
        stats = engine.backward(losses, spread)
        assert stats.method == mode
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        out[mode] = {"c": stats.weights, "gramian": stats.gramian, "grads": grads}
    return out


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        batches = [make_batch(2, seed=20 + rank), make_batch(2, seed=30 + rank, single_input=True)]
        torch.save(both_modes(ToyModel(2), batches), f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def _concat(parts: list[Any]) -> Any:
    """The two ranks' batches as one: each task's rows of rank 0 then rank 1."""
    single = parts[0][2][0].start == parts[0][2][1].start
    ids, mask, labels, segments, row = [], [], {}, [], 0
    for i, seg in enumerate(parts[0][2]):
        if single and i > 0:
            segments.append(Segment(seg.task, 0, row))
            continue
        for ids_r, mask_r, segs_r, _ in parts:
            s = segs_r[i]
            ids.append(ids_r[s.start : s.stop])
            mask.append(mask_r[s.start : s.stop])
        segments.append(Segment(seg.task, row, row + 2 * (seg.stop - seg.start)))
        row = segments[-1].stop
    for t in parts[0][3]:
        labels[t] = torch.cat([p[3][t] for p in parts])
    return torch.cat(ids), torch.cat(mask), segments, labels


def test_data_parallel_ranks_agree_with_one_big_batch(tmp_path: Path) -> None:
    """gloo, 2 processes: every rank gets the same c and gradients as one process on both halves."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path}/init", str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    merged = [
        _concat([make_batch(2, seed=20 + r) for r in range(2)]),
        _concat([make_batch(2, seed=30 + r, single_input=True) for r in range(2)]),
    ]
    alone = both_modes(ToyModel(2), merged)
    for mode, expected in alone.items():
        for got in ranks:
            assert torch.allclose(got[mode]["gramian"], expected["gramian"], rtol=1e-5), mode
            assert torch.allclose(got[mode]["c"], expected["c"], rtol=1e-5), mode
            assert got[mode]["grads"].keys() == expected["grads"].keys()
            for name, g in expected["grads"].items():
                assert torch.allclose(got[mode]["grads"][name], g, rtol=0, atol=ATOL), name


@pytest.mark.parametrize(
    "single_input,mode", [(False, "exact"), (True, "exact"), (True, "representation")]
)
def test_grad_scale_writes_scaled_grads_from_the_unscaled_gramian(
    single_input: bool, mode: Any
) -> None:
    """fp16 loss scaling: ``.grad`` is s × the unscaled update (what the grad scaler then
    divides by s); the Gramian, ``c`` and norms are the unscaled ones, even for a combine
    that is not scale-invariant."""
    batch = make_batch(2, seed=40, single_input=single_input)

    def combine(gramian: Tensor) -> Tensor:
        return 1.0 / (1.0 + gramian.diagonal())  # depends on the gradients' absolute scale

    runs = []
    for scale in (1.0, 1024.0):
        model = tiny_bert_model(2, seed=3)
        model.eval()  # no dropout: both runs differentiate the same function
        engine = PerTaskGradients(model, single_input=mode)
        ids, mask, segments, labels = batch
        with engine.capture(segments):
            losses = losses_of(model, ids, mask, segments, labels)
        stats = engine.backward(losses, combine, grad_scale=scale)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        runs.append((stats, grads))
    (plain, g1), (scaled, g2) = runs
    assert torch.allclose(scaled.gramian, plain.gramian, rtol=1e-5)
    assert torch.allclose(scaled.weights, plain.weights, rtol=1e-5)
    assert torch.allclose(scaled.norms, plain.norms, rtol=1e-5)
    assert g1.keys() == g2.keys()
    for name, g in g1.items():
        assert torch.allclose(g2[name], 1024.0 * g, rtol=1e-4, atol=1024 * ATOL), name
