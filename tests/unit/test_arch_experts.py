"""The expert and mixing architectures (``cgc``, ``ple``, ``dselect_k``, ``cross_stitch``) on
the tiny random BERT of the MoE tests: shapes for sequence and token tasks, gates summing to
1, the routing report, gradients reaching every expert, gate and stitch, parameter ownership
checked against the gradients of each task's loss, the one-backward segment split, chunked
forwards, CGC/PLE logits against a by-hand recomputation of the paper's equations, and the
argument checks."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polytask.autograd.engine import PerTaskGradients
from polytask.models import ARCHITECTURES
from polytask.models.mmoe import MMoE
from tests.unit import test_chunked_forward as chunked
from tests.unit.test_arch_moe import SPECS, batch, encoder, losses
from tests.unit.test_autograd import assert_matches

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread

NEW = {
    "cgc": {"shared_experts": 2, "task_experts": 2},
    "ple": {"levels": 3, "shared_experts": 2, "task_experts": 1},
    "dselect_k": {"experts": 3, "k": 2},
    "cross_stitch": {},
}
GATED = ["cgc", "ple", "dselect_k"]


def build(name: str, seed: int = 0, **kwargs: Any) -> Any:
    torch.manual_seed(seed + 1)  # the new modules' initialisation
    return ARCHITECTURES.get(name)(encoder(seed), SPECS, **{**NEW[name], **kwargs}).eval()


def gate_width(model: Any) -> int:
    return int(model.tally.experts)


@pytest.mark.parametrize("name", list(NEW))
def test_shapes_for_sequence_and_token_tasks(name: str) -> None:
    ids, mask, segments = batch()
    out = build(name)(ids, mask, None, segments)
    assert out["cls"].shape == (3, 3) and out["reg"].shape == (3, 1)
    assert out["tag"].shape == (3, ids.shape[1], 5)
    assert all(bool(torch.isfinite(v).all()) for v in out.values())


@pytest.mark.parametrize("name", GATED)
def test_every_unit_gates_to_one_and_the_report_counts_real_units(name: str) -> None:
    """The tally's raw sums: each block's weights add up to the routed units (every
    example's, every real token's gate sums to 1; 3 of 4 DSelect-k codes reachable, so
    there the weights of a unit sum to at most 1)."""
    model = build(name, **({"experts": 4} if name == "dselect_k" else {}))
    ids, mask, segments = batch()
    model(ids, mask, None, segments)
    real = {s.task: int(mask[s.start : s.stop].sum()) for s in segments}
    units = {"cls": 3, "reg": 3, "tag": real["tag"]}
    blocks = model.n_levels if name == "ple" else 1
    for task, sums in model.tally.sums.items():
        assert sums.shape == (blocks, gate_width(model))
        torch.testing.assert_close(sums.sum(-1), torch.full((blocks,), float(units[task])).double())
    routing = model.report()["routing"]
    assert routing["architecture"] == name
    for task, entry in routing["tasks"].items():
        assert entry["count"] == units[task]
        assert entry["unit"] == ("tokens" if task == "tag" else "examples")
        for shares in entry["shares"].values():
            assert len(shares) == routing["experts"] and min(shares) >= 0
            assert sum(shares) == pytest.approx(1.0, abs=1e-5)
    model.reset_report()
    assert model.report() == {}


def test_cgc_and_ple_report_their_expert_layout() -> None:
    cgc, ple = build("cgc"), build("ple")
    ids, mask, segments = batch()
    for model in (cgc, ple):
        model(ids, mask, None, segments)
    routing = cgc.report()["routing"]
    assert (routing["shared_experts"], routing["task_experts"], routing["experts"]) == (2, 2, 4)
    assert list(routing["tasks"]["cls"]["shares"]) == ["gate"] and "shared_gates" not in routing
    routing = ple.report()["routing"]
    assert list(routing["tasks"]["tag"]["shares"]) == ["level 0", "level 1", "level 2"]
    below = routing["shared_gates"]
    assert below["experts"] == 2 + 3 * 1  # shared, then every task's own
    assert list(below["tasks"]["cls"]["shares"]) == ["level 0", "level 1"]


def by_hand(model: Any, x: Tensor, task: str) -> Tensor:
    """The paper's equations on features ``x [n, H]``, written out with functional ops:
    per level, every branch's experts ``GELU(W x + b)``, task gates ``softmax(G_t x_t)`` over
    [shared, own], below the top a shared gate over [shared, every task's own]."""

    def experts(bank: nn.ModuleList, v: Tensor) -> list[Tensor]:
        return [F.gelu(F.linear(v, e[0].weight, e[0].bias)) for e in bank]

    def mixture(gate: nn.Linear, v: Tensor, outs: list[Tensor]) -> Tensor:
        g = torch.softmax(v @ gate.weight.T, dim=-1)
        return sum(g[:, i : i + 1] * o for i, o in enumerate(outs))  # type: ignore[return-value]

    names = list(model.specs)
    branch, shared = {t: x for t in names}, x
    for level in model.levels[:-1]:
        common = experts(level.shared, shared)
        own = {t: experts(level.own[t], branch[t]) for t in names}
        new_shared = mixture(level.shared_gate, shared, common + [o for t in names for o in own[t]])
        branch = {t: mixture(level.gates[t], branch[t], common + own[t]) for t in names}
        shared = new_shared
    top = model.levels[-1]
    v = branch[task]
    features = mixture(top.gates[task], v, experts(top.shared, shared) + experts(top.own[task], v))
    out: Tensor = model.heads[task](features)
    return out


@pytest.mark.parametrize(("name", "levels"), [("cgc", 1), ("ple", 2), ("ple", 3)])
def test_logits_match_the_equations_by_hand(name: str, levels: int) -> None:
    model = build(name, **({"levels": levels} if name == "ple" else {}))
    ids, mask, segments = batch()
    with torch.no_grad():
        out = model(ids, mask, None, segments)
        hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        for task in ("cls", "reg"):
            seg = next(s for s in segments if s.task == task)
            m = mask[seg.start : seg.stop].unsqueeze(-1).float()
            pooled = (hidden[seg.start : seg.stop] * m).sum(1) / m.sum(1)
            torch.testing.assert_close(out[task], by_hand(model, pooled, task), atol=1e-5, rtol=0)


def test_ple_of_one_level_is_cgc() -> None:
    ids, mask, segments = batch()
    cgc, ple = build("cgc"), build("ple", levels=1, task_experts=2)
    assert [n for n, _ in cgc.named_parameters()] == [n for n, _ in ple.named_parameters()]
    with torch.no_grad():
        a, b = cgc(ids, mask, None, segments), ple(ids, mask, None, segments)
    assert all(torch.equal(a[t], b[t]) for t in a)


@pytest.mark.parametrize("name", list(NEW))
def test_gradient_reaches_every_expert_gate_and_stitch(name: str) -> None:
    model = build(name)
    ids, mask, segments = batch()
    sum(losses(model, ids, mask, segments).values()).backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if "pooler" not in n and (p.grad is None or not bool(p.grad.abs().sum() > 0))
    ]
    assert missing == []


