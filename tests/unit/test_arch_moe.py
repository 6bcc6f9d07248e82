"""Mixture-of-experts architectures (``mmoe``, ``switch``) on a tiny random BERT: shapes,
routing report, load-balancing loss, pretrained start, exact per-task gradients and the
parameter count by hand."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polytask.autograd.engine import PerTaskGradients
from polytask.models.mmoe import MMoE
from polytask.models.switch import SwitchSharing
from polytask.segments import Segment
from polytask.tasks import TaskSpec
from polytask.training.params import count_parameters
from tests.unit.test_autograd import assert_matches

VOCAB, H, INNER, LAYERS = 100, 32, 64, 2


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread


def encoder(seed: int = 0) -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=H,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=INNER,
        max_position_embeddings=64,
    )
    return BertModel(config).eval()


SPECS = [
    TaskSpec(name="cls", type="classification", labels=["a", "b", "c"]),
    TaskSpec(name="tag", type="tagging", labels=["O", "B-x", "I-x", "B-y", "I-y"]),
    TaskSpec(name="reg", type="regression"),
]


def batch(seed: int = 0, rows: int = 3, length: int = 10) -> tuple[Tensor, Tensor, list[Segment]]:
    """Each task owns ``rows`` rows; rows end in padding (id 0) at random lengths."""
    gen = torch.Generator().manual_seed(seed)
    n = rows * len(SPECS)
    ids = torch.randint(1, VOCAB, (n, length), generator=gen)
    lengths = torch.randint(3, length + 1, (n,), generator=gen)
    lengths[0] = 3  # at least one row with a lot of padding
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    segments = [Segment(s.name, i * rows, (i + 1) * rows) for i, s in enumerate(SPECS)]
    return ids * mask, mask, segments


def losses(model: nn.Module, ids: Tensor, mask: Tensor, segments: list[Segment]) -> Any:
    out = model(ids, mask, None, segments)
    gen = torch.Generator().manual_seed(5)
    result = {}
    for seg in segments:
        logits = out[seg.task]
        if logits.dim() == 3:  # tagging: loss on real tokens
            target = torch.randint(0, logits.shape[-1], logits.shape[:2], generator=gen)
            keep = mask[seg.start : seg.stop].bool()
            result[seg.task] = F.cross_entropy(logits[keep], target[keep])
        elif logits.shape[-1] == 1:
            result[seg.task] = (logits.squeeze(-1) ** 2).mean()
        else:
            target = torch.randint(0, logits.shape[-1], logits.shape[:1], generator=gen)
            result[seg.task] = F.cross_entropy(logits, target)
    return result


def build(name: str, **kwargs: Any) -> Any:
    cls = MMoE if name == "mmoe" else SwitchSharing
    return cls(encoder(), SPECS, **kwargs)


def test_forward_shapes_and_report_shares_sum_to_one() -> None:
    ids, mask, segments = batch()
    for model in (build("mmoe", experts=3), build("switch", experts=3, layers=2, top_k=2)):
        out = model(ids, mask, None, segments)
        assert out["cls"].shape == (3, 3) and out["reg"].shape == (3, 1)
        assert out["tag"].shape == (3, ids.shape[1], 5)
        routing = model.report()["routing"]
        assert set(routing["tasks"]) == {"cls", "tag", "reg"}
        for entry in routing["tasks"].values():
            for shares in entry["shares"].values():
                assert len(shares) == 3 and min(shares) >= 0
                assert sum(shares) == pytest.approx(1.0, abs=1e-5)
        model.reset_report()
        assert model.report() == {}


def test_report_counts_real_units_only_and_accumulates() -> None:
    ids, mask, segments = batch()
    real = {s.task: int(mask[s.start : s.stop].sum()) for s in segments}
    switch = build("switch", layers=1)
    mmoe = build("mmoe")
    for _ in range(2):
        switch(ids, mask, None, segments)
        mmoe(ids, mask, None, segments)
    tasks = switch.report()["routing"]["tasks"]
    assert {t: e["count"] for t, e in tasks.items()} == {t: 2 * n for t, n in real.items()}
    assert list(tasks["cls"]["shares"]) == [f"layer {LAYERS - 1}"]
    tasks = mmoe.report()["routing"]["tasks"]
    assert tasks["tag"]["count"] == 2 * real["tag"] and tasks["tag"]["unit"] == "tokens"
    assert tasks["cls"]["count"] == 6 and tasks["cls"]["unit"] == "examples"


def test_mmoe_shares_are_mean_gate_weights() -> None:
    """Independent recomputation of one task's mean gate weight from the pooled vector."""
    model = build("mmoe", experts=3)
    ids, mask, segments = batch()
    model(ids, mask, None, segments)
    hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    seg = segments[0]
    m = mask[seg.start : seg.stop].unsqueeze(-1).float()
    pooled = (hidden[seg.start : seg.stop] * m).sum(1) / m.sum(1)
    expected = torch.softmax(pooled @ model.gates["cls"].weight.T, dim=-1).mean(0)
    got = torch.tensor(model.report()["routing"]["tasks"]["cls"]["shares"]["gate"])
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("top_k", [1, 2])
def test_switch_starts_from_the_pretrained_function(top_k: int) -> None:
    ids, mask, segments = batch()
    plain = encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    model = build("switch", layers=2, top_k=top_k).eval()
    routed = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (routed - plain).abs().max() < 1e-5
    model(ids, mask, None, segments)
    # the routers are random: tokens really spread over several experts
    shares = model.report()["routing"]["tasks"]["cls"]["shares"]
    assert max(max(s) for s in shares.values()) < 1.0


