"""Loss weightings against values computed by hand from the papers' formulas, and against
transcriptions of the official FAMO and GradNorm procedures (run with autograd here, in the
test, which the library itself never does)."""

from __future__ import annotations

import math

import torch
from torch import nn

from polytask.weighting import WEIGHTINGS

F64 = torch.float64


def test_equal_and_static() -> None:
    losses = torch.tensor([3.0, 0.5, 7.0])
    assert WEIGHTINGS.get("equal")(3)(losses).tolist() == [1.0, 1.0, 1.0]
    static = WEIGHTINGS.get("static")(3, weights=[0.2, 1.0, 3.0])
    torch.testing.assert_close(static(losses), torch.tensor([0.2, 1.0, 3.0]))


def test_scale_norm_ema_by_hand() -> None:
    """m ← β m + (1 − β) L: observe [2, 4] then [4, 8] with β = 0.5 → m = [3, 6]."""
    weighting = WEIGHTINGS.get("scale_norm")(2, momentum=0.5)
    torch.testing.assert_close(weighting(torch.tensor([4.0, 0.5])), torch.tensor([0.25, 2.0]))
    weighting.observe(torch.tensor([2.0, 4.0]))
    weighting.observe(torch.tensor([4.0, 8.0]))
    torch.testing.assert_close(weighting(torch.tensor([9.0, 9.0])), torch.tensor([1 / 3, 1 / 6]))


def test_uncertainty_by_hand() -> None:
    """Kendall et al. eqs. 7 and 10: 1/(2σ²) L + log σ (regression), 1/σ² L + log σ."""
    weighting = WEIGHTINGS.get("uncertainty")(2, kinds=["regression", "classification"])
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([math.log(2.0), -1.0]))
    losses = torch.tensor([3.0, 0.5])
    weights = weighting(losses)
    torch.testing.assert_close(weights, torch.tensor([0.25, math.e]))
    total = (weights * losses).sum() + weighting.regularizer()
    expected = 3.0 / (2 * 2.0) + 0.5 * math.e + 0.5 * math.log(2.0) + 0.5 * (-1.0)
    torch.testing.assert_close(total, torch.tensor(expected))
    total.backward()
    # d/ds [c e^{-s} L + s/2] = −c e^{-s} L + 1/2
    expected_grad = torch.tensor([-0.5 * 0.5 * 3.0 + 0.5, -math.e * 0.5 + 0.5])
    torch.testing.assert_close(weighting.log_vars.grad, expected_grad)


def test_uncertainty_optimum_is_the_loss_scale() -> None:
    """At σ² = L (regression) or σ² = 2L (classification) the gradient in log σ² vanishes."""
    weighting = WEIGHTINGS.get("uncertainty")(2, kinds=["regression", "classification"])
    losses = torch.tensor([4.0, 0.25])
    with torch.no_grad():
        weighting.log_vars.copy_(torch.log(torch.tensor([4.0, 0.5])))
    ((weighting(losses) * losses).sum() + weighting.regularizer()).backward()
    torch.testing.assert_close(weighting.log_vars.grad, torch.zeros(2))


def test_dwa_by_hand() -> None:
    """Liu et al. 2019 eq. 7 with K = 2, T = 2; w = 1 for the first two periods."""
    weighting = WEIGHTINGS.get("dwa")(2, temperature=2.0)
    losses = torch.tensor([1.0, 1.0])
    assert weighting(losses).tolist() == [1.0, 1.0]
    weighting.observe(torch.tensor([1.0, 2.0]))
    assert weighting(losses).tolist() == [1.0, 1.0]
    weighting.observe(torch.tensor([0.5, 2.0]))  # r = [0.5, 1.0]
    e1, e2 = math.exp(0.5 / 2), math.exp(1.0 / 2)
    torch.testing.assert_close(weighting(losses), torch.tensor([2 * e1, 2 * e2]) / (e1 + e2))


def test_dwa_window_averages_a_period() -> None:
    """window = 2: periods are the means of two observations."""
    weighting = WEIGHTINGS.get("dwa")(2, temperature=1.0, window=2)
    for observed in ([1.0, 4.0], [3.0, 4.0], [1.0, 1.0], [1.0, 3.0]):  # means [2,4], [1,2]
        weighting.observe(torch.tensor(observed))
    r = torch.tensor([0.5, 0.5])
    torch.testing.assert_close(weighting(torch.ones(2)), 2 * torch.softmax(r, dim=0).float())


def test_rlw_draws_softmax_of_standard_normals() -> None:
    """Lin et al. 2022: λ = softmax(z), z ~ N(0, I), from the generator seeded by ``seed``."""
    weighting = WEIGHTINGS.get("rlw")(4, seed=11)
    reference = torch.Generator().manual_seed(11)
    for _ in range(3):
        z = torch.randn(4, generator=reference, dtype=F64)
        torch.testing.assert_close(weighting(torch.ones(4, dtype=F64)), torch.softmax(z, dim=0))


