"""ConFIG, DualProj, FairGrad, Krum, PCD and CR-MOGM against torchjd 0.18 (same inputs).

As in ``test_aggregation_golden``: T = 2..8 and every stress case of
``tests.contracts.cases`` (Krum: the sizes it is defined for), float64, errors relative to
``‖G‖_F`` (:func:`close`); the stateful methods over several successive calls. Each test
asserts how many (method, matrix) pairs it compared, so a loop that silently compares
nothing fails. Where our convention differs from torchjd's, the comparison uses the matched
option and a separate test asserts the documented difference.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from polytask.aggregation import AGGREGATORS
from tests.contracts.cases import gradient_cases
from tests.golden.test_aggregation_golden import SIZES, _exact_min_norm, cases, close

tj = pytest.importorskip("torchjd.aggregation")
from torchjd.aggregation import Weighting  # noqa: E402 - torchjd is present past the skip

N_CASES = 7 * 9  # T = 2..8, nine stress cases each


def build(name: str, T: int, **kwargs: Any) -> Any:
    return AGGREGATORS.get(name)(T, **kwargs)


def steps_of(G: Tensor) -> list[Tensor]:
    """Four successive gradient matrices for the stateful methods (as the GradVac golden)."""
    return [G, G.flip(1), G * torch.linspace(0.5, 2, G.shape[1], dtype=G.dtype), 3.0 * G]


# --- ConFIG -------------------------------------------------------------------------------


def test_config_matches_torchjd() -> None:
    """Same formula, Gramian (eigh of the cosines) vs matrix (torchjd's SVD pinv): 1e-11.

    ``near_parallel`` (two rows 1e-6 apart) is ill-conditioned from the Gramian alone: its
    smallest eigenvalue ~1e-12 carries the ``U⁺ 1`` term, and float64 rounding of the
    Gramian moves it by ~1e-4 (see the next test), so there the bound is 3e-3.
    """
    compared = 0
    for T, case, G in cases():
        rtol = 3e-3 if case == "near_parallel" else 1e-11
        close(build("config", T)(G), tj.ConFIG()(G), G, rtol, (T, case))
        compared += 1
    assert compared == N_CASES


def test_config_near_parallel_gap_is_the_gramians_rounding() -> None:
    """The ``near_parallel`` gap to torchjd is no larger than what a perturbation of the
    Gramian at float64 rounding (1e-16 relative) does to our answer: the limit of any
    Gramian-only method, not an error of ours (a real bug would be O(‖G‖))."""
    for T in SIZES:
        G = gradient_cases(T, seed=7)["near_parallel"]
        gram = G @ G.T
        ours = build("config", T).weights(gram) @ G
        moved = 0.0
        for seed in range(3):
            noise = torch.randn(T, T, generator=torch.Generator().manual_seed(seed), dtype=G.dtype)
            noise = (noise + noise.T) * 1e-16 * float(gram.abs().max())
            moved = max(moved, float((build("config", T).weights(gram + noise) @ G - ours).norm()))
        gap = float((ours - tj.ConFIG()(G)).norm())
        assert gap <= 10.0 * moved + 1e-11 * float(G.norm()), (T, gap, moved)


def test_config_equal_cosines_on_independent_gradients() -> None:
    """The paper's defining property where it holds (linearly independent rows): every task
    gets the same positive cosine with the update, and its length is Σ_t g_t · u."""
    for T, case, G in cases(exclude=("duplicate", "zero", "opposed", "low_rank")):
        update = build("config", T)(G)
        unit = update / update.norm()
        cosines = (G @ unit) / G.norm(dim=1)
        rtol = 1e-3 if case == "near_parallel" else 1e-9
        assert (cosines > 0).all() and float(cosines.max() - cosines.min()) <= rtol, (T, case)
        # near-parallel rows: K's smallest eigenvalues sit at the truncation threshold, and
        # the length Σ g_t · u over the full G differs from the truncated solve's by up to
        # 2.2e-3 (T = 7, numpy 2.4.6) while the cosines still agree to 3e-9
        length_rtol = 1e-2 if case == "near_parallel" else 1e-9
        torch.testing.assert_close(update.norm(), (G @ unit).sum(), rtol=length_rtol, atol=0.0)


# --- DualProj -----------------------------------------------------------------------------


def test_dualproj_matches_torchjd() -> None:
    """Same QP, same solver (UPGrad's helper): 1e-9, with matched ``norm_eps`` as for UPGrad."""
    from torchjd.linalg import QuadprogProjector

    compared = 0
    for T, case, G in cases():
        close(build("dualproj", T, norm_eps=1e-4)(G), tj.DualProj()(G), G, 1e-9, (T, case))
        projector = QuadprogProjector(norm_eps=1e-300, reg_eps=1e-4)
        ref = tj.DualProj(projector=projector)(G)
        close(build("dualproj", T)(G), ref, G, 1e-9, (T, case, "our defaults"))
        compared += 2
    assert compared == 2 * N_CASES


def test_dualproj_default_differs_from_torchjd_only_for_tiny_gradients() -> None:
    """The documented divergence: torchjd's default turns into the mean when
    ``trace(G Gᵀ) < 1e-4``; ours still projects onto the dual cone."""
    G = gradient_cases(3, seed=7)["conflicting"] * 1e-3
    torch.testing.assert_close(tj.DualProj()(G), G.mean(dim=0))
    ours = build("dualproj", 3)(G)
    assert (G @ ours >= -1e-4 * float(torch.trace(G @ G.T))).all()
    assert (G @ G.mean(dim=0) < 0).any() and not torch.allclose(ours, G.mean(dim=0))


# --- FairGrad -----------------------------------------------------------------------------


def fair_residual(gram: Tensor, w: Tensor, alpha: float) -> float:
    """The backward error of ``G w = w^(−1/α)`` (the paper's Equation 4) on the rows of
    nonzero gradients: ``|G w − w^(−1/α)| / (|G| w + w^(−1/α))``, 0 when solved exactly."""
    rows = gram.diagonal() > 0
    target = w.clamp_min(1e-300) ** (-1.0 / alpha)
    error = (gram @ w - target).abs() / (gram.abs() @ w.abs() + target)
    return float(error[rows].max())


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_fairgrad_matches_torchjd_where_it_solves_the_equations(alpha: float) -> None:
    """``max_norm = 0`` (no clipping; torchjd has none). Ours solves the defining equations
    on every case (backward error ≤ 1e-6, ridge included). Against torchjd, by whether an
    exact solution exists, i.e. 0 is not in the gradients' hull (Gordan; the exact min-norm
    point of the other golden file decides):

    * it exists and torchjd's least squares finds it: 1e-6 (our ``ridge = 1e-8``);
    * it does not (a zero row, an opposed pair, rank 2 with T ≥ 4): ``w`` diverges along a
      path on which the update converges; ours stops at the ridge's point, torchjd where
      its iterations end: 1e-3 (measured up to 6e-4, rank 2);
    * torchjd stops with backward error > 1e-6 (mostly ``scaled``, norms 1e-3 … 1e3): not
      a reference; ours must have the smaller error.
    """
    counts = {"exact": 0, "diverging": 0, "torchjd unsolved": 0}
    for T, case, G in cases():
        gram = G @ G.T
        ours = build("fairgrad", T, alpha=alpha, max_norm=0.0)
        mine = ours.weights(gram)
        assert fair_residual(gram, mine, alpha) <= 1e-6, (T, case)
        theirs = tj.FairGradWeighting(alpha)(gram)
        if fair_residual(gram, theirs, alpha) > 1e-6:
            assert fair_residual(gram, mine, alpha) < fair_residual(gram, theirs, alpha)
            counts["torchjd unsolved"] += 1
        elif float(_exact_min_norm(G).norm()) > 1e-9 * float(G.norm()):
            close(ours(G), theirs @ G, G, 1e-6, (T, case))
            counts["exact"] += 1
        else:
            close(ours(G), theirs @ G, G, 1e-3, (T, case, "no exact solution"))
            counts["diverging"] += 1
    assert sum(counts.values()) == N_CASES and counts["exact"] >= 40, counts


def test_fairgrad_default_is_the_official_update_at_alpha_one() -> None:
    """The official code multiplies ``Σ w_t g_t`` by ``T`` then clips it to norm 1; we leave
    the factor out. At ``α = 1`` the update's norm is ``√T ≥ 1`` (``w_t (G w)_t = 1``), so
    both are clipped to the same unit vector; unclipped, ours is torchjd's, not T times."""
    for T, case, G in cases(exclude=("zero", "opposed", "low_rank", "scaled")):
        w = tj.FairGradWeighting(1.0)(G @ G.T)
        official = T * (w @ G)
        official = official / max(1.0, float(official.norm()))
        close(build("fairgrad", T)(G), official, G, 1e-6, (T, case))
        assert float((w @ G).norm()) >= 1.0 - 1e-6


# --- Krum ---------------------------------------------------------------------------------


def krum_scores(G: Tensor, n_byzantine: int, squared: bool) -> Tensor:
    """Blanchard et al.'s scores from the matrix itself (not the Gramian)."""
    distances = torch.cdist(G, G) ** (2 if squared else 1)
    T = G.shape[0]
    others = distances[~torch.eye(T, dtype=torch.bool)].reshape(T, T - 1)
    return others.sort(dim=1).values[:, : T - n_byzantine - 2].sum(dim=1)


def test_krum_matches_torchjd() -> None:
    """torchjd sums distances: compared with ``squared_distances = False``, every
    ``n_byzantine`` in 0..2 and ``n_selected`` in 1..2 a size allows, to 1e-12. Where the
    selection is a tie (always at ``T = n_byzantine + 3``, where scores are nearest-
    neighbour distances), torchjd's ``topk`` picks any tied index and we pick the first:
    there both selections must have the same (minimal) scores and ours the lowest index."""
    compared = ties = 0
    for T, case, G in cases():
        for f in range(3):
            for m in (1, 2):
                if f + 3 > T or m > T:
                    continue
                ours = build("krum", T, n_byzantine=f, n_selected=m, squared_distances=False)
                theirs = tj.Krum(n_byzantine=f, n_selected=m)
                scores = krum_scores(G, f, squared=False)
                ordered = scores.sort().values
                mine = ours.weights(G @ G.T)
                tol = 1e-9 * float(ordered[-1])
                if m < T and ordered[m] - ordered[m - 1] <= tol:
                    picked = theirs.gramian_weighting(G @ G.T)
                    best = scores[mine > 0].sort().values
                    torch.testing.assert_close(best, scores[picked > 0].sort().values)
                    torch.testing.assert_close(best, ordered[:m])
                    better = (scores < ordered[m - 1] - tol).nonzero().flatten().tolist()
                    tied = ((scores - ordered[m - 1]).abs() <= tol).nonzero().flatten().tolist()
                    first = sorted(better + tied[: m - len(better)])
                    assert (mine > 0).nonzero().flatten().tolist() == first, (T, case, f, m)
                    ties += 1
                else:
                    close(ours(G), theirs(G), G, 1e-12, (T, case, f, m))
                    compared += 1
    # (f, m) pairs a size allows: T = 3: 2, T = 4: 4, T ≥ 5: 6; nine cases per size
    assert compared + ties == 9 * (2 + 4 + 6 * 4), (compared, ties)


def test_krum_default_squares_the_distances_as_the_paper() -> None:
    """The documented difference: on five points where the sum of distances and the sum of
    squared distances rank differently, ours (the paper's squares) and torchjd disagree."""
    G = torch.tensor([[-4, -4], [2, 2], [-3, 2], [-1, 1], [-4, 2]], dtype=torch.float64)
    paper = int(krum_scores(G, 0, squared=True).argmin())
    plain = int(krum_scores(G, 0, squared=False).argmin())
    assert paper != plain
    torch.testing.assert_close(build("krum", 5)(G), G[paper])
    torch.testing.assert_close(tj.Krum(n_byzantine=0)(G), G[plain])
    torch.testing.assert_close(build("krum", 5, squared_distances=False)(G), G[plain])


# --- PCD ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.02, 0.3, "per-task"])
def test_pcd_matches_torchjd_over_several_steps(tau: float | str) -> None:
    """Stateful: four calls on the same instance, the EMA of squared norms evolving alike;
    same QP solved exactly by the same (dual active-set) method: 1e-12. ``per-task``: one
    ``τ`` per secondary task (a list here, a tensor for torchjd)."""
    compared = 0
    for T, case, G in cases():
        taus = [0.05 * (j + 1) for j in range(T - 1)]
        ours = build("pcd", T, tau=taus if tau == "per-task" else tau)
        theirs = tj.PCD(tau=torch.tensor(taus, dtype=G.dtype) if tau == "per-task" else tau)
        for step, H in enumerate(steps_of(G)):
            close(ours(H), theirs(H), H, 1e-12, (T, case, step))
            compared += 1
    assert compared == 4 * N_CASES


# --- CR-MOGM ------------------------------------------------------------------------------


class Ours(Weighting[Tensor]):
    """One of our aggregators' coefficients as a torchjd Gramian weighting, so that
    torchjd's ``CRMOGMWeighting`` smooths exactly what our inner method gives."""

    def __init__(self, name: str, T: int) -> None:
        super().__init__()
        self.method = build(name, T)

    def forward(self, gramian: Tensor, /) -> Tensor:
        return self.method.weights(gramian)


def torchjd_inner(name: str) -> Any:
    from torchjd.linalg import QuadprogProjector

    projector = QuadprogProjector(norm_eps=1e-300, reg_eps=1e-4)  # our norm_eps = 0
    weighting = {"upgrad": tj.UPGradWeighting, "dualproj": tj.DualProjWeighting}[name]
    return weighting(projector=projector)


@pytest.mark.parametrize("inner", ["mgda", "pcgrad", "upgrad", "dualproj"])
@pytest.mark.parametrize("alpha", [0.9, 0.5])
def test_cr_mogm_matches_torchjd_over_several_steps(inner: str, alpha: float) -> None:
    """torchjd's CRMOGMWeighting around (a) torchjd's own UPGrad / DualProj weightings,
    which equal ours (see their goldens): 1e-9; (b) our MGDA and PCGrad, whose torchjd
    versions differ (Frank–Wolfe; global RNG), wrapped as torchjd weightings: only the
    smoothing is compared, 1e-12. Four calls each; half the cases start from
    ``initial_weights``."""
    compared = 0
    for index, (T, case, G) in enumerate(cases()):
        start = [1.0 + t for t in range(T)] if index % 2 else None
        ours = build("cr_mogm", T, inner=inner, alpha=alpha, initial_weights=start)
        weighting = torchjd_inner(inner) if inner in ("upgrad", "dualproj") else Ours(inner, T)
        initial = None if start is None else torch.tensor(start, dtype=G.dtype)
        theirs = tj.GramianWeightedAggregator(
            tj.CRMOGMWeighting(weighting, alpha=alpha, initial_weights=initial)
        )
        rtol = 1e-9 if inner in ("upgrad", "dualproj") else 1e-12
        for step, H in enumerate(steps_of(G)):
            close(ours(H), theirs(H), H, rtol, (T, case, step))
            compared += 1
    assert compared == 4 * N_CASES


def test_cr_mogm_smooths_and_is_not_the_inner_method() -> None:
    """After the first call (where it equals the inner method) the update is the EMA, not
    the inner method's answer on the new gradients (so the smoothing cannot be a no-op)."""
    G = gradient_cases(3, seed=7)["conflicting"]
    ours, inner = build("cr_mogm", 3), build("mgda", 3)
    torch.testing.assert_close(ours(G), inner(G))
    H = gradient_cases(3, seed=7)["aligned"]
    expected = 0.9 * inner.weights(G @ G.T) + 0.1 * inner.weights(H @ H.T)
    torch.testing.assert_close(ours.weights(H @ H.T), expected)
    assert not torch.allclose(expected, inner.weights(H @ H.T))


def test_sizes_compared() -> None:
    """The case grid is what the counts above assume (7 sizes x 9 cases)."""
    assert len(list(cases())) == N_CASES and list(SIZES) == list(range(2, 9))
