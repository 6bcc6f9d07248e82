"""``dselect_k``'s gate: the smooth step, the gate against an independent NumPy transcription
of the official TensorFlow gate (google-research/dselect_k_moe), selection of at most ``k``
experts once the steps are binary, the entropy regulariser driving them there, and the
reachability term for expert counts that are not a power of 2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from polytask.models.dselect_k import DSelectGate, DSelectK, smooth_step
from tests.unit import test_chunked_forward as chunked
from tests.unit.test_arch_moe import SPECS, batch, encoder

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread


def official_gate(
    x: np.ndarray, gate: DSelectGate, experts: int, k: int, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """The official ``_compute_example_conditioned_expert_weights`` in NumPy float64. The
    binary matrix is parsed digit by digit: the official ``.astype(bool)`` on the '0'/'1'
    characters makes every entry True under NumPy 2 (non-empty strings)."""
    m = math.ceil(math.log2(experts))
    codes = np.array([[c == "1" for c in np.binary_repr(v, width=m)] for v in range(experts)])
    z = x @ gate.z.weight.detach().double().numpy().T + gate.z.bias.detach().double().numpy()
    z = z.reshape(-1, k, 1, m)
    cubic = (-2 / gamma**3) * z**3 + (3 / (2 * gamma)) * z + 0.5
    steps = np.where(z <= -gamma / 2, 0.0, np.where(z >= gamma / 2, 1.0, cubic))
    selectors = np.where(codes[None, None], steps, 1 - steps).prod(axis=3)  # [B, k, E]
    logits = x @ gate.w.weight.detach().double().numpy().T + gate.w.bias.detach().double().numpy()
    w = np.exp(logits - logits.max(1, keepdims=True))
    w = (w / w.sum(1, keepdims=True))[:, :, None]
    return (w * selectors).sum(axis=1), selectors


def test_smooth_step_is_binary_outside_and_c1_at_the_joins() -> None:
    for gamma in (1.0, 2.5):
        t = torch.linspace(-2 * gamma, 2 * gamma, 401, dtype=torch.float64, requires_grad=True)
        s = smooth_step(t, gamma)
        assert bool((s[t <= -gamma / 2] == 0).all()) and bool((s[t >= gamma / 2] == 1).all())
        inside = t.abs() < gamma / 2
        x = t.detach()[inside]
        expected = -2 * x**3 / gamma**3 + 3 * x / (2 * gamma) + 0.5
        torch.testing.assert_close(s.detach()[inside], expected)
        (slope,) = torch.autograd.grad(s.sum(), t)
        assert bool((slope >= 0).all())
        joins = torch.tensor([-gamma / 2 + 1e-9, gamma / 2 - 1e-9], dtype=torch.float64)
        joins.requires_grad_(True)
        (at,) = torch.autograd.grad(smooth_step(joins, gamma).sum(), joins)
        assert float(at.abs().max()) < 1e-6  # the slope reaches 0 where the flat parts start


@pytest.mark.parametrize(("experts", "k"), [(2, 1), (3, 2), (4, 2), (5, 3), (8, 1)])
def test_gate_matches_the_official_formulas(experts: int, k: int) -> None:
    torch.manual_seed(experts * 10 + k)
    gate = DSelectGate(6, experts, k, gamma=1.0).double()
    with torch.no_grad():  # logits spread over the flat parts and the cubic
        gate.z.weight.normal_(0.0, 0.4)
        gate.w.weight.normal_(0.0, 1.0)
    x = torch.randn(7, 6, dtype=torch.float64)
    weights, selectors, steps = gate(x)
    want_weights, want_selectors = official_gate(x.numpy(), gate, experts, k, 1.0)
    np.testing.assert_allclose(selectors.detach().numpy(), want_selectors, atol=1e-12)
    np.testing.assert_allclose(weights.detach().numpy(), want_weights, atol=1e-12)
    assert steps.shape == (7, k, math.ceil(math.log2(experts)))
    total = weights.sum(-1)
    if experts & (experts - 1) == 0:  # a power of 2: every code is an expert
        torch.testing.assert_close(total, torch.ones_like(total))
    else:
        assert bool((total <= 1 + 1e-12).all())


def test_init_follows_the_official_code_and_codes_are_not_saved() -> None:
    torch.manual_seed(0)
    gate = DSelectGate(32, 5, 2, gamma=2.0).requires_grad_(False)
    assert float(gate.z.weight.abs().max()) <= 2.0 / 100 and float(gate.z.bias.abs().max()) <= 0.02
    assert float(gate.w.weight.abs().max()) <= 0.05 and float(gate.w.bias.abs().max()) <= 0.05
    assert float(gate.w.weight.abs().max()) > 0.04  # uniform over the whole range
    assert gate.codes.tolist()[3] == [False, True, True] and gate.codes.shape == (5, 3)
    assert "codes" not in gate.state_dict()


def test_binary_steps_select_at_most_k_experts() -> None:
    model = DSelectK(encoder(), SPECS, experts=4, k=2).eval()
    ids, mask, segments = batch()
    model(ids, mask, None, segments)
    entry = model.report()["routing"]["tasks"]["cls"]
    assert entry["binary"] == 0.0 and entry["selected"] == 4.0  # at init: all in the cubic
    model.reset_report()
    with torch.no_grad():
        for gate in model.gates.values():
            gate.z.weight.mul_(1e4)  # far into the flat parts
    hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    weights, _, steps = model.gates["tag"](hidden)
    assert bool(((steps == 0) | (steps == 1)).all())
    assert int((weights > 0).sum(-1).max()) <= 2
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    model(ids, mask, None, segments)
    for entry in model.report()["routing"]["tasks"].values():
        assert entry["binary"] == 1.0 and 1.0 <= entry["selected"] <= 2.0


def test_the_entropy_regulariser_alone_drives_the_steps_to_binary() -> None:
    """Official role of the entropy term: sparsity. Minimised alone over the gates (the
    encoder and experts fixed), every step ends exactly 0 or 1, every unit on ≤ k experts."""
    torch.manual_seed(0)
    model = DSelectK(encoder(), SPECS, experts=4, k=2, entropy=1.0, expert_dropout=0.0)
    model.train()
    ids, mask, segments = batch()
    optimizer = torch.optim.Adam(model.gates.parameters(), lr=0.05)
    first = None
    for _ in range(150):
        model(ids, mask, None, segments)
        term = model.regularization()["gate_entropy"]
        first = float(term.detach()) if first is None else first
        optimizer.zero_grad()
        term.backward()
        optimizer.step()
    model.reset_report()
    with torch.no_grad():
        model(ids, mask, None, segments)
    assert term.item() < 0.01 * first
    for entry in model.report()["routing"]["tasks"].values():
        assert entry["binary"] == 1.0 and entry["selected"] <= 2.0


@torch.no_grad()
def by_hand(model: DSelectK, ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Σ over tasks of the per-unit mean of the selectors' entropy and of Σ_i 1/Σ_e s_ie."""
    hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    pooled = (hidden * m).sum(1) / m.sum(1)
    entropy = reach = 0.0
    for i, task in enumerate(("cls", "tag", "reg")):
        rows = slice(3 * i, 3 * i + 3)
        x = hidden[rows][mask[rows].bool()] if task == "tag" else pooled[rows]
        _, selectors, _ = model.gates[task](x)
        entropy += float((-(selectors * torch.log(selectors + 1e-6))).sum((-2, -1)).mean())
        reach += float((1 / selectors.sum(-1)).sum(-1).mean())
    return entropy, reach


