"""Aggregators against independent references: torchjd 0.18, the papers' own code, exact QPs.

Every comparison runs over T = 2..8 and the stress cases of ``tests.contracts.cases``
(random, aligned, conflicting, duplicate, zero, near-parallel, opposed, low-rank, scaled),
in float64. torchjd is a pinned test dependency; ``importorskip`` is only a safety net.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from polytask.aggregation import AGGREGATORS
from tests.contracts.cases import gradient_cases

tj = pytest.importorskip("torchjd.aggregation")
quadprog = pytest.importorskip("quadprog")

SIZES = range(2, 9)


def cases(exclude: tuple[str, ...] = ()) -> Iterator[tuple[int, str, torch.Tensor]]:
    for T in SIZES:
        for case, G in gradient_cases(T, seed=7).items():
            if case not in exclude:
                yield T, case, G


def close(ours: torch.Tensor, ref: torch.Tensor, G: torch.Tensor, rtol: float, label: Any) -> None:
    """``‖ours − ref‖ ≤ rtol · ‖G‖_F``: relative to the gradients' scale, not the update's."""
    error = float((ours - ref).norm())
    assert error <= rtol * float(G.norm()), (label, error, ours, ref)


@pytest.mark.parametrize(("name", "reference"), [("sum", tj.Sum), ("mean", tj.Mean)])
def test_baselines_match_torchjd(name: str, reference: Callable[[], Any]) -> None:
    for T, case, G in cases():
        close(AGGREGATORS.get(name)(T)(G), reference()(G), G, 1e-14, (T, case))


def test_upgrad_matches_torchjd() -> None:
    """Same QP, same solver: agreement to 1e-9 with matched ``reg_eps``/``norm_eps``.

    torchjd's default ``UPGrad()`` (``norm_eps = 1e-4``) is compared to ours configured
    alike; with our default ``norm_eps = 0`` the match is against torchjd given a
    projector with a vanishing ``norm_eps`` (the only default that differs, see UPGrad).
    """
    from torchjd.linalg import QuadprogProjector

    for T, case, G in cases():
        ours = AGGREGATORS.get("upgrad")(T, norm_eps=1e-4)(G)
        close(ours, tj.UPGrad()(G), G, 1e-9, (T, case, "torchjd defaults"))
        projector = QuadprogProjector(norm_eps=1e-300, reg_eps=1e-4)
        ours = AGGREGATORS.get("upgrad")(T)(G)
        close(ours, tj.UPGrad(projector=projector)(G), G, 1e-9, (T, case, "our defaults"))


def test_upgrad_default_differs_from_torchjd_only_for_tiny_gradients() -> None:
    """The documented divergence: torchjd turns into the mean when trace(G Gᵀ) < 1e-4."""
    G = gradient_cases(3, seed=7)["conflicting"] * 1e-3
    torch.testing.assert_close(tj.UPGrad()(G), G.mean(dim=0))
    ours = AGGREGATORS.get("upgrad")(3)(G)
    assert (G @ ours >= -1e-4 * float(torch.trace(G @ G.T))).all()
    assert not torch.allclose(ours, G.mean(dim=0))


def _exact_min_norm(G: torch.Tensor) -> torch.Tensor:
    """The min-norm point of conv{g_t} from an independent formulation: quadprog's QP."""
    gram = (G @ G.T).numpy()
    T = gram.shape[0]
    trace = np.trace(gram)
    if trace == 0:
        return torch.zeros(G.shape[1], dtype=G.dtype)
    constraints = np.hstack([np.ones((T, 1)), np.eye(T)])
    bounds = np.concatenate([[1.0], np.zeros(T)])
    lam = quadprog.solve_qp(gram / trace + 1e-13 * np.eye(T), np.zeros(T), constraints, bounds, 1)[
        0
    ]
    return torch.from_numpy(lam) @ G


def test_mgda_matches_exact_min_norm_point_and_beats_torchjd() -> None:
    """MGDA's update is the unique min-norm point of the hull (weights may be non-unique).

    Against an exact QP solution: agreement to 1e-6 · ‖G‖ (the QP's 1e-13 ridge). torchjd
    runs the paper's Frank–Wolfe loop, which stops when its step ``γ < 1e-3``, so it is
    only approximately optimal: ours must be at least as short, and within 0.05 · ‖G‖.
    """
    for T, case, G in cases():
        ours = AGGREGATORS.get("mgda")(T)(G)
        close(ours, _exact_min_norm(G), G, 1e-6, (T, case))
        theirs = tj.MGDA()(G)
        assert ours.norm() <= theirs.norm() * (1 + 1e-9) + 1e-12, (T, case)
        close(ours, theirs, G, 5e-2, (T, case, "frank-wolfe"))