def test_balance_loss_matches_hand_formula_and_ignores_padding() -> None:
    model = build("switch", layers=2, experts=4, top_k=2, balance=0.5).train()
    for m in model.modules():  # deterministic: no dropout, same routing in both forwards
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    ids, mask, segments = batch()
    probs: list[Tensor] = []
    hooks = [
        layer.router.register_forward_hook(lambda mod, a, out: probs.append(out.softmax(-1)))
        for layer in model.moe
    ]
    model(ids, mask, None, segments)
    got = model.regularization()["load_balance"]
    for h in hooks:
        h.remove()
    expected = torch.tensor(0.0)
    real = mask.bool()
    for p in probs:
        p = p[real]  # [tokens, E]: real tokens only
        chosen = p.topk(2, dim=-1).indices
        f = torch.stack([(chosen == e).any(-1).float().sum() for e in range(4)]) / (2 * len(p))
        expected = expected + 4 * (f * p.mean(0)).sum()
    assert got.item() == pytest.approx(0.5 * expected.item(), rel=1e-5)
    assert got.requires_grad
    # other ids under the padding change nothing: padding counts neither in f nor in P
    noisy = torch.where(mask.bool(), ids, torch.randint(1, VOCAB, ids.shape))
    model(noisy, mask, None, segments)
    assert model.regularization()["load_balance"].item() == pytest.approx(got.item(), rel=1e-6)
    with torch.no_grad():  # evaluation forwards leave no term behind
        model(ids, mask, None, segments)
    assert model.regularization() == {}


def test_balance_zero_adds_no_term() -> None:
    model = build("switch", balance=0.0).train()
    ids, mask, segments = batch()
    model(ids, mask, None, segments)
    assert model.regularization() == {}


@pytest.mark.parametrize(("name", "kwargs"), [("mmoe", {}), ("switch", {"layers": 2})])
def test_per_task_gradients_keep_the_one_backward_segment_split(
    name: str, kwargs: dict[str, Any]
) -> None:
    """Experts run on full-batch rows: the engine splits by segment, exactly, no fallback."""
    model = build(name, **kwargs)
    model.train(False)
    engine = PerTaskGradients(model)
    ids, mask, segments = batch(seed=3)
    c = torch.tensor([0.3, -0.7, 1.1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback would warn
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
    worst = assert_matches(model, stats, ref, c)
    print(f"{name}: segments split, max abs diff {worst:.2e}")


def test_parameter_accounting_by_hand() -> None:
    enc = sum(p.numel() for p in encoder().parameters())
    ffn = H * INNER + INNER + INNER * H + H  # one BERT feed-forward block: two linears
    head = lambda n, width=H: width * (width // 2) + width // 2 + (width // 2) * n + n  # noqa: E731

    p = count_parameters(build("switch", experts=3, layers=2))
    moe_layer = 3 * ffn + H * 3  # three expert copies and a bias-free router
    assert p["shared"] == enc - 2 * ffn + 2 * moe_layer
    assert p["per_task"] == {"cls": head(3), "tag": head(5), "reg": head(1)}
    assert p["total"] == p["trainable"] == p["shared"] + head(3) + head(5) + head(1)

    width = 24
    p = count_parameters(build("mmoe", experts=3, expert_hidden=width))
    gate = H * 3  # bias-free softmax gate per task
    assert p["shared"] == enc + 3 * (H * width + width)
    assert p["per_task"] == {
        "cls": gate + head(3, width),
        "tag": gate + head(5, width),
        "reg": gate + head(1, width),
    }
    assert p["total"] == p["trainable"] == p["shared"] + sum(p["per_task"].values())


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("switch", {"layers": 3}, "layers must be in 1..2"),
        ("switch", {"top_k": 5}, "top_k must be in 1..experts (4)"),
        ("switch", {"balance": -1.0}, "balance must be >= 0"),
        ("mmoe", {"experts": 0}, "experts must be >= 1"),
        ("mmoe", {"expert_dropout": 1.0}, "expert_dropout must be in [0, 1)"),
    ],
)
def test_bad_arguments(name: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build(name, **kwargs)


def test_switch_needs_bert_style_layers() -> None:
    with pytest.raises(ValueError, match="no BERT-style feed-forward layers"):
        SwitchSharing(nn.Linear(2, 2), SPECS)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["mmoe", "switch"])
def test_new_modules_train_at_head_lr_pretrained_ones_at_lr(name: str) -> None:
    from polytask.training.optim import build_optimizer

    model = build(name, experts=3)
    optimizer = build_optimizer(model, lr=1e-4, head_lr=1e-3, weight_decay=0.01)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for n, p in model.named_parameters():
        pretrained = n.startswith("encoder.") and ".router." not in n
        if name == "switch" and ".router." in n:
            assert lr_of[id(p)] == 1e-4, n  # switch's router lives inside the encoder layers
        else:
            assert lr_of[id(p)] == (1e-4 if pretrained else 1e-3), n
