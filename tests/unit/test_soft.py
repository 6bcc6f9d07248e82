"""Soft sharing: the vectorised penalty against the pairwise definition, per-task routing,
parameter accounting, the per-task gradient engine without shared parameters."""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor
from transformers import BertConfig, BertModel

from polytask.autograd.engine import PerTaskGradients
from polytask.models import ARCHITECTURES
from polytask.models.hard import HardSharing
from polytask.models.soft import SoftSharing, layer_index, penalised_names
from polytask.segments import Segment
from polytask.tasks import TaskSpec
from polytask.training.params import count_parameters

LAYERS, HIDDEN, INNER, VOCAB, POSITIONS = 3, 16, 32, 40, 24


def tiny_bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=INNER,
        max_position_embeddings=POSITIONS,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertModel(config)


def specs(n: int) -> list[TaskSpec]:
    kinds = ["classification", "tagging", "regression"]
    out = []
    for i in range(n):
        kind = kinds[i % 3]
        labels = {"classification": ["a", "b", "c"], "tagging": ["O", "B-x"], "regression": []}
        out.append(TaskSpec(name=f"t{i}", type=kind, labels=labels[kind]))
    return out


def perturbed(model: SoftSharing, scale: float = 0.02) -> SoftSharing:
    """Copies start equal (penalty 0): move each copy a different way."""
    with torch.no_grad():
        for enc in model.encoders.values():
            for p in enc.parameters():
                p.add_(torch.randn_like(p) * scale)
    return model


def pairwise(penalty: float, copies: list[list[Tensor]]) -> Tensor:
    """The definition: a loop over pairs × parameters (float64)."""
    total = torch.zeros((), dtype=torch.float64)
    for a, b in itertools.combinations(copies, 2):
        for x, y in zip(a, b, strict=True):
            total = total + ((x.double() - y.double()) ** 2).sum()
    return penalty * total


def test_copies_start_from_the_same_weights_and_are_independent() -> None:
    encoder = tiny_bert()
    model = SoftSharing(encoder, specs(3))
    first, *others = model.encoders.values()
    assert first is encoder
    for other in others:
        assert other is not encoder
        for (n, p), (m, q) in zip(first.named_parameters(), other.named_parameters(), strict=True):
            assert n == m and torch.equal(p, q) and p.data_ptr() != q.data_ptr()
    # equal copies: 0 up to the rounding of the mean (≈1e-7 of the weights, squared)
    assert 0.0 <= model.regularization()["soft_penalty"].item() < 1e-12


