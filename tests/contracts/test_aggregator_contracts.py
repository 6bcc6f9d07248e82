"""Properties every registered gradient aggregator must have (enrolled by registry name)."""

from __future__ import annotations

import inspect
import re

import pytest
import torch

from polytask.aggregation import AGGREGATORS, Aggregator
from polytask.registry import Registry
from tests.contracts.cases import MIN_TASKS, gradient_cases, kwargs_for, sizes_for

NAMES = AGGREGATORS.names()
SIZES = [1, 2, 3, 5, 8]


def make(name: str, n_tasks: int) -> Aggregator:
    return AGGREGATORS.get(name)(**kwargs_for(name, n_tasks))


def all_cases(name: str) -> list[tuple[int, str, torch.Tensor]]:
    return [(T, case, G) for T in sizes_for(name, SIZES) for case, G in gradient_cases(T).items()]


def test_every_builtin_is_registered() -> None:
    assert isinstance(AGGREGATORS, Registry)
    expected = {"sum", "mean", "pcgrad", "cagrad", "mgda", "imtl_g", "gradvac", "nash_mtl"}
    assert expected | {"aligned_mtl", "upgrad"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_documented_and_configurable(name: str) -> None:
    """STYLE 1/4/9: a docstring with an example; every hyperparameter shows in repr."""
    cls = AGGREGATORS.get(name)
    assert cls.__doc__ and ">>>" in cls.__doc__
    agg = make(name, 3)
    for parameter in inspect.signature(cls.__init__).parameters:
        if parameter != "self":
            assert re.search(rf"\b{parameter}=", repr(agg)), (parameter, repr(agg))
    with pytest.raises(ValueError):
        AGGREGATORS.get(name)(**kwargs_for(name, 3) | {"n_tasks": 0})


@pytest.mark.parametrize("name", NAMES)
def test_finite_shape_and_gramian_path(name: str) -> None:
    """Finite output of shape [P] on every stress case, equal to weights(G Gᵀ) @ G; a method
    that ``needs_matrix`` refuses a Gramian and gives the same update and finite weights
    through ``aggregate``."""
    for T, case, G in all_cases(name):
        out = make(name, T)(G)
        assert out.shape == (G.shape[1],) and out.dtype == G.dtype, (T, case)
        assert torch.isfinite(out).all(), (T, case, out)
        if AGGREGATORS.get(name).needs_matrix:
            update, c = make(name, T).aggregate(G)
            assert torch.equal(update, out) and c.shape == (T,) and torch.isfinite(c).all()
            with pytest.raises(ValueError, match="needs the per-task gradient matrix"):
                make(name, T).weights(G @ G.T)
            continue
        c = make(name, T).weights(G @ G.T)
        assert c.shape == (T,) and torch.isfinite(c).all(), (T, case)
        torch.testing.assert_close(c @ G, out, rtol=1e-9, atol=1e-9 * float(G.norm()))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtypes(name: str, dtype: torch.dtype) -> None:
    """Works in float32/float64 (and half precision), returning G's dtype, close to float64."""
    for T in sizes_for(name, (1, 4)):
        G = gradient_cases(T)["random"]
        exact = make(name, T)(G)
        out = make(name, T)(G.to(dtype))
        assert out.dtype == dtype and torch.isfinite(out).all()
        tol = {torch.float32: 1e-3, torch.float64: 1e-9, torch.bfloat16: 5e-2}[dtype]
        torch.testing.assert_close(out.double(), exact, rtol=tol, atol=tol * float(exact.norm()))


@pytest.mark.parametrize("name", NAMES)
def test_single_task_follows_its_gradient(name: str) -> None:
    """With T = 1 the update is a positive multiple of the only gradient (and no NaN at 0);
    a method that needs more tasks (``MIN_TASKS``) refuses fewer at construction."""
    if MIN_TASKS.get(name, 1) > 1:
        for T in range(1, MIN_TASKS[name]):
            with pytest.raises(ValueError):
                make(name, T)
        return
    for G in gradient_cases(1).values():
        out = make(name, 1)(G)
        assert torch.isfinite(out).all()
        if G.norm() > 0:
            cosine = torch.dot(out, G[0]) / (out.norm() * G[0].norm())
            assert cosine > 1 - 1e-9 and out.norm() > 0


@pytest.mark.parametrize("name", [n for n in NAMES if AGGREGATORS.get(n).non_conflicting])
def test_non_conflicting(name: str) -> None:
    """``g_t · update ≥ −tol`` for every task, where the class promises it.

    ``tol = 1e-3 · trace(G Gᵀ) · max|c|`` covers UPGrad's ``reg_eps = 1e-4`` (which relaxes
    each dual-cone constraint by ``reg_eps · trace · c_t``) and Nash-MTL's ridge; a real
    conflict (PCGrad or the mean on the ``conflicting`` case) is orders of magnitude larger.
    """
    for T, case, G in all_cases(name):
        agg = make(name, T)
        c = agg.weights(G @ G.T)
        dots = G @ (c @ G)
        tol = 1e-3 * float(torch.trace(G @ G.T)) * float(c.abs().max())
        assert (dots >= -tol).all(), (T, case, dots, tol)


def test_non_conflict_check_can_fail() -> None:
    """The tolerance above is tight enough to catch the mean on a conflicting pair."""
    G = gradient_cases(2)["conflicting"]
    c = make("mean", 2).weights(G @ G.T)
    tol = 1e-3 * float(torch.trace(G @ G.T)) * float(c.abs().max())
    assert (G @ (c @ G) < -tol).any()


@pytest.mark.parametrize("name", [n for n in NAMES if AGGREGATORS.get(n).permutation_equivariant])
def test_permutation_equivariant(name: str) -> None:
    """Permuting the tasks does not change the update (fresh instances, generic matrices)."""
    for T in sizes_for(name, (2, 3, 5, 8)):
        perm = torch.randperm(T, generator=torch.Generator().manual_seed(T))
        for case in ("random", "aligned", "conflicting", "scaled"):
            G = gradient_cases(T)[case]
            out = make(name, T)(G)
            # atol on the inputs' scale: the "scaled" case has eigenvalues spanning 1e12,
            # where Aligned-MTL's √λ_min is only that accurate.
            torch.testing.assert_close(
                make(name, T)(G[perm]), out, rtol=1e-6, atol=1e-9 * float(G.norm())
            )


def _sequence(T: int) -> list[torch.Tensor]:
    cases = gradient_cases(T, seed=3)
    return [cases[k] for k in ("random", "conflicting", "aligned", "scaled", "random")]


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name: str) -> None:
    """state_dict → new instance → load_state_dict → identical next outputs."""
    T = 4
    sequence = _sequence(T)
    agg = make(name, T)
    for G in sequence[:3]:
        agg(G)
    state = agg.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # safetensors-friendly
    restored = make(name, T)
    restored.load_state_dict(state)
    for G in sequence[3:]:
        assert torch.equal(restored(G), agg(G))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_leaves_global_rng_alone(name: str) -> None:
    """Same construction, same inputs → same outputs; the global torch RNG is not used."""
    T = 5
    rng_before = torch.get_rng_state()
    first, second = make(name, T), make(name, T)
    for G in _sequence(T):
        assert torch.equal(first(G), second(G))
    assert torch.equal(torch.get_rng_state(), rng_before)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_input_gives_nan_and_keeps_state(name: str) -> None:
    """An overflowed step yields NaN (a grad scaler then skips it) and does not touch state."""
    T = 3
    agg = make(name, T)
    agg(gradient_cases(T)["random"])
    before = {k: v.clone() for k, v in agg.state_dict().items()}
    G = gradient_cases(T)["random"].clone()
    G[1, 2] = float("inf")
    assert torch.isnan(agg(G)).all()
    after = agg.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", NAMES)