@pytest.mark.parametrize("name", [*NEW, "mmoe"])
def test_ownership_is_what_each_task_loss_reaches(name: str) -> None:
    """``task_parameters(t)``: no other task's loss reaches them; ``shared_parameters``:
    every task's loss does (the unused pooler aside); together, every parameter once."""
    model = build(name) if name != "mmoe" else MMoE(encoder(), SPECS, experts=3).eval()
    ids, mask, segments = batch()
    task_losses = losses(model, ids, mask, segments)
    shared = model.shared_parameters()
    own = {t: model.task_parameters(t) for t in model.specs}
    names = [n for n, _ in shared] + [n for ps in own.values() for n, _ in ps]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    everything = [p for _, p in model.named_parameters()]
    for t, loss in task_losses.items():
        grads = torch.autograd.grad(loss, everything, retain_graph=True, allow_unused=True)
        reached = {
            id(p)
            for p, g in zip(everything, grads, strict=True)
            if g is not None and bool(g.abs().sum() > 0)
        }
        for u, ps in own.items():
            hit = [n for n, p in ps if id(p) in reached]
            assert (hit != []) if u == t else (hit == []), (t, u, hit)
        missed = [n for n, p in shared if id(p) not in reached and "pooler" not in n]
        assert missed == [], (t, missed)