class OfficialFAMO:
    """The FAMO class of the official repository (Cranial-XIX/FAMO), on CPU."""

    def __init__(self, n_tasks: int, gamma: float = 0.01, w_lr: float = 0.025) -> None:
        self.min_losses = torch.zeros(n_tasks, dtype=F64)
        self.w = torch.tensor([0.0] * n_tasks, dtype=F64, requires_grad=True)
        self.w_opt = torch.optim.Adam([self.w], lr=w_lr, weight_decay=gamma)

    def get_weighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        self.prev_loss = losses
        z = torch.softmax(self.w, -1)
        D = losses - self.min_losses + 1e-8
        c = (z / D).sum().detach()
        return (D.log() * z / c).sum()

    def update(self, curr_loss: torch.Tensor) -> None:
        delta = (self.prev_loss - self.min_losses + 1e-8).log() - (
            curr_loss - self.min_losses + 1e-8
        ).log()
        with torch.enable_grad():
            d = torch.autograd.grad(torch.softmax(self.w, -1), self.w, grad_outputs=delta.detach())[
                0
            ]
        self.w_opt.zero_grad()
        self.w.grad = d
        self.w_opt.step()


def test_famo_matches_the_official_code() -> None:
    """Same model gradient every step (Σ w L vs the official Σ z log D / c) and same logits."""
    torch.manual_seed(0)
    model = nn.Linear(3, 3).double()
    x, targets = torch.randn(16, 3, dtype=F64), torch.randn(16, 3, dtype=F64)

    def task_losses() -> torch.Tensor:
        return ((model(x) - targets) ** 2).mean(dim=0) * torch.tensor([1.0, 10.0, 0.1], dtype=F64)

    ours, official = WEIGHTINGS.get("famo")(3), OfficialFAMO(3)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(12):
        losses = task_losses()
        official_loss = official.get_weighted_loss(losses)
        (ref_grad,) = torch.autograd.grad(official_loss, model.weight, retain_graph=True)
        (our_grad,) = torch.autograd.grad((ours(losses) * losses).sum(), model.weight)
        torch.testing.assert_close(our_grad, ref_grad, rtol=1e-10, atol=1e-12)
        optimiser.zero_grad()
        model.weight.grad = our_grad
        optimiser.step()
        with torch.no_grad():
            new_losses = task_losses()
        official.update(new_losses)
        ours.observe(new_losses)
        torch.testing.assert_close(ours.logits, official.w.detach(), rtol=1e-10, atol=1e-12)
    assert ours.logits.abs().max() > 1e-3  # the logits did move


def test_gradnorm_by_hand() -> None:
    """Chen et al. 2018 eq. 2 with w = [1, 1], n = [1, 3], L(0) = [2, 2], L = [1, 2], α = 1.

    r = (L/L0) / mean(L/L0) = [2/3, 4/3]; target = mean(w n) r = [4/3, 8/3];
    L_grad = |1 − 4/3| + |3 − 8/3| = 2/3; ∂/∂w = [sign(−1/3)·1, sign(1/3)·3] = [−1, 3].
    """
    weighting = WEIGHTINGS.get("gradnorm")(2, alpha=1.0)
    weighting.balancing_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]))  # records L(0)
    weighting.weights.grad = None
    value = weighting.balancing_loss(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(value, torch.tensor(2.0 / 3.0))
    value.backward()
    torch.testing.assert_close(weighting.weights.grad, torch.tensor([-1.0, 3.0]))


def test_gradnorm_matches_the_paper_procedure_with_autograd() -> None:
    """Reference: G_W^(i) = ‖∇_W (w_i L_i)‖ by autograd through a tiny shared layer W, as in
    the paper's implementation; our balancing loss, fed the norms of ∇_W L_i, must give the
    same L_grad and the same gradient in w."""
    torch.manual_seed(1)
    shared, heads = nn.Linear(4, 5), nn.ModuleList([nn.Linear(5, 1) for _ in range(3)])
    x, y = torch.randn(8, 4), torch.randn(8, 3)
    losses = torch.stack(
        [((h(shared(x)).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)]
    )
    initial = losses.detach() * torch.tensor([1.5, 0.8, 1.1])
    ours = WEIGHTINGS.get("gradnorm")(3, alpha=1.5)
    with torch.no_grad():
        ours.weights.copy_(torch.tensor([0.7, 1.6, 0.7]))
    ours.balancing_loss(torch.ones(3), initial)  # first call records L(0)
    ours.weights.grad = None

    w = ours.weights.detach().clone().requires_grad_(True)
    norms_of_weighted = torch.stack(
        [
            torch.autograd.grad(w[i] * losses[i], shared.weight, create_graph=True)[0].norm()
            for i in range(3)
        ]
    )
    ratio = losses.detach() / initial
    target = (norms_of_weighted.mean() * (ratio / ratio.mean()) ** 1.5).detach()
    reference = (norms_of_weighted - target).abs().sum()
    (reference_grad,) = torch.autograd.grad(reference, w)

    unweighted = torch.stack(
        [
            torch.autograd.grad(losses[i], shared.weight, retain_graph=True)[0].norm()
            for i in range(3)
        ]
    )
    value = ours.balancing_loss(unweighted, losses)
    value.backward()
    torch.testing.assert_close(value, reference.detach())
    torch.testing.assert_close(ours.weights.grad, reference_grad)


def test_gradnorm_renormalises_to_n_tasks() -> None:
    weighting = WEIGHTINGS.get("gradnorm")(3)
    with torch.no_grad():
        weighting.weights.copy_(torch.tensor([2.0, 0.5, -1.0]))
    weighting.observe(torch.ones(3))
    torch.testing.assert_close(weighting.weights.sum(), torch.tensor(3.0))
    assert (weighting.weights > 0).all()
