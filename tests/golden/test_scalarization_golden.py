"""The scalarisations (``stch``, ``geometric_mean``, ``imtl_l``, ``pbi``, ``cosmos``) against
torchjd 0.18's ``torchjd.scalarization``: our weights must be torchjd's ``∂S/∂L``, taken here
by autograd through its scalariser at the same losses (the library itself never calls
autograd), and IMTL-L's learned scales must get torchjd's gradient.

Every (method configuration, T, loss vector) is one test: T = 2…8, float64 losses that are
random positive, with one tiny loss (1e-8), with one huge loss (1e6), all equal, or spread
over 1e-3…1e3. Tolerance: 1e-6 relative (plus 1e-12 of the largest weight, for weights that
cancel to about zero).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torchjd import scalarization as tjd

from polytask.weighting import WEIGHTINGS, LossWeighting
from polytask.weighting.imtl_l import IMTLL

F64 = torch.float64
TS = range(2, 9)
CASES = ("random", "tiny", "huge", "equal", "scaled")
STEPS = 5


def losses_for(case: str, n_tasks: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 * n_tasks + CASES.index(case))
    losses = 0.1 + 2.0 * torch.rand(n_tasks, generator=g, dtype=F64)
    if case == "tiny":
        losses[n_tasks // 2] = 1e-8
    elif case == "huge":
        losses[0] = 1e6
    elif case == "equal":
        losses = torch.full((n_tasks,), 0.7, dtype=F64)
    elif case == "scaled":
        perm = torch.randperm(n_tasks, generator=g)
        losses = torch.logspace(-3, 3, n_tasks, dtype=F64)[perm]
    return losses


def random_vector(n_tasks: int, seed: int, low: float = 0.05) -> torch.Tensor:
    """A fixed positive preference (or reference) for a configuration, summing to 1."""
    g = torch.Generator().manual_seed(seed)
    v = low + torch.rand(n_tasks, generator=g, dtype=F64)
    return v / v.sum()


def torchjd_gradient(scalarizer: Any, losses: torch.Tensor) -> torch.Tensor:
    """``∂S/∂L`` of torchjd's scalariser at ``losses``."""
    x = losses.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(scalarizer(x), x)
    return grad


def assert_same(ours: torch.Tensor, reference: torch.Tensor) -> None:
    assert ours.dtype == F64 and torch.isfinite(reference).all()
    atol = 1e-12 * float(reference.abs().max())
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=atol)


def ours(name: str, n_tasks: int, **kwargs: Any) -> LossWeighting:
    return WEIGHTINGS.get(name)(n_tasks, **kwargs)


def stch_configs(n_tasks: int) -> dict[str, tuple[dict[str, Any], Any]]:
    """name → (our kwargs, torchjd's STCH): the defaults, and sharper μ with λ and z."""
    preference, reference = random_vector(n_tasks, 1), 0.1 * random_vector(n_tasks, 2)
    lists = {"preference": preference.tolist(), "reference": reference.tolist()}
    return {
        "defaults": ({}, tjd.STCH(mu=1.0)),
        "mu0.1": ({"mu": 0.1, **lists}, tjd.STCH(0.1, weights=preference, reference=reference)),
        "mu0.01": ({"mu": 0.01, **lists}, tjd.STCH(0.01, preference, reference)),
    }


def pbi_configs(n_tasks: int) -> dict[str, tuple[dict[str, Any], Any]]:
    uniform = torch.ones(n_tasks, dtype=F64)
    preference, reference = random_vector(n_tasks, 3), 1e-4 * random_vector(n_tasks, 4)
    lists = {"preference": preference.tolist(), "reference": reference.tolist()}
    return {
        "defaults": ({}, tjd.PBI(5.0, weights=uniform)),
        "theta0": ({"theta": 0.0, **lists}, tjd.PBI(0.0, preference, reference)),
        "theta1": ({"theta": 1.0, **lists}, tjd.PBI(1.0, preference, reference)),
    }


