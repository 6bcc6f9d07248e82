"""A multi-task forward in length chunks: the outputs and the per-task gradients of one
padded forward, at the cost of the real tokens.

A batch of a short task, a long task and a token-level task (rows of 4-6, 40-48 and 10-12
tokens) is cut into chunks, each computed at its own width. Reference: the same model with
``chunks_rows = False`` (one forward padded to the longest row), in eval mode (no dropout),
so the two graphs compute the same function; tolerance 1e-5 (float32, different matmul
shapes).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polytask.autograd.engine import PerTaskGradients
from polytask.models.chunking import chunk_plan
from polytask.models.hard import HardSharing
from polytask.models.switch import SwitchSharing
from polytask.segments import Segment, computed_tokens, plan_chunks
from polytask.tasks import TaskSpec

ATOL = 1e-5
VOCAB, WIDTH = 100, 48
SPECS = [
    TaskSpec(name="short", type="classification", labels=["a", "b", "c"]),
    TaskSpec(name="long", type="regression"),
    TaskSpec(name="tag", type="tagging", labels=["O", "B-x", "I-x"]),
]
SPANS = {"short": (4, 7), "long": (40, 49), "tag": (10, 13)}  # each task's row lengths


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread


def encoder(seed: int = 0) -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertModel(config)


def batch(rows: int = 8, seed: int = 3, shared: bool = False) -> Any:
    """``rows`` rows per task (``shared``: every task reads the same rows of all lengths)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.cat([torch.randint(a, b, (rows,), generator=gen) for a, b in SPANS.values()])
    n = len(lengths)
    if shared:  # lengths mixed along the rows: every task's rows split over every chunk
        lengths = lengths[torch.randperm(n, generator=gen)]
    ids = torch.randint(1, VOCAB, (n, WIDTH), generator=gen)
    mask = (torch.arange(WIDTH)[None, :] < lengths[:, None]).long()
    if shared:
        segments = [Segment(s.name, 0, n) for s in SPECS]
    else:
        segments = [Segment(s.name, i * rows, (i + 1) * rows) for i, s in enumerate(SPECS)]
    size = {s.task: s.stop - s.start for s in segments}
    labels = {
        "short": torch.randint(0, 3, (size["short"],), generator=gen),
        "long": torch.randn(size["long"], generator=gen),
        "tag": torch.randint(0, 3, (size["tag"], WIDTH), generator=gen),
    }
    return ids * mask, mask, segments, labels


def losses(model: nn.Module, b: Any) -> dict[str, Tensor]:
    ids, mask, segments, labels = b
    out = model(ids, mask, None, segments)
    seg = {s.task: s for s in segments}
    keep = mask[seg["tag"].start : seg["tag"].stop].bool()
    return {
        "short": F.cross_entropy(out["short"], labels["short"]),
        "long": F.mse_loss(out["long"].squeeze(-1), labels["long"]),
        "tag": F.cross_entropy(out["tag"][keep], labels["tag"][keep]),
    }


def models(cls: type = HardSharing, **kwargs: Any) -> tuple[Any, Any]:
    """The same weights twice: chunked, and one padded forward."""
    chunked = cls(encoder(), SPECS, **kwargs).eval()
    plain = cls(encoder(), SPECS, **kwargs).eval()
    plain.load_state_dict(chunked.state_dict())
    plain.chunks_rows = False
    return chunked, plain


def test_the_plan_cuts_a_long_task_away_from_the_short_ones() -> None:
    _, mask, segments, _ = batch()
    chunks = chunk_plan(mask, segments)
    assert len(chunks) >= 2
    real = int(mask.sum())
    lengths = mask.sum(1).tolist()
    assert computed_tokens(lengths) <= 1.3 * real  # CHUNK_SLACK
    assert mask.numel() > 2.0 * real  # one padded tensor: more than twice the real tokens
    assert sorted(r for c in chunks for r in c.rows) == list(range(len(lengths)))
    long_rows = set(range(8, 16))
    assert any(set(c.rows) == long_rows for c in chunks)  # the long task alone
    assert plan_chunks([5] * 10) == plan_chunks([5] * 10)[:1]  # even rows: one chunk


