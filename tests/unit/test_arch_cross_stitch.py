"""``cross_stitch`` on the tiny random BERT of the MoE tests: the pretrained start, the stitched
columns against a layer-by-layer recomputation, one T-column pass for tasks sharing rows, the
stitch report, and the encoder checks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from polytask.models.cross_stitch import CrossStitch, stitch_init
from polytask.segments import Segment
from polytask.tasks import TaskSpec
from tests.unit.test_arch_moe import SPECS, batch, encoder

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread


def test_self_weight_one_starts_from_the_pretrained_encoder() -> None:
    ids, mask, _ = batch()
    plain = encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    model = CrossStitch(encoder(), SPECS, self_weight=1.0).eval()
    for column in model.column_states(ids, mask, None):
        torch.testing.assert_close(column, plain, atol=1e-6, rtol=0)
    # outside the model's forward the first column is a plain encoder (the hooks idle)
    alone = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(alone, plain, atol=1e-6, rtol=0)


def by_hand(model: CrossStitch, ids: Tensor) -> list[Tensor]:
    """Rows without padding, every column's layers called one by one, the stitch as
    ``Σ_u α_tu h_u`` between two layers and none after the last."""
    columns = list(model.columns.values())
    states = [c.embeddings(input_ids=ids) for c in columns]
    n = len(columns[0].encoder.layer)
    for i in range(n):
        outs = [c.encoder.layer[i](h) for c, h in zip(columns, states, strict=True)]
        outs = [o[0] if isinstance(o, tuple) else o for o in outs]
        if i == n - 1:
            return outs
        alpha = model.stitches[i].weight
        states = [sum(alpha[t, u] * outs[u] for u in range(len(outs))) for t in range(len(outs))]
    raise AssertionError("unreachable")


def test_columns_match_a_layer_by_layer_recomputation() -> None:
    model = CrossStitch(encoder(), SPECS, self_weight=0.6).eval()
    with torch.no_grad():  # columns that differ, and a stitch that is not symmetric
        for column in list(model.columns.values())[1:]:
            for p in column.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model.stitches[0].weight.add_(0.2 * torch.randn(3, 3))
    ids = torch.randint(1, 100, (4, 9))
    with torch.no_grad():
        got = model.column_states(ids, torch.ones_like(ids), None)
        want = by_hand(model, ids)
    assert len(got) == 3
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert (got[0] - got[1]).abs().max() > 1e-3  # the columns really differ


def test_tasks_on_the_same_rows_share_one_pass_of_every_column() -> None:
    model = CrossStitch(encoder(), SPECS).eval()
    calls = [0]
    for column in model.columns.values():
        column.embeddings.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    ids, mask, _ = batch()
    same_rows = [Segment(s.name, 0, len(ids)) for s in SPECS]
    with torch.no_grad():
        together = model.forward_rows(ids, mask, None, same_rows)
        assert calls[0] == 3  # each column once, for the three tasks
        for seg in same_rows:
            alone = model.forward_rows(ids, mask, None, [seg])
            torch.testing.assert_close(together[seg.task], alone[seg.task])


def test_stitch_init_and_report() -> None:
    alpha = stitch_init(4, 0.7)
    torch.testing.assert_close(alpha.sum(1), torch.ones(4))
    assert alpha[0, 0] == pytest.approx(0.7) and alpha[0, 1] == pytest.approx(0.1)
    assert stitch_init(1, 0.9).tolist() == [[1.0]]
    report = CrossStitch(encoder(), SPECS).report()["cross_stitch"]
    assert report["columns"] == ["cls", "tag", "reg"]
    assert list(report["stitches"]) == ["layer 0 → 1"]  # two layers: one gap
    assert report["stitches"]["layer 0 → 1"][1] == pytest.approx([0.05, 0.9, 0.05])


def test_encoder_checks() -> None:
    from transformers import BertConfig, BertModel

    one = BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=16))  # fmt: skip
    with pytest.raises(ValueError, match="at least 2 layers"):
        CrossStitch(one, SPECS)
    model = CrossStitch(encoder(), SPECS).eval()

    def project(module: nn.Module, args: object, out: object) -> object:
        out.last_hidden_state = out.last_hidden_state * 2  # type: ignore[attr-defined]
        return out

    model.encoder.register_forward_hook(project)  # as a final norm or projection would
    ids, mask, segments = batch()
    with pytest.raises(RuntimeError, match="not its last layer's hidden states"):
        model(ids, mask, None, segments)


def test_many_tasks_warn_of_the_cost() -> None:
    specs = [TaskSpec(name=f"t{i}", type="regression") for i in range(5)]
    with pytest.warns(RuntimeWarning, match="one encoder column per task"):
        CrossStitch(encoder(), specs)
