"""Properties every registered loss weighting must have (enrolled by registry name)."""

from __future__ import annotations

import inspect
import re

import pytest
import torch

from polytask.weighting import WEIGHTINGS, LossWeighting
from tests.contracts.cases import kwargs_for

NAMES = WEIGHTINGS.names()


def make(name: str, n_tasks: int) -> LossWeighting:
    return WEIGHTINGS.get(name)(**kwargs_for(name, n_tasks))


def loss_sequence(n_tasks: int, steps: int = 6, seed: int = 0) -> list[torch.Tensor]:
    """Positive, decreasing-ish losses on different scales (like a real run)."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 2, n_tasks, dtype=torch.float64)
    return [
        scales * (1.0 + torch.rand(n_tasks, generator=g, dtype=torch.float64)) / (1 + 0.3 * k)
        for k in range(steps)
    ]


def run(
    weighting: LossWeighting, losses: list[torch.Tensor], perm: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """The loop's calls: weights, (balancing loss,) regulariser, then observe new losses.

    ``perm`` permutes the tasks of the gradient norms (the losses come permuted already).
    """
    outputs = []
    norms = torch.linspace(0.5, 2.0, weighting.n_tasks, dtype=torch.float64)
    norms = norms if perm is None else norms[perm]
    for step, current in enumerate(losses):
        weights = weighting(current)
        outputs.append(weights.detach().clone())
        outputs.append(weighting.regularizer().detach().reshape(1))
        if weighting.needs_grad_norms:
            outputs.append(weighting.balancing_loss(norms * (1 + step), current).detach()[None])
        weighting.observe(current * 0.9)
    return outputs


def test_every_builtin_is_registered() -> None:
    expected = {"equal", "static", "scale_norm", "uncertainty", "dwa", "rlw", "famo", "gradnorm"}
    assert expected <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_documented_and_configurable(name: str) -> None:
    cls = WEIGHTINGS.get(name)
    assert cls.__doc__ and ">>>" in cls.__doc__
    weighting = make(name, 3)
    for parameter in inspect.signature(cls.__init__).parameters:
        if parameter != "self":
            assert re.search(rf"\b{parameter}=", repr(weighting)), (parameter, repr(weighting))
    with pytest.raises(ValueError):
        WEIGHTINGS.get(name)(**kwargs_for(name, 3) | {"n_tasks": 0})


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n_tasks", [1, 2, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_non_negative_weights(name: str, n_tasks: int, dtype: torch.dtype) -> None:
    """Weights [T] in the losses' dtype, finite and ≥ 0 (unless ``signed_weights``) over a
    run; finite regulariser."""
    weighting = make(name, n_tasks)
    for current in loss_sequence(n_tasks):
        weights = weighting(current.to(dtype))
        assert weights.shape == (n_tasks,) and weights.dtype == dtype
        assert torch.isfinite(weights).all()
        assert weighting.signed_weights or (weights >= 0).all()
        assert weighting.regularizer().shape == () and torch.isfinite(weighting.regularizer())
        weighting.observe(current.to(dtype) * 0.9)


@pytest.mark.parametrize("name", NAMES)
def test_weights_are_not_a_function_of_the_losses_graph(name: str) -> None:
    """The caller's backward of Σ w L must see w as constants w.r.t. the losses."""
    losses = loss_sequence(3)[0].requires_grad_(True)
    weights = make(name, 3)(losses)
    if weights.requires_grad:
        assert torch.autograd.grad(weights.sum(), losses, allow_unused=True)[0] is None


@pytest.mark.parametrize("name", NAMES)
def test_learned_state_reaches_the_optimiser(name: str) -> None:
    """Every nn.Parameter gets a gradient from the caller's one backward of the total."""
    weighting = make(name, 3)
    params = list(weighting.parameters())
    if not params:
        return
    losses = loss_sequence(3)[0].float()
    total = (weighting(losses) * losses).sum() + weighting.regularizer()
    if weighting.needs_grad_norms:
        total = total + weighting.balancing_loss(torch.tensor([0.5, 1.0, 3.0]), losses)
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert any(p.grad.abs().sum() > 0 for p in params if p.grad is not None)