def cosmos_configs(n_tasks: int) -> dict[str, tuple[dict[str, Any], Any]]:
    uniform = torch.full((n_tasks,), 1.0 / n_tasks, dtype=F64)
    preference = random_vector(n_tasks, 5)
    listed = {"preference": preference.tolist()}
    return {
        "defaults": ({}, tjd.COSMOS(2.0, weights=uniform)),
        "penalty0.5": ({"penalty": 0.5, **listed}, tjd.COSMOS(0.5, preference)),
        "penalty8": ({"penalty": 8.0, **listed}, tjd.COSMOS(8.0, preference)),
    }


CONFIGS = {"stch": stch_configs, "pbi": pbi_configs, "cosmos": cosmos_configs}
GRID = [
    (name, config, n_tasks, case)
    for name in CONFIGS
    for config in CONFIGS[name](2)
    for n_tasks in TS
    for case in CASES
]


@pytest.mark.parametrize(("name", "config", "n_tasks", "case"), GRID)
def test_fixed_preference_scalarizations_match_torchjd(
    name: str, config: str, n_tasks: int, case: str
) -> None:
    """stch (warmup_steps=0), pbi, cosmos: stateless, so one step is the whole story; the
    same call twice must give the same weights."""
    kwargs, reference = CONFIGS[name](n_tasks)[config]
    weighting, losses = ours(name, n_tasks, **kwargs), losses_for(case, n_tasks)
    expected = torchjd_gradient(reference, losses)
    assert_same(weighting(losses), expected)
    weighting.observe(losses * 0.9)
    assert_same(weighting(losses), expected)


@pytest.mark.parametrize("n_tasks", TS)
@pytest.mark.parametrize("case", CASES)
def test_geometric_mean_matches_torchjd(n_tasks: int, case: str) -> None:
    losses = losses_for(case, n_tasks)
    expected = torchjd_gradient(tjd.GeometricMean(), losses)
    assert_same(ours("geometric_mean", n_tasks)(losses), expected)
    # w_t L_t = G / T for every task: each contributes its relative change
    product = ours("geometric_mean", n_tasks)(losses) * losses
    torch.testing.assert_close(product, product.mean().expand(n_tasks), rtol=1e-12, atol=0)


def test_geometric_mean_refuses_negative_losses() -> None:
    with pytest.raises(ValueError, match="losses >= 0"):
        ours("geometric_mean", 2)(torch.tensor([1.0, -0.5]))


@pytest.mark.parametrize("n_tasks", TS)
@pytest.mark.parametrize("case", CASES)
def test_imtl_l_matches_torchjd_over_steps(n_tasks: int, case: str) -> None:
    """Weights ∂S/∂L and the scales' gradient (our Σ w L + regularizer vs torchjd's IMTLL),
    over SGD steps on the scales from a random start, each side stepping on its own grads."""
    weighting, reference = IMTLL(n_tasks).double(), tjd.IMTLL(n_tasks).double()
    g = torch.Generator().manual_seed(n_tasks)
    start = torch.randn(n_tasks, generator=g, dtype=F64)
    with torch.no_grad():
        weighting.log_scale.copy_(start)
        reference.log_scale.copy_(start)
    base = losses_for(case, n_tasks)
    for step in range(STEPS):
        losses = base * (1.0 - 0.1 * step)
        weights = weighting(losses)
        assert_same(weights.detach(), torchjd_gradient(reference, losses))
        total = (weights * losses).sum() + weighting.regularizer()
        (our_grad,) = torch.autograd.grad(total, weighting.log_scale)
        (ref_grad,) = torch.autograd.grad(reference(losses), reference.log_scale)
        assert_same(our_grad, ref_grad)
        with torch.no_grad():  # small steps: the huge and tiny losses would overflow e^s
            weighting.log_scale.sub_(1e-3 * our_grad.clamp(-10, 10))
            reference.log_scale.sub_(1e-3 * ref_grad.clamp(-10, 10))
    assert not torch.equal(weighting.log_scale.detach(), start)  # the scales did move