def test_rejects_wrong_shapes(name: str) -> None:
    agg = make(name, 3)
    with pytest.raises(ValueError):
        agg(torch.randn(4, 5))
    with pytest.raises(ValueError):
        agg.weights(torch.eye(2))


@pytest.mark.parametrize("name", NAMES)
def test_does_not_build_an_autograd_graph(name: str) -> None:
    """The maths never touches autograd: no graph from inputs that require grad."""
    G = gradient_cases(3)["random"].requires_grad_(True)
    out = make(name, 3)(G)
    assert not out.requires_grad and G.grad is None


@pytest.mark.parametrize("name", NAMES)
def test_subset_capability_follows_the_coefficients(name: str) -> None:
    """``needs_all_tasks = False`` (a step of some tasks is scaled by the fixed coefficients)
    and ``needs_shared_gradients = False`` hold exactly for coefficients that never read the
    Gramian: the same for the identity as for a random, conflicting Gramian and its tasks
    reordered (a selection such as Krum's can pick task 0 from two of them)."""
    cls = AGGREGATORS.get(name)
    g = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g[1] = -g[0]
    if cls.needs_matrix:  # the weights it reports, from the matrix (of the same width)
        eye = torch.eye(3, 5, dtype=torch.float64)
        identity = make(name, 3).aggregate(eye)[1]
        fixed = all(
            torch.allclose(identity, make(name, 3).aggregate(h)[1]) for h in (g, g[[1, 2, 0]])
        )
    else:
        identity = make(name, 3).weights(torch.eye(3, dtype=torch.float64))
        fixed = all(
            torch.allclose(identity, make(name, 3).weights(h @ h.T)) for h in (g, g[[1, 2, 0]])
        )
    assert cls.gramian_free == fixed
    assert cls.needs_all_tasks == (not fixed) and cls.needs_shared_gradients == (not fixed)