@pytest.mark.parametrize("shared", [False, True])
def test_chunked_outputs_equal_one_padded_forward(shared: bool) -> None:
    chunked, plain = models()
    b = batch(shared=shared)
    ids, mask, segments, _ = b
    with torch.no_grad():
        got, want = chunked(ids, mask, None, segments), plain(ids, mask, None, segments)
    assert set(got) == set(want)
    for task in want:
        assert got[task].shape == want[task].shape
        if task == "tag":  # padding positions are not computed: compare real tokens
            seg = next(s for s in segments if s.task == "tag")
            keep = mask[seg.start : seg.stop].bool()
            torch.testing.assert_close(got[task][keep], want[task][keep], atol=ATOL, rtol=0)
        else:
            torch.testing.assert_close(got[task], want[task], atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("single_input", "shared"),
    [("exact", False), ("exact", True), ("representation", True)],
)
def test_per_task_gradients_from_a_chunked_forward_are_those_of_one_forward(
    single_input: str, shared: bool
) -> None:
    """Segments (one backward), exact per-task passes and the representation mode see every
    chunk: the written ``.grad`` and the Gramian equal the unchunked engine's."""
    results = []
    for model in models():
        engine = PerTaskGradients(model, single_input=single_input)  # type: ignore[arg-type]
        model.zero_grad(set_to_none=True)
        b = batch(shared=shared)
        with engine.capture(b[2]):
            lo = losses(model, b)
        stats = engine.backward(lo, lambda g: torch.tensor([0.5, 1.0, 2.0], dtype=g.dtype))
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((stats, grads))
    (chunked, g1), (plain, g2) = results
    expected = (
        "segments" if not shared else ("per-task" if single_input == "exact" else single_input)
    )
    assert chunked.method == plain.method == expected
    torch.testing.assert_close(chunked.gramian, plain.gramian, atol=1e-6, rtol=1e-4)
    assert set(g1) == set(g2) and len(g1) > 10
    for name in g2:
        torch.testing.assert_close(g1[name], g2[name], atol=ATOL, rtol=1e-4, msg=name)


def test_switch_balance_loss_counts_every_chunk() -> None:
    """The load-balancing loss is over every real token of the batch, not the last chunk."""
    chunked, plain = models(SwitchSharing, experts=3, layers=1, top_k=1, balance=0.1)
    b = batch()
    for model in (chunked, plain):
        model.train()
        torch.manual_seed(0)
        for module in model.modules():  # no dropout: the two forwards must agree
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    torch.manual_seed(0)
    chunked(b[0], b[1], None, b[2])
    torch.manual_seed(0)
    plain(b[0], b[1], None, b[2])
    got = chunked.regularization()["load_balance"]
    want = plain.regularization()["load_balance"]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert chunked.report() == plain.report()  # routing shares: the same tokens counted


def test_a_tied_weight_adds_its_layer_and_embedding_pieces_in_either_order() -> None:
    """The MLM head's decoder is the word-embedding matrix: its dense piece and an
    embedding's rows piece meet in any order (a chunked forward calls both per chunk)."""
    from polytask.autograd.pieces import Piece, add_piece

    dense = torch.randn(2, 5, 3)
    rows, values = torch.tensor([1, 3]), torch.randn(2, 2, 3)
    want = dense.clone()
    want[:, rows] += values
    for first, second in ((Piece(dense.clone()), Piece(values, rows)),
                          (Piece(values, rows), Piece(dense.clone()))):  # fmt: skip
        pieces: dict[int, Piece] = {}
        add_piece(pieces, 0, first)
        add_piece(pieces, 0, second)
        torch.testing.assert_close(pieces[0].full(torch.Size([5, 3])), want)
