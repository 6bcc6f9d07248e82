"""Unit tests of the gradient aggregators: each method's defining property and its options."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest
import torch

from polytask.aggregation import AGGREGATORS
from polytask.aggregation.mgda import min_norm_weights
from polytask.errors import ConfigError

F64 = torch.float64


def agg(name: str, n_tasks: int, **kwargs: Any) -> Any:
    return AGGREGATORS.get(name)(n_tasks=n_tasks, **kwargs)


def rows(*vectors: list[float]) -> torch.Tensor:
    return torch.tensor(vectors, dtype=F64)


def random_gradients(n_tasks: int, dim: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(n_tasks, dim, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'pcgrad'"):
        AGGREGATORS.get("pcgard")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("mgda", {"normalization": "max"}),
        ("cagrad", {"c": -0.1}),
        ("cagrad", {"rescale": 3}),
        ("upgrad", {"reg_eps": 0.0}),
        ("gradvac", {"beta": 1.5}),
        ("nash_mtl", {"max_norm": -1.0}),
        ("nash_mtl", {"update_weights_every": 0}),
        ("aligned_mtl", {"scale_mode": "max"}),
        ("pcgrad", {"seed": 1.5}),
    ],
)
def test_hyperparameters_are_validated(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        agg(name, 3, **kwargs)


def test_sum_and_mean() -> None:
    G = rows([1.0, 2.0], [3.0, -4.0])
    torch.testing.assert_close(agg("sum", 2)(G), rows([4.0, -2.0])[0])
    torch.testing.assert_close(agg("mean", 2)(G), rows([2.0, -1.0])[0])


# --- MGDA -------------------------------------------------------------------------------


def test_mgda_min_norm_point_by_hand() -> None:
    """Orthogonal equal gradients meet in the middle; an obtuse pair ends at the vertex."""
    torch.testing.assert_close(agg("mgda", 2)(rows([1, 0], [0, 1])), rows([0.5, 0.5])[0])
    # segment from (1,0) to (2,1): the nearest point to the origin is the vertex (1,0).
    torch.testing.assert_close(
        agg("mgda", 2).weights(rows([1, 0], [2, 1]) @ rows([1, 0], [2, 1]).T), rows([1.0, 0.0])[0]
    )


def test_min_norm_weights_satisfy_the_optimality_conditions() -> None:
    """Wolfe's certificate: weights in the simplex, and g_k · d ≥ ‖d‖² for every k."""
    for seed in range(30):
        T = 2 + seed % 7
        G = random_gradients(T, dim=1 + seed % 9, seed=seed).numpy()
        G[:, 0] += seed % 3
        for start in (None, np.arange(T)):
            lam = min_norm_weights(G @ G.T, start=start)
            d = lam @ G
            assert (lam >= 0).all() and abs(lam.sum() - 1) < 1e-12
            assert (G @ d >= d @ d - 1e-10 * np.trace(G @ G.T)).all()


def test_mgda_l2_normalisation_ignores_gradient_scales() -> None:
    """With ``l2`` each gradient is normalised before solving, so rescaling tasks changes
    nothing in the coefficients (which, as in the paper's code, weight raw gradients)."""
    G = random_gradients(3)
    scaled = G * torch.tensor([[1.0], [10.0], [0.01]], dtype=F64)
    method = agg("mgda", 3, normalization="l2")
    torch.testing.assert_close(method.weights(scaled @ scaled.T), method.weights(G @ G.T))
    assert not torch.allclose(agg("mgda", 3).weights(scaled @ scaled.T), method.weights(G @ G.T))


@pytest.mark.parametrize("normalization", ["loss", "loss+"])
def test_mgda_loss_normalisations(normalization: str) -> None:
    """``loss``: divide g_t by L_t; ``loss+``: by L_t ‖g_t‖ (then solve as ``none``)."""
    G = random_gradients(3, seed=2)
    losses = torch.tensor([0.5, 2.0, 8.0], dtype=F64)
    method = agg("mgda", 3, normalization=normalization)
    assert method.needs_losses and not agg("mgda", 3).needs_losses
    with pytest.raises(ValueError, match="needs the task losses"):
        method(G)
    divisor = losses if normalization == "loss" else losses * G.norm(dim=1)
    H = G / divisor[:, None]
    torch.testing.assert_close(method.weights(G @ G.T, losses), agg("mgda", 3).weights(H @ H.T))
    torch.testing.assert_close(method(G, losses), agg("mgda", 3).weights(H @ H.T) @ G)


