"""Unit tests of ConFIG, DualProj, FairGrad, Krum, PCD and CR-MOGM: argument checks and the
properties their docstrings state that the golden file does not compare with torchjd."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from polytask.aggregation import AGGREGATORS

F64 = torch.float64


def agg(name: str, n_tasks: int, **kwargs: Any) -> Any:
    return AGGREGATORS.get(name)(n_tasks=n_tasks, **kwargs)


@pytest.mark.parametrize(
    ("name", "n_tasks", "kwargs"),
    [
        ("dualproj", 3, {"reg_eps": 0.0}),
        ("dualproj", 3, {"norm_eps": -1.0}),
        ("fairgrad", 3, {"alpha": 0.0}),
        ("fairgrad", 3, {"alpha": float("inf")}),
        ("fairgrad", 3, {"max_norm": -1.0}),
        ("fairgrad", 3, {"ridge": 0.0}),
        ("krum", 3, {"n_byzantine": 1}),  # needs T >= 4
        ("krum", 3, {"n_byzantine": -1}),
        ("krum", 3, {"n_byzantine": True}),
        ("krum", 3, {"n_selected": 4}),
        ("krum", 3, {"n_selected": 0}),
        ("krum", 3, {"squared_distances": 1}),
        ("pcd", 3, {"tau": 1.5}),
        ("pcd", 3, {"tau": [0.1]}),  # one value per secondary task: 2
        ("pcd", 3, {"tau": [0.1, -0.1]}),
        ("pcd", 3, {"tau": True}),
        ("pcd", 3, {"beta": 1.0}),
        ("pcd", 3, {"eps": -1.0}),
        ("cr_mogm", 3, {"inner": "sum"}),
        ("cr_mogm", 3, {"inner": "cr_mogm"}),
        ("cr_mogm", 3, {"inner": "pcgard"}),
        ("cr_mogm", 3, {"alpha": 1.5}),
        ("cr_mogm", 3, {"initial_weights": [1.0, 2.0]}),
        ("cr_mogm", 2, {"inner": "krum"}),  # the inner method's own check: T >= 3
    ],
)
def test_hyperparameters_are_validated(name: str, n_tasks: int, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        agg(name, n_tasks, **kwargs)


def test_cr_mogm_names_what_it_refuses() -> None:
    with pytest.raises(ValueError, match="'sum' cannot be smoothed: its coefficients are fixed"):
        agg("cr_mogm", 3, inner="sum")
    with pytest.raises(ValueError, match="did you mean 'pcgrad'"):
        agg("cr_mogm", 3, inner="pcgard")


def test_cr_mogm_checkpoints_its_inner_state() -> None:
    """The inner method is a submodule: PCGrad's generator state is in the state_dict."""
    state = agg("cr_mogm", 3, inner="pcgrad").state_dict()
    assert {"smoothed", "started", "method.rng_state"} <= set(state)


def test_pcd_primary_task_leads() -> None:
    """PCD is not symmetric: the first row is followed, the others only get their share."""
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    update = agg("pcd", 2)(G)
    assert update[0] > 0.99 and 0.0 < update[1] < 0.1  # tau = 0.02 of g_1's progress
    torch.testing.assert_close(update.norm(), torch.tensor(1.0, dtype=F64))


def test_pcd_infeasible_constraints_follow_the_primary() -> None:
    """Two exactly opposed secondary gradients cannot both progress: the update is g_0."""
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=F64)
    torch.testing.assert_close(agg("pcd", 3, tau=0.1)(G), G[0])


def test_fairgrad_clips_to_max_norm() -> None:
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    unclipped = agg("fairgrad", 2, max_norm=0.0)(G)  # norm √2 at α = 1
    torch.testing.assert_close(agg("fairgrad", 2)(G), unclipped / unclipped.norm())
    torch.testing.assert_close(agg("fairgrad", 2, max_norm=5.0)(G), unclipped)


def test_krum_multi_krum_averages_the_best() -> None:
    G = torch.tensor([[1.0, 0.0], [1.1, 0.0], [0.9, 0.1], [-5.0, 5.0]], dtype=F64)
    torch.testing.assert_close(agg("krum", 4, n_selected=3)(G), G[:3].mean(dim=0))
    assert agg("krum", 4, n_selected=1).weights(G @ G.T)[3] == 0.0


def test_config_two_opposed_gradients_give_zero() -> None:
    G = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=F64)
    torch.testing.assert_close(agg("config", 2)(G), torch.zeros(2, dtype=F64))