@pytest.mark.parametrize(("n_tasks", "penalty"), [(2, 0.3), (3, 1e-3), (5, 2.0)])
def test_penalty_value_and_gradient_match_the_pairwise_definition(
    n_tasks: int, penalty: float
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # T = 5 warns about the cost
        model = perturbed(SoftSharing(tiny_bert(), specs(n_tasks), penalty=penalty))
    value = model.regularization()["soft_penalty"]
    value.backward()
    copies = model.tied_parameters()
    ours = [[p.grad.clone() for p in ps] for ps in copies]  # type: ignore[union-attr]
    leaves = [[p.detach().double().requires_grad_() for p in ps] for ps in copies]
    reference = pairwise(penalty, leaves)
    reference.backward()
    assert value.dtype == torch.float32
    assert math.isclose(value.item(), reference.item(), rel_tol=1e-5)
    c = 2 * penalty * n_tasks
    for got, want in zip(ours, leaves, strict=True):
        for g, leaf in zip(got, want, strict=True):
            assert leaf.grad is not None
            # float32 against float64: the mean's rounding is relative to the weights' size
            atol = 1e-6 * c * float(leaf.abs().max())
            torch.testing.assert_close(g.double(), leaf.grad, rtol=1e-4, atol=atol)
    # the closed form by hand: 2λT(θ_i − θ̄)
    mean = torch.stack([ps[0] for ps in copies]).mean(0)
    expect = 2 * penalty * n_tasks * (copies[1][0] - mean)
    torch.testing.assert_close(ours[1][0], expect.detach(), rtol=1e-4, atol=1e-7)


def test_gradient_accumulates_into_existing_grads_and_scales_with_the_upstream() -> None:
    model = perturbed(SoftSharing(tiny_bert(), specs(3), penalty=0.5))
    p = model.tied_parameters()[2][4]
    (3.0 * model.regularization()["soft_penalty"]).backward()
    once = p.grad.clone()  # type: ignore[union-attr]
    model.regularization()["soft_penalty"].backward()
    torch.testing.assert_close(p.grad, once * (4.0 / 3.0))
    assert once.abs().sum() > 0


def test_top_k_layers_ties_only_the_top_layers() -> None:
    encoder = tiny_bert()
    names = penalised_names(encoder, 2)
    assert names and {layer_index(n) for n in names} == {1, 2}
    assert not any(n.startswith(("embeddings", "pooler")) for n in names)
    everything = penalised_names(encoder, None)
    assert len(everything) == len(list(encoder.parameters())) > len(names)
    model = perturbed(SoftSharing(encoder, specs(3), penalty=0.7, top_k_layers=2))
    value = model.regularization()["soft_penalty"]
    value.backward()
    by_name = [dict(enc.named_parameters()) for enc in model.encoders.values()]
    tied = [[ps[n] for n in names] for ps in by_name]
    assert math.isclose(value.item(), pairwise(0.7, tied).item(), rel_tol=1e-5)
    for ps in by_name:  # embeddings and layer 0 are free: no gradient at all
        assert ps["embeddings.word_embeddings.weight"].grad is None
        assert ps["encoder.layer.0.attention.self.query.weight"].grad is None
        assert ps["encoder.layer.2.output.dense.weight"].grad is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"penalty": -1.0}, "penalty must be >= 0"),
        ({"penalty": float("nan")}, "penalty must be >= 0"),
        ({"top_k_layers": 0}, "top_k_layers must be >= 1"),
        ({"top_k_layers": LAYERS + 1}, f"the encoder has {LAYERS} layers"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SoftSharing(tiny_bert(), specs(2), **kwargs)


def test_warns_once_when_many_tasks() -> None:
    with pytest.warns(RuntimeWarning, match="5 copies"):
        SoftSharing(tiny_bert(), specs(5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SoftSharing(tiny_bert(), specs(4))


def test_zero_penalty_adds_no_term() -> None:
    assert perturbed(SoftSharing(tiny_bert(), specs(2), penalty=0.0)).regularization() == {}


def batch(seed: int = 1) -> tuple[Tensor, Tensor, list[Segment]]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (9, 12), generator=g)
    mask = torch.ones_like(ids)
    lengths = [12, 5, 7, 3, 6, 6, 4, 12, 2]
    for row, n in enumerate(lengths):
        mask[row, n:] = 0
        ids[row, n:] = 0
    segments = [Segment("t0", 0, 3), Segment("t1", 3, 6), Segment("t2", 6, 9)]
    return ids, mask, segments


def test_each_task_reads_only_its_own_encoder() -> None:
    model = perturbed(SoftSharing(tiny_bert(), specs(3))).eval()
    ids, mask, segments = batch()
    out = model(ids, mask, None, segments)
    assert out["t0"].shape == (3, 3) and out["t1"].shape == (3, 12, 2)
    assert out["t2"].shape == (3, 1)
    assert torch.all(out["t1"][:, 7:] == 0)  # trimmed padding comes back as zeros
    out["t1"].sum().backward()
    for task, enc in model.encoders.items():
        touched = any(p.grad is not None for p in enc.parameters())
        assert touched == (task == "t1"), task
    # the same rows alone, untrimmed, through the task's own encoder and head
    hard = HardSharing(model.encoders["t2"], specs(3)).eval()
    hard.heads = model.heads
    alone = hard(ids[6:9], mask[6:9], None, [Segment("t2", 0, 3)])["t2"]
    torch.testing.assert_close(out["t2"], alone, rtol=1e-5, atol=1e-6)


def test_parameter_accounting_by_hand() -> None:
    n_tasks = 3
    model = SoftSharing(tiny_bert(), specs(n_tasks))
    h, f, v, pos, L = HIDDEN, INNER, VOCAB, POSITIONS, LAYERS
    embeddings = v * h + pos * h + 2 * h + 2 * h  # words, positions, token types, LayerNorm
    layer = 4 * (h * h + h) + 2 * h + (h * f + f) + (f * h + h) + 2 * h
    pooler = h * h + h
    encoder = embeddings + L * layer + pooler
    inner = h // 2
    head = {
        "t0": (h * inner + inner) + (inner * 3 + 3),
        "t1": (h * inner + inner) + (inner * 2 + 2),
    }
    head["t2"] = (h * inner + inner) + (inner * 1 + 1)
    counts = count_parameters(model)
    assert counts["shared"] == 0
    assert counts["per_task"] == {t: encoder + head[t] for t in head}
    assert counts["total"] == counts["trainable"] == n_tasks * encoder + sum(head.values())
    assert len(model.encoder_parameters()) == n_tasks * len(list(model.encoder.parameters()))


def test_save_and_rebuild_from_describe() -> None:
    from safetensors.torch import load_model, save_model

    model = perturbed(SoftSharing(tiny_bert(), specs(3), penalty=0.2, top_k_layers=1)).eval()
    rebuilt = ARCHITECTURES.get("soft")(tiny_bert(seed=5), specs(3), **model.describe()).eval()
    assert model.describe() == {
        "pooling": "mean",
        "head_hidden": None,
        "head_dropout": 0.1,
        "penalty": 0.2,
        "top_k_layers": 1,
    }
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, f"{tmp}/m.safetensors")
        missing, unexpected = load_model(rebuilt, f"{tmp}/m.safetensors")
    assert not missing and not unexpected
    ids, mask, segments = batch()
    a, b = model(ids, mask, None, segments), rebuilt(ids, mask, None, segments)
    for task in a:
        assert torch.equal(a[task], b[task])


def test_per_task_gradient_engine_without_shared_parameters() -> None:
    """No shared parameters: one backward, each task's own gradient exactly, Gramian 0."""
    model = perturbed(SoftSharing(tiny_bert(), specs(3), head_dropout=0.0)).train()
    ids, mask, segments = batch()
    targets = {"t0": torch.tensor([0, 2, 1]), "t2": torch.randn(3, 1)}

    def losses() -> dict[str, Tensor]:
        out = model(ids, mask, None, segments)
        return {
            "t0": torch.nn.functional.cross_entropy(out["t0"], targets["t0"]),
            "t1": out["t1"].square().mean(),
            "t2": (out["t2"] - targets["t2"]).square().mean(),
        }

    reference = {}
    for task, loss in losses().items():
        params = [p for _, p in model.task_parameters(task)]
        reference[task] = torch.autograd.grad(2.0 * loss, params, allow_unused=True)
    with pytest.warns(RuntimeWarning, match="shares no parameters"):
        engine = PerTaskGradients(model)
    called = []
    with engine.capture(segments):
        current = losses()
    stats = engine.backward(
        {t: 2.0 * v for t, v in current.items()}, lambda g: called.append(g) or torch.ones(3)
    )
    assert not called  # nothing to combine: the aggregator is not consulted
    assert stats.method == "unshared"
    assert torch.equal(stats.gramian, torch.zeros(3, 3, dtype=torch.float64))
    assert stats.weights.tolist() == [1.0, 1.0, 1.0]
    assert torch.isfinite(stats.cosine).all()
    for task, grads in reference.items():
        for (name, p), g in zip(model.task_parameters(task), grads, strict=True):
            if g is None:
                assert p.grad is None, name
            else:
                torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
