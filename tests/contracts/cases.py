"""Shared inputs for the contract and golden suites: gradient matrices and constructor args."""

from __future__ import annotations

from typing import Any

import torch

#: Extra constructor arguments for methods that cannot be built from ``n_tasks`` alone. A
#: newly registered method is enrolled in every contract with ``{}``; if it needs more, the
#: suite fails at construction until a row is added here.
EXTRA_ARGS: dict[str, Any] = {
    "static": lambda n_tasks: {"weights": [1.0 + t for t in range(n_tasks)]},
}


#: The fewest tasks a method is defined for with the arguments above (Krum needs a nearest
#: neighbour besides the ``n_byzantine`` excluded ones: ``n_byzantine + 3``; TrimmedMean keeps
#: ``T − 2 trim_number ≥ 1`` values: ``2 trim_number + 1``). The contract
#: suite checks that smaller sizes are refused at construction and runs the rest.
MIN_TASKS: dict[str, int] = {"krum": 3, "trimmed_mean": 3}


def sizes_for(name: str, sizes: tuple[int, ...] | list[int]) -> list[int]:
    """The sizes among ``sizes`` the method ``name`` is defined for (see :data:`MIN_TASKS`)."""
    return [T for T in sizes if MIN_TASKS.get(name, 1) <= T]


def kwargs_for(name: str, n_tasks: int) -> dict[str, Any]:
    extra = EXTRA_ARGS.get(name)
    return {"n_tasks": n_tasks, **(extra(n_tasks) if extra else {})}


def gradient_cases(n_tasks: int, dim: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Named ``[T, dim]`` float64 gradient matrices that stress the solvers.

    random (generic), aligned (all pairwise dots > 0), conflicting (a strongly opposed
    pair), duplicate (two equal rows), zero (one zero row), near_parallel (two rows 1e-6
    apart), opposed (g_1 = −g_0: zero is in the convex hull), low_rank (rank 2), scaled
    (rows of norms spanning 1e-3 … 1e3).
    """
    g = torch.Generator().manual_seed(seed * 1000 + n_tasks)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    base = randn(n_tasks, dim)
    cases = {"random": base.clone()}
    aligned = base.abs() * 0.3
    aligned[:, 0] += 2.0
    cases["aligned"] = aligned
    if n_tasks == 1:
        cases["zero"] = torch.zeros(1, dim, dtype=torch.float64)
        return cases
    conflicting = base.clone()
    conflicting[1] = -0.8 * conflicting[0] + 0.3 * randn(dim)
    cases["conflicting"] = conflicting
    duplicate = base.clone()
    duplicate[-1] = duplicate[0]
    cases["duplicate"] = duplicate
    zero = base.clone()
    zero[n_tasks // 2] = 0.0
    cases["zero"] = zero
    near = base.clone()
    near[1] = near[0] + 1e-6 * randn(dim)
    cases["near_parallel"] = near
    opposed = base.clone()
    opposed[1] = -opposed[0]
    cases["opposed"] = opposed
    cases["low_rank"] = randn(n_tasks, 2) @ randn(2, dim)
    scales = torch.logspace(-3, 3, n_tasks, dtype=torch.float64)
    cases["scaled"] = base * scales[:, None]
    return cases