class Replay:
    """Records the permutations our method draws, then replays them to torchjd.

    Both implementations call ``torch.randperm(n)`` once per task in the same order (ours
    with its private generator, torchjd with the global one); replaying the same draws
    makes their random choices identical, so the results must agree exactly.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = torch.randperm
        self.monkeypatch = monkeypatch
        self.log: list[torch.Tensor] = []

    def record(self) -> None:
        def recording(n: int, *args: Any, **kwargs: Any) -> torch.Tensor:
            drawn = self.real(n, *args, **kwargs)
            self.log.append(drawn.clone())
            return drawn

        self.monkeypatch.setattr(torch, "randperm", recording)

    def replay(self) -> None:
        queue = list(self.log)
        self.log.clear()

        def replaying(n: int, *args: Any, **kwargs: Any) -> torch.Tensor:
            drawn = queue.pop(0)
            assert len(drawn) == n
            return drawn

        self.monkeypatch.setattr(torch, "randperm", replaying)


def test_pcgrad_matches_torchjd_given_the_same_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    replay = Replay(monkeypatch)
    for T, case, G in cases():
        replay.record()
        ours = AGGREGATORS.get("pcgrad")(T, seed=T)(G)
        replay.replay()
        close(ours, tj.PCGrad()(G), G, 1e-12, (T, case))


def test_gradvac_matches_torchjd_over_several_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stateful: four successive calls, the EMA targets evolving identically.

    We trace-normalise the Gramian, which rescales ``eps``; with ``eps = 0`` on both sides
    the arithmetic is the same (cases with a zero row keep ``eps = 1e-8``, and agree to
    1e-7 · ‖G‖, since the other rows have norms of order 1).
    """
    replay = Replay(monkeypatch)
    for T in SIZES:
        for case, G in gradient_cases(T, seed=7).items():
            eps = 1e-8 if (G.norm(dim=1) == 0).any() else 0.0
            ours, theirs = AGGREGATORS.get("gradvac")(T, eps=eps), tj.GradVac(eps=eps)
            steps = [G, G.flip(1), G * torch.linspace(0.5, 2, G.shape[1], dtype=G.dtype), G]
            if case == "opposed":  # cosine −1 meets a target → −1: the branch φ < φ̂ is a tie
                steps = steps[:1]  # that rounding decides, so only the first call is compared
            for step, H in enumerate(steps):
                replay.record()
                mine = ours(H)
                replay.replay()
                close(mine, theirs(H), H, 1e-9 if eps == 0 else 1e-7, (T, case, step))


def test_imtl_g_matches_torchjd() -> None:
    """Same pseudo-inverse formula. Near-parallel rows leave an eigenvalue ~1e-12 of the
    largest, above both cut-offs, so the solve amplifies float64 rounding of the Gramian by
    ~1e12: the two (equally valid) answers agree to 1e-2 there; elsewhere to 1e-9."""
    for T, case, G in cases():
        rtol = {"near_parallel": 1e-2, "scaled": 1e-6}.get(case, 1e-9)
        close(AGGREGATORS.get("imtl_g")(T)(G), tj.IMTLG()(G), G, rtol, (T, case))


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
def test_aligned_mtl_matches_torchjd(scale_mode: str) -> None:
    """torchjd averages the aligned gradients; the official code (and ours) sums them, so
    torchjd gets ``pref_vector = 1``. Both eigendecompose ``G Gᵀ``, whose condition number
    in the ``scaled`` case reaches 4e12 (T = 5): float64 then leaves ~eps·κ ≈ 1e-4 in the
    weakest directions, and the two LAPACK paths differ by up to 1.1e-6 ‖G‖ (T = 8, rmse,
    measured with numpy 2.4.6): 1e-5 there, 1e-6 near-parallel, 1e-10 elsewhere."""
    for T, case, G in cases():
        ours = AGGREGATORS.get("aligned_mtl")(T, scale_mode=scale_mode)(G)
        ref = tj.AlignedMTL(pref_vector=torch.ones(T, dtype=G.dtype), scale_mode=scale_mode)(G)
        rtol = {"near_parallel": 1e-6, "scaled": 1e-5}.get(case, 1e-10)
        close(ours, ref, G, rtol, (T, case))