# --- UPGrad -----------------------------------------------------------------------------


def test_upgrad_is_the_mean_without_conflict() -> None:
    """Projections onto the dual cone leave non-conflicting gradients unchanged."""
    G = random_gradients(4).abs()
    torch.testing.assert_close(agg("upgrad", 4)(G), G.mean(dim=0), rtol=1e-4, atol=1e-4)


def test_upgrad_without_quadprog_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_quadprog(name: str, *args: Any) -> Any:
        if name == "quadprog":
            raise ImportError("No module named 'quadprog'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_quadprog)
    with pytest.raises(ImportError, match=r'pip install "quadprog==0\.1\.14"'):
        agg("upgrad", 2)


# --- IMTL-G -----------------------------------------------------------------------------


def test_imtl_g_equal_projections() -> None:
    """d · g_t / ‖g_t‖ is the same for every task, and the coefficients sum to 1."""
    for T in (2, 3, 5):
        G = random_gradients(T, seed=T)
        c = agg("imtl_g", T).weights(G @ G.T)
        projections = (G @ (c @ G)) / G.norm(dim=1)
        torch.testing.assert_close(projections, projections[0].expand(T))
        torch.testing.assert_close(c.sum(), torch.tensor(1.0, dtype=F64))


def test_imtl_g_all_zero_gives_no_update() -> None:
    assert agg("imtl_g", 3)(torch.zeros(3, 4)).abs().max() == 0


# --- CAGrad -----------------------------------------------------------------------------


def test_cagrad_without_radius_is_the_mean() -> None:
    G = random_gradients(4)
    torch.testing.assert_close(agg("cagrad", 4, c=0.0)(G), G.mean(dim=0))


def test_cagrad_solves_its_primal_problem() -> None:
    """``d`` (rescale 0) lies in the ball ‖d − g0‖ ≤ c‖g0‖ and its worst task improvement
    ``min_t g_t · d`` beats every one of 2000 random points of that ball."""
    gen = torch.Generator().manual_seed(5)
    for T in (2, 3, 5, 8):
        G = random_gradients(T, dim=6, seed=T)
        G[:, 0] += 0.5
        d = agg("cagrad", T, c=0.4, rescale=0)(G)
        g0 = G.mean(dim=0)
        radius = 0.4 * g0.norm()
        assert (d - g0).norm() <= radius * (1 + 1e-9)
        directions = torch.randn(2000, G.shape[1], generator=gen, dtype=F64)
        directions = directions / directions.norm(dim=1, keepdim=True)
        radii = radius * torch.rand(2000, 1, generator=gen, dtype=F64) ** (1 / G.shape[1])
        samples = g0 + radii * directions
        assert (G @ d).min() >= (samples @ G.T).min(dim=1).values.max() - 1e-12


def test_cagrad_rescale_divides_the_update() -> None:
    G = random_gradients(3)
    plain = agg("cagrad", 3, rescale=0)(G)
    torch.testing.assert_close(agg("cagrad", 3, rescale=1)(G), plain / (1 + 0.4**2))
    torch.testing.assert_close(agg("cagrad", 3, rescale=2)(G), plain / 1.4)


# --- Aligned-MTL ------------------------------------------------------------------------


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
def test_aligned_mtl_equalises_the_principal_components(scale_mode: str) -> None:
    """The aligned system B G has all its (non-zero) singular values equal to √σ."""
    G = random_gradients(4, seed=3) * torch.tensor([[1.0], [5.0], [0.2], [2.0]], dtype=F64)
    c = agg("aligned_mtl", 4, scale_mode=scale_mode).weights(G @ G.T)
    M = (G @ G.T).numpy()
    values, vectors = np.linalg.eigh(M)
    sigma = {"min": values.min(), "median": np.sort(values)[1], "rmse": values.mean()}[scale_mode]
    B = np.sqrt(sigma) * (vectors / np.sqrt(values)) @ vectors.T
    np.testing.assert_allclose(np.linalg.eigvalsh(B @ M @ B), sigma, rtol=1e-9)
    np.testing.assert_allclose(c.numpy(), B.sum(axis=1), rtol=1e-9)


# --- PCGrad and GradVac -----------------------------------------------------------------


def test_pcgrad_two_tasks_by_hand() -> None:
    G = rows([1, 0], [-1, 1])  # g1 · g2 = −1
    expected = (rows([1, 0])[0] + 0.5 * rows([-1, 1])[0]) + (rows([-1, 1])[0] + rows([1, 0])[0])
    torch.testing.assert_close(agg("pcgrad", 2)(G), expected)
    aligned = rows([1, 0], [1, 1])
    torch.testing.assert_close(agg("pcgrad", 2)(aligned), aligned.sum(dim=0))


def test_pcgrad_seed_controls_the_order() -> None:
    G = random_gradients(5, dim=3, seed=4)  # 5 tasks in 3-D: many conflicts
    outputs = [agg("pcgrad", 5, seed=s)(G) for s in range(8)]
    assert any(not torch.allclose(outputs[0], o) for o in outputs[1:])
    torch.testing.assert_close(agg("pcgrad", 5, seed=3)(G), outputs[3])


def test_gradvac_first_step_is_pcgrad_then_tracks_cosines() -> None:
    """With targets φ̂ = 0 a conflicting pair is made orthogonal (PCGrad's projection); the
    targets then move to β φ."""
    G = rows([1, 0], [-1, 1])
    method = agg("gradvac", 2, beta=0.5)
    torch.testing.assert_close(method(G), agg("pcgrad", 2)(G))
    cosine = -1 / np.sqrt(2)
    np.testing.assert_allclose(method.targets.numpy(), [[0, 0.5 * cosine], [0.5 * cosine, 0]])


# --- Nash-MTL ---------------------------------------------------------------------------


def test_nash_mtl_orthogonal_gradients_get_inverse_norm_weights() -> None:
    """For orthogonal tasks G α = 1/α gives α_t = 1 / ‖g_t‖ (on the normalised Gramian)."""
    G = rows([3, 0, 0], [0, 1, 0], [0, 0, 0.5])
    alpha = agg("nash_mtl", 3, max_norm=0.0).weights(G @ G.T)
    scale = float(torch.linalg.norm(G @ G.T)) ** 0.5
    torch.testing.assert_close(alpha, scale / G.norm(dim=1), rtol=1e-6, atol=0.0)


def test_nash_mtl_reuses_weights_between_updates() -> None:
    method = agg("nash_mtl", 3, max_norm=0.0, update_weights_every=2)
    G, H = random_gradients(3, seed=1), random_gradients(3, seed=2)
    first = method.weights(G @ G.T)
    torch.testing.assert_close(method.weights(H @ H.T), first)  # reused
    assert not torch.allclose(method.weights(H @ H.T), first)  # recomputed on the third call


def test_nash_mtl_cancelling_tasks_stay_finite() -> None:
    G = rows([1, 2], [-1, -2], [0, 0])
    out = agg("nash_mtl", 3)(G)
    assert torch.isfinite(out).all() and out.norm() < 1e-6


# --- shared behaviour -------------------------------------------------------------------


def test_weights_accept_a_float32_gramian_accumulated_elsewhere() -> None:
    """The loop may accumulate G Gᵀ layer by layer in float32 and only call ``weights``
    (a method that ``needs_matrix`` gets the matrix instead: see the contract suite)."""
    G = random_gradients(4).float()
    for name in AGGREGATORS.names():
        if AGGREGATORS.get(name).needs_matrix:
            continue
        c = agg(name, 4).weights(G @ G.T)
        assert c.dtype == torch.float32 and torch.isfinite(c).all()


def test_weights_validate_losses_shape() -> None:
    with pytest.raises(ValueError, match="losses"):
        agg("mean", 3).weights(torch.eye(3), torch.ones(2))
