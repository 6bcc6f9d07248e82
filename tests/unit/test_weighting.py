"""Unit tests of the loss weightings: options, validation and each method's own behaviour."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from polytask.errors import ConfigError
from polytask.weighting import WEIGHTINGS


def make(name: str, n_tasks: int, **kwargs: Any) -> Any:
    return WEIGHTINGS.get(name)(n_tasks=n_tasks, **kwargs)


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'famo'"):
        WEIGHTINGS.get("fam")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("static", {"weights": [1.0, 2.0]}),
        ("static", {"weights": [1.0, -1.0, 2.0]}),
        ("static", {"weights": [0.0, 0.0, 0.0]}),
        ("static", {"weights": [1.0, float("nan"), 2.0]}),
        ("scale_norm", {"momentum": 1.0}),
        ("uncertainty", {"kinds": ["regression", "ranking", "regression"]}),
        ("uncertainty", {"kinds": ["regression"]}),
        ("dwa", {"temperature": 0.0}),
        ("dwa", {"window": 0}),
        ("famo", {"lr": 0.0}),
        ("famo", {"betas": (0.9, 1.0)}),
        ("famo", {"min_losses": [0.0]}),
        ("famo", {"update": "previous_batch"}),
        ("gradnorm", {"alpha": -1.0}),
        ("gradnorm", {"lr": 0.0}),
        ("uncertainty", {"lr": -1.0}),
        ("rlw", {"seed": "0"}),
    ],
)
def test_hyperparameters_are_validated(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make(name, 3, **kwargs)


def test_uncertainty_defaults_to_weights_of_one() -> None:
    weighting = make("uncertainty", 3)
    torch.testing.assert_close(weighting(torch.tensor([1.0, 5.0, 9.0])), torch.ones(3))
    assert weighting.kinds == ["classification"] * 3
    assert [name for name, _ in weighting.named_parameters()] == ["log_vars"]


def test_uncertainty_learns_the_loss_scale() -> None:
    """A few hundred SGD steps on Σ w L + regulariser drive σ² to L (regression form)."""
    weighting = make("uncertainty", 2, kinds=["regression", "regression"])
    optimiser = torch.optim.SGD(weighting.parameters(), lr=0.1)
    losses = torch.tensor([0.2, 5.0])
    for _ in range(400):
        optimiser.zero_grad()
        ((weighting(losses) * losses).sum() + weighting.regularizer()).backward()
        optimiser.step()
    torch.testing.assert_close(weighting.log_vars.exp(), losses, rtol=1e-3, atol=1e-4)


def test_scale_norm_guards_zero_losses() -> None:
    weighting = make("scale_norm", 2, eps=1e-6)
    assert torch.isfinite(weighting(torch.tensor([0.0, 1.0]))).all()
    weighting.observe(torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(weighting(torch.ones(2)), torch.tensor([1e6, 1.0]))


def test_dwa_guards_zero_losses() -> None:
    weighting = make("dwa", 2)
    weighting.observe(torch.tensor([0.0, 1.0]))
    weighting.observe(torch.tensor([1.0, 1.0]))
    weights = weighting(torch.ones(2))
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights.sum(), torch.tensor(2.0))


def test_rlw_is_a_random_convex_combination() -> None:
    weighting = make("rlw", 4, seed=0)
    draws = torch.stack([weighting(torch.ones(4)) for _ in range(3000)])
    torch.testing.assert_close(draws.sum(dim=1), torch.ones(3000))
    torch.testing.assert_close(draws.mean(dim=0), torch.full((4,), 0.25), atol=0.01, rtol=0)
    assert draws.std(dim=0).min() > 0.05
    assert not torch.equal(make("rlw", 4, seed=1)(torch.ones(4)), make("rlw", 4)(torch.ones(4)))


def test_famo_observe_without_forward_is_a_no_op() -> None:
    weighting = make("famo", 3)
    weighting.observe(torch.ones(3))
    assert int(weighting.steps) == 0 and weighting.logits.abs().max() == 0


def test_famo_favours_the_task_that_improves_least() -> None:
    """A task whose log-loss does not fall gets more logit mass than one that falls."""
    weighting = make("famo", 2)
    for _ in range(20):
        weighting(torch.tensor([1.0, 1.0]))
        weighting.observe(torch.tensor([0.5, 1.0]))  # task 0 halves, task 1 is stuck
    assert weighting.logits[1] > weighting.logits[0]
    weights = weighting(torch.tensor([1.0, 1.0]))
    assert weights[1] > weights[0]
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))


def test_famo_next_batch_updates_from_consecutive_losses() -> None:
    """next_batch: the logits move on the next forward, exactly as same_batch's observe
    would move them with those losses, and observe itself changes nothing."""
    sequence = [torch.tensor(v) for v in ([1.0, 2.0], [0.6, 1.9], [0.5, 1.7], [0.3, 1.8])]
    same, nxt = make("famo", 2), make("famo", 2, update="next_batch")
    assert same.observes_same_batch and not nxt.observes_same_batch
    for before, after in itertools.pairwise(sequence):
        same(before)
        same.observe(after)
        nxt(before)
        nxt.observe(before)  # the loop's observe with this step's own losses: a no-op
    nxt(sequence[-1])
    assert int(nxt.steps) == int(same.steps) == 3
    torch.testing.assert_close(nxt.logits, same.logits, rtol=0, atol=0)
    assert nxt.logits[1] > nxt.logits[0]  # task 1 falls more slowly


def test_famo_min_losses_shift_the_gap() -> None:
    weighting = make("famo", 2, min_losses=[0.5, 0.0])
    torch.testing.assert_close(weighting(torch.tensor([1.0, 1.0])), torch.tensor([2 / 3, 1 / 3]))


def test_gradnorm_weights_do_not_learn_from_the_task_losses() -> None:
    """Only L_grad trains w: the weighted task loss must leave ``weights.grad`` empty."""
    weighting = make("gradnorm", 2)
    assert weighting.needs_grad_norms
    losses = torch.tensor([1.0, 2.0], requires_grad=True)
    (weighting(losses) * losses).sum().backward()
    assert weighting.weights.grad is None
    with pytest.raises(ValueError, match="grad_norms"):
        weighting.balancing_loss(torch.ones(3), torch.ones(2))


def test_gradnorm_training_equalises_gradient_norms() -> None:
    """With equal training rates, SGD on L_grad drives w_t n_t to a common value."""
    weighting = make("gradnorm", 2, alpha=1.5)
    optimiser = torch.optim.SGD(weighting.parameters(), lr=0.02)
    norms, losses = torch.tensor([1.0, 4.0]), torch.tensor([1.0, 1.0])
    for step in range(400):
        if step == 200:  # L_grad is an L1 objective: SGD oscillates by ~lr·n, so anneal
            optimiser.param_groups[0]["lr"] = 0.002
        optimiser.zero_grad()
        weighting.balancing_loss(norms, losses).backward()
        optimiser.step()
        weighting.observe(losses)
    products = weighting.weights.detach() * norms
    torch.testing.assert_close(products[0], products[1], rtol=0.02, atol=0.0)
    torch.testing.assert_close(weighting.weights.sum(), torch.tensor(2.0))