def official_warmup_gradient(losses: torch.Tensor) -> torch.Tensor:
    """The official STCH_MTL warm-up objective ``Σ log(L + 1e-20)``, differentiated."""
    x = losses.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.log(x + 1e-20).sum(), x)
    return grad


def normalised_stch_gradient(scalarizer: Any, losses: torch.Tensor, nadir: torch.Tensor) -> Any:
    """torchjd's STCH on ``log(L / n + 1e-20)``, differentiated in ``L``."""
    x = losses.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(scalarizer(torch.log(x / nadir + 1e-20)), x)
    return grad


@pytest.mark.parametrize("n_tasks", TS)
@pytest.mark.parametrize("case", CASES)
def test_stch_warmup_matches_the_official_procedure(n_tasks: int, case: str) -> None:
    """warmup_steps=3: three steps of Σ log L while the nadir averages the observed losses,
    then torchjd's STCH (μ = 0.5, a preference) on log(L / nadir); 7 steps in all."""
    preference = random_vector(n_tasks, 7)
    weighting = ours("stch", n_tasks, mu=0.5, preference=preference.tolist(), warmup_steps=3)
    reference = tjd.STCH(0.5, weights=preference)
    base, observed = losses_for(case, n_tasks), list[torch.Tensor]()
    for step in range(7):
        losses = base * (1.0 + 0.3 * torch.sin(step + torch.arange(n_tasks, dtype=F64)))
        if step < 3:
            expected = official_warmup_gradient(losses)
        else:
            expected = normalised_stch_gradient(reference, losses, torch.stack(observed).mean(0))
        assert_same(weighting(losses), expected)
        after = losses * 0.95
        weighting.observe(after)
        if step < 3:
            observed.append(after)


@pytest.mark.parametrize("n_tasks", [2, 5])
def test_stch_warmup_is_the_official_objective_over_t(n_tasks: int) -> None:
    """Convention: the official objective T μ logsumexp(log(L/n + ε)/μ) (λ = 1) is T times
    ours with ``preference`` all ones."""
    weighting = ours("stch", n_tasks, preference=[1.0] * n_tasks, warmup_steps=1)
    first = losses_for("random", n_tasks)
    weighting(first)
    weighting.observe(first)
    losses = first * torch.linspace(0.5, 1.5, n_tasks, dtype=F64)
    x = losses.clone().requires_grad_(True)
    y = torch.log(x / first + 1e-20)
    shift = y.detach().max()  # the official code subtracts the (detached) max first
    official = 1.0 * torch.log(torch.exp((y - shift) / 1.0).sum()) * n_tasks
    (expected,) = torch.autograd.grad(official, x)
    assert_same(n_tasks * weighting(losses), expected)


@pytest.mark.parametrize("name", ["stch", "pbi", "cosmos"])
def test_uniform_preference_is_permutation_equivariant(name: str) -> None:
    """With their default (uniform) preference and reference, permuting the losses permutes
    the weights (the class flag is false: a given preference is per task)."""
    losses, perm = losses_for("scaled", 6), torch.tensor([3, 0, 5, 1, 4, 2])
    weighting = ours(name, 6)
    torch.testing.assert_close(weighting(losses[perm]), weighting(losses)[perm])


def test_signed_weights_are_real() -> None:
    """PBI and COSMOS push a loss that is too small for the preference ray up (a negative
    weight, as torchjd's gradient has), which is why they declare ``signed_weights``."""
    losses = torch.tensor([0.3, 0.6, 0.9], dtype=F64)
    ones = torch.ones(3, dtype=F64)
    references = {"pbi": tjd.PBI(5.0, ones), "cosmos": tjd.COSMOS(2.0, ones / 3)}
    for name, reference in references.items():
        weights = ours(name, 3)(losses)
        assert weights[0] < 0 and WEIGHTINGS.get(name).signed_weights
        assert_same(weights, torchjd_gradient(reference, losses))