def test_regularisers_match_by_hand_and_ignore_padding() -> None:
    model = DSelectK(encoder(), SPECS, experts=3, k=2, entropy=0.5, expert_dropout=0.0).train()
    model.heads.eval()  # no dropout anywhere: the by-hand forward sees the same features
    model.encoder.eval()
    ids, mask, segments = batch()
    model(ids, mask, None, segments)
    terms = model.regularization()
    entropy, reach = by_hand(model, ids, mask)
    assert set(terms) == {"gate_entropy", "gate_reachability"}
    assert terms["gate_entropy"].item() == pytest.approx(0.5 * entropy, rel=1e-5)
    assert terms["gate_reachability"].item() == pytest.approx(reach, rel=1e-5)
    assert reach > 3 * 2  # above its floor k per task: the selectors are not yet saturated
    noisy = torch.where(mask.bool(), ids, torch.randint(1, 100, ids.shape))
    model(noisy, mask, None, segments)
    again = model.regularization()
    assert again["gate_reachability"].item() == pytest.approx(reach, rel=1e-5)
    with torch.no_grad():  # evaluation forwards leave no term behind
        model(ids, mask, None, segments)
    assert model.regularization() == {}
    power_of_2 = DSelectK(encoder(), SPECS, experts=4, k=2).train()
    power_of_2(ids, mask, None, segments)
    assert power_of_2.regularization() == {}  # entropy 0 (the default), every code reachable


def test_regularisers_count_every_chunk() -> None:
    cut, plain = chunked.models(DSelectK, experts=3, k=2, entropy=0.1, expert_dropout=0.0)
    b = chunked.batch()
    for model in (cut, plain):
        model.train()
        for module in model.modules():  # no dropout: the two forwards must agree
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        model(b[0], b[1], None, b[2])
    for key, value in plain.regularization().items():
        torch.testing.assert_close(cut.regularization()[key], value, atol=1e-6, rtol=1e-5)