def _official_cagrad(G: torch.Tensor, alpha: float, rescale: int) -> tuple[torch.Tensor, Any]:
    """``cagrad()`` of the paper's repository (Cranial-XIX/CAGrad), transcribed to NumPy.

    SciPy's SLSQP on the dual over the simplex; tolerance tightened from the default so
    the reference is accurate to ~1e-7 (the official code uses SciPy's defaults).
    """
    from scipy.optimize import minimize

    grads = G.numpy().T  # [P, T] as in the official code
    GG = grads.T @ grads
    T = GG.shape[0]
    g0_norm = np.sqrt(GG.mean() + 1e-8)
    x_start = np.ones(T) / T
    c = alpha * g0_norm + 1e-8

    def objective(x: np.ndarray) -> float:
        return float(x @ GG @ x_start + c * np.sqrt(x @ GG @ x + 1e-8))

    res = minimize(
        objective,
        x_start,
        bounds=[(0, 1)] * T,
        constraints={"type": "eq", "fun": lambda x: 1 - x.sum()},
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    gw = grads @ res.x
    g = grads.mean(1) + c / (np.linalg.norm(gw) + 1e-8) * gw
    divisor = {0: 1.0, 1: 1 + alpha**2, 2: 1 + alpha}[rescale]
    return torch.from_numpy(g / divisor), res.x


def _cagrad_dual(G: torch.Tensor, w: torch.Tensor, alpha: float) -> float:
    g0 = G.mean(dim=0)
    gw = w @ G
    return float(g0 @ gw + alpha * g0.norm() * gw.norm())


@pytest.mark.parametrize("rescale", [0, 1, 2])
def test_cagrad_matches_the_official_algorithm(rescale: int) -> None:
    """Against the paper's own SLSQP-based code (torchjd's CAGrad needs cvxpy, not pinned).

    When zero lies in the gradients' hull (``opposed``: g_1 = −g_0; ``zero``: a zero
    gradient) the dual optimum can be ``g_w = 0``, where the official update
    ``g0 + c · g_w / (‖g_w‖ + 1e-8)`` points along solver noise and ours is the limit
    ``g0``; there (and everywhere) we check that our dual value is at least as low as
    SLSQP's. Elsewhere the updates agree to 1e-5 · ‖G‖ (SLSQP's accuracy).
    """
    pytest.importorskip("scipy")
    alpha = 0.4
    divisor = {0: 1.0, 1: 1 + alpha**2, 2: 1 + alpha}[rescale]
    for T, case, G in cases(exclude=("scaled",)):
        agg = AGGREGATORS.get("cagrad")(T, c=alpha, rescale=rescale)
        ref, ref_w = _official_cagrad(G, alpha, rescale)
        if case not in ("opposed", "zero"):
            close(agg(G), ref, G, 1e-5, (T, case))
        # Our coefficients are 1/T + λ/t (λ the dual weights, t > 0), or 1/T when g_w = 0.
        excess = agg.weights(G @ G.T) * divisor - 1.0 / T
        value = 0.0 if excess.abs().max() < 1e-12 else _cagrad_dual(G, excess / excess.sum(), alpha)
        ref_value = _cagrad_dual(G, torch.from_numpy(ref_w), alpha)
        assert value <= ref_value + 1e-9 * float(torch.trace(G @ G.T)), (T, case, value, ref_value)


def test_cagrad_scale_invariance_on_wide_norm_range() -> None:
    """The ``scaled`` case (norms 1e-3 … 1e3) is where SLSQP's absolute tolerances fail;
    there we check the exact property the official code has in exact arithmetic instead:
    the coefficients are invariant to a common rescaling of all gradients."""
    for T in SIZES:
        G = gradient_cases(T, seed=7)["scaled"]
        agg = AGGREGATORS.get("cagrad")(T)
        torch.testing.assert_close(agg.weights(G @ G.T), agg.weights(1e-6 * G @ G.T))


def test_nash_mtl_solves_the_bargaining_equations() -> None:
    """torchjd's NashMTL needs cvxpy/ECOS (not pinned), so the reference is the paper's
    defining condition, ``α_t (G' α)_t = 1`` for the Frobenius-normalised Gramian ``G'``.

    What is solved is ``α_t ((G' + ρI) α)_t = 1`` (ridge ``ρ = 1e-8``): checked on every
    case to 1e-7 (the rounding floor when tasks cancel and ``α`` reaches ``1/√ρ = 1e4``).
    The unregularised equation is then off by ``ρ α_t²``, below 1e-5 where the tasks are
    far from cancelling (full rank, norms within 1e3 of each other); plus the official
    ``max_norm`` clipping.
    """
    for T, case, G in cases():
        agg = AGGREGATORS.get("nash_mtl")(T, max_norm=0.0)
        alpha = agg.weights(G @ G.T).numpy()
        gram = (G @ G.T).numpy()
        gram = gram / np.linalg.norm(gram)
        ridged = alpha * ((gram + 1e-8 * np.eye(T)) @ alpha)
        np.testing.assert_allclose(ridged, 1.0, rtol=1e-7, err_msg=f"{T} {case}")
        full_rank = np.linalg.matrix_rank(G.numpy()) == T
        if full_rank and case not in ("near_parallel", "scaled"):
            exact = alpha * (gram @ alpha)
            np.testing.assert_allclose(exact, 1.0, rtol=1e-5, err_msg=f"{T} {case}")
        clipped = AGGREGATORS.get("nash_mtl")(T, max_norm=0.5)(G)
        unclipped = agg(G)
        norm = float(unclipped.norm())
        expected = unclipped * (0.5 / norm if norm > 0.5 else 1.0)
        torch.testing.assert_close(clipped, expected)
