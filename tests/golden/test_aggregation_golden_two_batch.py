"""MoDo and SDMGrad against torchjd 0.18 on two-batch cross-Gramians; NTKMTL against the
official code's update rule (jianke0604/NTKMTL ``ntkgrad``), written out here.

The matrix families of ``test_aggregation_golden`` (T = 2..8, nine stress cases each,
float64): the first batch's gradients ``G₁`` are the case matrix at seed 7, the second's
``G₂`` the same case at seed 8 (same structure: the zero row, the opposed pair, rank 2 …), and
the method sees ``A = G₁ G₂ᵀ``, as torchjd's weightings do (its docs: "computed from two
independent mini-batches"). Stateful: four successive steps on one instance. Errors relative
to ``‖G₁‖_F + ‖G₂‖_F`` (:func:`close`). Each test asserts how many (method, matrix) pairs
it compared.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor

from polytask.aggregation import AGGREGATORS
from tests.contracts.cases import gradient_cases
from tests.golden.test_aggregation_golden import SIZES, cases, close

tj = pytest.importorskip("torchjd.aggregation")

N_CASES = 7 * 9  # T = 2..8, nine stress cases each


def pairs() -> Iterator[tuple[int, str, Tensor, Tensor]]:
    """Every case as two batches: ``G₁`` (seed 7) and ``G₂`` (the same case at seed 8)."""
    for T, case, G1 in cases():
        yield T, case, G1, gradient_cases(T, seed=8)[case]


def steps_of(G1: Tensor, G2: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Four successive steps: the pair, swapped, rescaled columns, and three times larger."""
    ramp = torch.linspace(0.5, 2, G1.shape[1], dtype=G1.dtype)
    return [(G1, G2), (G2, G1), (G1 * ramp, G2 * ramp), (3.0 * G1, 3.0 * G2)]


def compare(name: str, kwargs: dict[str, Any], reference: Any, rtol: float) -> dict[str, int]:
    """Ours vs torchjd on the cross-Gramian, and the update on the two batches' mean.

    A step where torchjd's own weights move by more than ``rtol`` when ``A`` is perturbed at
    float64 rounding (``10⁻¹⁵`` relative) is an unstable fixed point of the inner iteration
    (SDMGrad's ``lr = 10`` on an opposed pair amplifies a ``10⁻¹⁷`` residual 21-fold per
    iteration): there no two implementations can agree, so ours must only be a point of the
    simplex, and that case's later steps (from another state) are not compared."""
    counts = {"compared": 0, "unstable": 0, "not compared": 0}
    for T, case, G1, G2 in pairs():
        ours, theirs = AGGREGATORS.get(name)(T, **kwargs), reference()
        for step, (H1, H2) in enumerate(steps_of(G1, G2)):
            cross = H1 @ H2.T
            nudged = copy.deepcopy(theirs)  # the same state, for the perturbed input
            mine, ref = ours.weights(cross), theirs(cross)
            if float((nudged(cross * (1 + 1e-15 * noise(T))) - ref).abs().max()) > rtol:
                assert float(mine.min()) >= 0 and abs(float(mine.sum()) - 1) < 1e-9
                counts["unstable"] += 1
                counts["not compared"] += 4 - step
                break
            scale = H1.norm() + H2.norm()
            assert float((mine - ref).abs().max()) <= rtol, (name, T, case, step, mine, ref)
            mean = (H1 + H2) / 2
            close(mine @ mean, ref @ mean, scale, rtol, (name, T, case, step))
            counts["compared"] += 1
    return counts


def noise(T: int) -> Tensor:
    return torch.randn(T, T, generator=torch.Generator().manual_seed(T), dtype=torch.float64)


@pytest.mark.parametrize(("gamma", "rho"), [(0.1, 0.1), (0.01, 0.0), (1.0, 0.5)])
def test_modo_matches_torchjd_over_several_steps(gamma: float, rho: float) -> None:
    """Same ``λ`` recursion and simplex projection: 1e-12 on weights and update."""
    reference = lambda: tj.MoDoWeighting(gamma=gamma, rho=rho)  # noqa: E731
    counts = compare("modo", {"gamma": gamma, "rho": rho}, reference, 1e-12)
    assert counts == {"compared": 4 * N_CASES, "unstable": 0, "not compared": 0}, counts


@pytest.mark.parametrize(
    ("lr", "momentum", "n_iter", "lamda"), [(10.0, 0.5, 20, 0.3), (1.0, 0.0, 5, 0.0)]
)
def test_sdmgrad_matches_torchjd_over_several_steps(
    lr: float, momentum: float, n_iter: int, lamda: float
) -> None:
    """Same scaling, inner SGD with momentum and projection: 1e-9 (twenty projected steps
    at ``lr = 10`` amplify float64 rounding; measured ≤ 1e-12 on most cases)."""
    kwargs = {"lr": lr, "momentum": momentum, "n_iter": n_iter, "lamda": lamda}
    weighting = {**kwargs, "lambda_": lamda}
    del weighting["lamda"]
    reference = lambda: tj.SDMGradWeighting(**weighting)  # noqa: E731
    counts = compare("sdmgrad", kwargs, reference, 1e-9)
    assert counts["compared"] + counts["not compared"] == 4 * N_CASES, counts
    assert counts["unstable"] <= 2 and counts["compared"] >= 4 * N_CASES - 8, counts