@pytest.mark.parametrize("name", [n for n in NAMES if WEIGHTINGS.get(n).permutation_equivariant])
def test_permutation_equivariant(name: str) -> None:
    perm = torch.tensor([2, 0, 3, 1])
    plain = run(make(name, 4), loss_sequence(4))
    permuted = run(make(name, 4), [x[perm] for x in loss_sequence(4)], perm)
    for a, b in zip(plain, permuted, strict=True):
        torch.testing.assert_close(b, a[perm] if a.shape == (4,) else a)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name: str) -> None:
    """state_dict → new instance → load_state_dict → identical next outputs."""
    losses = loss_sequence(4, steps=8)
    weighting = make(name, 4)
    run(weighting, losses[:5])
    state = weighting.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # safetensors-friendly
    restored = make(name, 4)
    restored.load_state_dict(state)
    for a, b in zip(run(weighting, losses[5:]), run(restored, losses[5:]), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_leaves_global_rng_alone(name: str) -> None:
    rng_before = torch.get_rng_state()
    a, b = run(make(name, 3), loss_sequence(3)), run(make(name, 3), loss_sequence(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert torch.equal(torch.get_rng_state(), rng_before)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_observation_is_ignored(name: str) -> None:
    """An overflowed step's losses (inf/NaN) must not poison the method's history."""
    losses = loss_sequence(3)
    reference, poisoned = make(name, 3), make(name, 3)
    run(reference, losses[:3])
    run(poisoned, losses[:3])
    poisoned.observe(torch.tensor([1.0, float("nan"), float("inf")], dtype=torch.float64))
    for a, b in zip(run(reference, losses[3:]), run(poisoned, losses[3:]), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_rejects_wrong_shapes(name: str) -> None:
    weighting = make(name, 3)
    with pytest.raises(ValueError):
        weighting(torch.ones(4))
    with pytest.raises(ValueError):
        weighting.observe(torch.ones(2, 3))


def test_only_grad_norm_methods_take_grad_norms() -> None:
    for name in NAMES:
        weighting = make(name, 2)
        if not weighting.needs_grad_norms:
            with pytest.raises(NotImplementedError):
                weighting.balancing_loss(torch.ones(2), torch.ones(2))


@pytest.mark.parametrize("name", [n for n in NAMES if not WEIGHTINGS.get(n).needs_all_tasks])
def test_per_task_weights_read_only_their_own_task(name: str) -> None:
    """``needs_all_tasks = False`` promises that task t's weight (and state) depends on L_t
    alone: changing the other tasks' losses, or leaving them out of a step, changes nothing."""
    losses = loss_sequence(3, steps=6)
    whole, other = make(name, 3), make(name, 3)
    subset = make(name, 3)
    for current in losses:
        changed = current.clone()
        changed[1:] = changed[1:] * 7.0 + 3.0
        w, w_other = whole(current), other(changed)
        torch.testing.assert_close(w_other[0], w[0])
        torch.testing.assert_close(subset.subset(current[:1], [0]), w[:1])
        torch.testing.assert_close(subset.regularizer([0]).reshape(()), _term(whole, 0))
        whole.observe(current * 0.9)
        other.observe(changed * 0.9)
        subset.observe_subset(current[:1] * 0.9, [0])


def _term(weighting: LossWeighting, task: int) -> torch.Tensor:
    """Task ``task``'s share of the regulariser (uncertainty: ½ s_t; zero elsewhere)."""
    if hasattr(weighting, "log_vars"):
        return (0.5 * weighting.log_vars[task]).detach().reshape(())
    return weighting.regularizer().detach().reshape(())


@pytest.mark.parametrize("name", [n for n in NAMES if WEIGHTINGS.get(n).needs_all_tasks])
def test_all_task_methods_refuse_subset_steps(name: str) -> None:
    weighting = make(name, 3)
    with pytest.raises(TypeError, match="needs every task"):
        weighting.subset(torch.ones(1), [0])
    with pytest.raises(TypeError, match="needs every task"):
        weighting.observe_subset(torch.ones(1), [0])