@pytest.mark.parametrize("name", list(NEW))
def test_per_task_gradients_keep_the_one_backward_segment_split(name: str) -> None:
    model = build(name)
    engine = PerTaskGradients(model)
    ids, mask, segments = batch(seed=3)
    c = torch.tensor([0.3, -0.7, 1.1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to per-task passes would warn
        with engine.capture(segments):
            task_losses = losses(model, ids, mask, segments)
        shared = [p for _, p in model.shared_parameters()]
        ref = {}
        for t, loss in task_losses.items():
            heads = [p for _, p in model.task_parameters(t)]
            g = torch.autograd.grad(loss, shared + heads, retain_graph=True, allow_unused=True)
            ref[t] = (g[: len(shared)], g[len(shared) :])
        stats = engine.backward(task_losses, lambda gramian: c, None, keep_task_grads=True)
    assert stats.method == "segments"
    assert_matches(model, stats, ref, c)


@pytest.mark.parametrize("name", list(NEW))
@pytest.mark.parametrize("shared", [False, True])
def test_chunked_forward_equals_one_padded_forward(name: str, shared: bool) -> None:
    cut, plain = chunked.models(ARCHITECTURES.get(name), **NEW[name])
    ids, mask, segments, _ = chunked.batch(shared=shared)
    with torch.no_grad():
        got, want = cut(ids, mask, None, segments), plain(ids, mask, None, segments)
    for task in want:
        seg = next(s for s in segments if s.task == task)
        if task == "tag":  # padding positions are not computed: compare real tokens
            keep = mask[seg.start : seg.stop].bool()
            got[task], want[task] = got[task][keep], want[task][keep]
        torch.testing.assert_close(got[task], want[task], atol=chunked.ATOL, rtol=0)
    if name in GATED:  # every chunk's units tallied
        assert cut.tally.units.keys() == plain.tally.units.keys()
        for task, sums in plain.tally.sums.items():
            assert float(cut.tally.units[task]) == float(plain.tally.units[task])
            torch.testing.assert_close(cut.tally.sums[task], sums, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", list(NEW))
def test_new_modules_train_at_head_lr_pretrained_ones_at_lr(name: str) -> None:
    from polytask.training.optim import build_optimizer

    model = build(name)
    optimizer = build_optimizer(model, lr=1e-4, head_lr=1e-3, weight_decay=0.01)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for n, p in model.named_parameters():
        pretrained = n.startswith(("encoder.", "columns."))
        assert lr_of[id(p)] == (1e-4 if pretrained else 1e-3), n


@pytest.mark.parametrize("name", list(NEW))
def test_describe_rebuilds_the_same_model(name: str) -> None:
    model = build(name)
    again = ARCHITECTURES.get(name)(encoder(), SPECS, **model.describe())
    assert again.describe() == model.describe()
    assert again.state_dict().keys() == model.state_dict().keys()
    for key, value in model.describe().items():
        if key != "pooling":
            assert f"{key}={value!r}" in repr(model)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("cgc", {"shared_experts": 0}, "shared_experts must be >= 1, got 0"),
        ("cgc", {"task_experts": True}, "task_experts must be an integer, got True"),
        ("cgc", {"expert_dropout": 1.0}, "expert_dropout must be in [0, 1), got 1.0"),
        ("ple", {"levels": 0}, "levels must be >= 1, got 0"),
        ("ple", {"levels": 2.0}, "levels must be an integer, got 2.0"),
        ("ple", {"expert_hidden": 0}, "expert_hidden must be >= 1, got 0"),
        ("dselect_k", {"experts": 1, "k": 1}, "experts must be >= 2, got 1"),
        ("dselect_k", {"k": 4}, "k must be in 1..experts (3), got 4"),
        ("dselect_k", {"k": True}, "k must be an integer, got True"),
        ("dselect_k", {"gamma": 0.0}, "gamma must be > 0, got 0.0"),
        ("dselect_k", {"entropy": -1.0}, "entropy must be >= 0, got -1.0"),
        ("dselect_k", {"entropy": False}, "entropy must be a number, got False"),
        ("cross_stitch", {"self_weight": 1.5}, "self_weight must be in [0, 1], got 1.5"),
        ("cross_stitch", {"self_weight": True}, "self_weight must be a number, got True"),
    ],
)
def test_bad_arguments(name: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build(name, **kwargs)


def test_mmoe_rejects_a_bool_expert_count() -> None:
    with pytest.raises(ValueError, match="experts must be an integer, got True"):
        MMoE(encoder(), SPECS, experts=True)