@pytest.mark.parametrize("name", ["modo", "sdmgrad"])
def test_cross_gramian_is_not_symmetrised(name: str) -> None:
    """The base class symmetrises a Gramian; a two-batch method must see ``A`` itself:
    ``A`` and ``Aᵀ`` give different weights (and torchjd's on ``A``), so a symmetrising
    implementation could not pass the tests above."""
    G1, G2 = gradient_cases(3, seed=7)["random"], gradient_cases(3, seed=8)["random"]
    A = G1 @ G2.T
    kwargs = {"gamma": 0.01} if name == "modo" else {"n_iter": 1, "lr": 0.01}
    on_a = AGGREGATORS.get(name)(3, **kwargs).weights(A)
    on_t = AGGREGATORS.get(name)(3, **kwargs).weights(A.T)
    assert float((on_a - on_t).abs().max()) > 1e-3


def test_sdmgrad_official_update_is_t_times_ours() -> None:
    """The documented convention: the official ``overwrite_grad`` multiplies the update by
    ``T``; its weights (``(w + λ/T) / (1 + λ)``, written out from OptMN-Lab/sdmgrad's
    ``sdmgrad``, with LibMTL's scale ``mean √max(A_tt, 0)`` where the official code takes
    ``mean √(A_tt + 10⁻⁴)``) are ours."""
    for T in SIZES:
        G1, G2 = gradient_cases(T, seed=7)["random"], gradient_cases(T, seed=8)["random"]
        A = G1 @ G2.T
        w = torch.full((T,), 1.0 / T, dtype=torch.float64)
        a = A / (A.diagonal().clamp(min=0).sqrt().mean() ** 2 + 1e-8)
        velocity = torch.zeros(T, dtype=torch.float64)
        for i in range(20):
            grad = a @ w + 0.3 * a.mean(dim=1)  # official: GG w + λ mean(GG, dim=1)
            velocity = grad if i == 0 else 0.5 * velocity + grad
            w = simplex(w - 10.0 * velocity)
        official = T * ((G2.T @ w + 0.3 * G2.mean(dim=0)) / 1.3)
        ours = AGGREGATORS.get("sdmgrad")(T).weights(A) @ G2
        close(T * ours, official, G2.norm(), 1e-9, T)


def simplex(y: Tensor) -> Tensor:
    """The projection as the official code writes it (sorted cumulative sums)."""
    u = y.sort(descending=True).values
    cssv = u.cumsum(0) - 1.0
    k = torch.arange(1, len(y) + 1, dtype=y.dtype)
    rho = int((u * k > cssv).nonzero()[-1])
    return (y - cssv[rho] / (rho + 1)).clamp(min=0.0)


# --- NTKMTL -------------------------------------------------------------------------------


def official_ntkgrad(G: Tensor, ntk_exp: float) -> tuple[Tensor, Tensor]:
    """jianke0604/NTKMTL ``ntkgrad`` then ``overwrite_grad``: ``w = (tr(GGᵀ)/diag)^e``,
    update ``T · Gᵀ w``; and the size of its terms, ``T Σ_t w_t ‖g_t‖`` (the scale of the
    rounding error of a sum that can cancel, as for the opposed pair)."""
    gtg = G @ G.T
    w = (torch.trace(gtg) / gtg.diagonal()) ** ntk_exp
    T = G.shape[0]
    return T * (w @ G), T * (w.abs() * G.norm(dim=1)).sum()


@pytest.mark.parametrize("ntk_exp", [0.5, 0.75, 1.0])
def test_ntkmtl_is_the_official_update_over_t(ntk_exp: float) -> None:
    """Every case without a zero row (where the official weight is infinite): ours times
    ``T`` is the official update, 1e-12."""
    compared = 0
    for T, case, G in cases(exclude=("zero",)):
        method: Any = AGGREGATORS.get("ntkmtl")
        ours = method(T, ntk_exp=ntk_exp)(G)
        official, size = official_ntkgrad(G, ntk_exp)  # up to 1e10 (scaled): relative
        close(T * ours, official, size, 1e-12, (T, case))
        compared += 1
    assert compared == 7 * 8


def test_ntkmtl_zero_gradient_gets_no_weight() -> None:
    """The documented difference: the official weight of a zero gradient is ``inf`` (a NaN
    update); ours is 0 and the others keep the official ratio ``(tr / ‖g_t‖²)^e``."""
    for T in SIZES:
        G = gradient_cases(T, seed=7)["zero"]
        gtg = G @ G.T
        with torch.no_grad():
            assert not torch.isfinite(official_ntkgrad(G, 0.5)[0]).all()
        c = AGGREGATORS.get("ntkmtl")(T).weights(gtg)
        live = gtg.diagonal() > 0
        assert float(c[~live].abs().max()) == 0.0
        expected = (torch.trace(gtg) / gtg.diagonal()[live]).sqrt()
        torch.testing.assert_close(c[live], expected, rtol=1e-12, atol=0.0)


def test_pairs_compared() -> None:
    """The case grid is what the counts above assume (7 sizes x 9 cases)."""
    assert len(list(pairs())) == N_CASES and list(SIZES) == list(range(2, 9))
