"""Solver time of every Gramian aggregator: ``weights()`` alone on a ``T × T`` Gramian.

The per-task cost of a gradient method is the ``T`` per-task gradients (measured in
``benchmarks/step_cost.py``) plus its own maths on the Gramian, which this benchmark times
apart from any model, so that large ``T`` (32) is cheap to measure. One torch thread, float64
Gramians ``G Gᵀ`` of ``[T, 256]`` matrices of three kinds (``random``; ``conflicting``: half
the rows opposed to the others; ``low_rank``: rank 2), ``--calls`` calls per kind with the
state warm as in training (stateful methods see the same kind repeatedly, after
``--warmup`` calls). The figure per (method, T) is the median call over all kinds; ``max``
is the slowest kind's median. Gramian-free aggregators (``sum``, ``mean``) have no solver;
methods that need more than a Gramian (the gradient matrix, a second batch) are listed with
the reason and no time. Writes ``benchmarks/results/solver_time.json``.

    python benchmarks/solver_time.py [--tasks 4 8 32] [--calls 60] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "solver_time.json"
KINDS = ("random", "conflicting", "low_rank")
#: constructor arguments a method cannot be built without (as tests/contracts/cases.py)
EXTRA_ARGS: dict[str, Any] = {}


def _gramian(kind: str, n_tasks: int, seed: int, cross: bool = False) -> Any:
    """``G Gᵀ`` of ``T`` random 256-dimensional gradients of the ``kind``; ``cross``: the
    two-batch methods' ``G₁ G₂ᵀ``, with ``G₂`` another noisy batch of the same gradients."""
    import torch

    g = torch.Generator().manual_seed(seed * 7919 + n_tasks)
    dim = 256
    if kind == "low_rank":
        m = torch.randn(n_tasks, 2, generator=g, dtype=torch.float64)
        m = m @ torch.randn(2, dim, generator=g, dtype=torch.float64)
    else:
        m = torch.randn(n_tasks, dim, generator=g, dtype=torch.float64)
        if kind == "conflicting":
            half = n_tasks // 2
            m[half:] = -0.8 * m[: n_tasks - half] + 0.3 * m[half:]
    if cross:
        return m @ (m + 0.5 * torch.randn(m.shape, generator=g, dtype=torch.float64)).T
    return m @ m.T


def _skip_reason(cls: type) -> str | None:
    """Why a registered aggregator has no Gramian solver to time, or None."""
    if getattr(cls, "gramian_free", False):
        return "gramian_free: no solver (one plain backward)"
    for flag, reason in (
        ("needs_matrix", "works on the [T, P] gradient matrix, O(T·P): see step_cost"),
    ):
        if getattr(cls, flag, False):
            return reason
    return None


def _time_method(cls: type, n_tasks: int, calls: int, warmup: int) -> dict[str, float]:
    import torch

    per_kind: dict[str, float] = {}
    all_calls: list[float] = []
    losses = torch.linspace(0.5, 2.0, n_tasks, dtype=torch.float64)
    cross = bool(getattr(cls, "needs_two_batches", False))
    for k, kind in enumerate(KINDS):
        method = cls(n_tasks=n_tasks, **EXTRA_ARGS.get(cls.__name__, {}))
        spent: list[float] = []
        for i in range(warmup + calls):
            gramian = _gramian(kind, n_tasks, seed=k * 100_000 + i, cross=cross)
            start = time.perf_counter()
            method.weights(gramian, losses)
            if i >= warmup:
                spent.append(time.perf_counter() - start)
        per_kind[kind] = statistics.median(spent)
        all_calls.extend(spent)
    return {
        "median_us": round(statistics.median(all_calls) * 1e6, 1),
        "max_kind_us": round(max(per_kind.values()) * 1e6, 1),
        **{f"{kind}_us": round(v * 1e6, 1) for kind, v in per_kind.items()},
    }


def measure(tasks: list[int], calls: int, warmup: int) -> dict[str, Any]:
    import torch

    from polytask.aggregation import AGGREGATORS

    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name in AGGREGATORS.names():
        cls = AGGREGATORS.get(name)
        reason = _skip_reason(cls)
        if reason is not None:
            skipped[name] = reason
            continue
        for n_tasks in tasks:
            try:
                timing = _time_method(cls, n_tasks, calls, warmup)
            except ValueError as error:  # a size the method is not defined for
                skipped[f"{name}@T={n_tasks}"] = str(error).splitlines()[0]
                continue
            rows.append({"method": name, "T": n_tasks, **timing})
            print(f"{name:>14} T={n_tasks:<3} {timing['median_us']:>9.1f} µs", flush=True)
    return {"rows": rows, "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[4, 8, 32])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10 calls, T=4 and 8 (no file)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.tasks = 10, [4, 8]
    started = time.perf_counter()
    result = measure(args.tasks, args.calls, args.warmup)
    result = {
        "command": "python benchmarks/solver_time.py " + " ".join(sys.argv[1:]),
        "tasks": args.tasks,
        "calls": args.calls,
        "warmup": args.warmup,
        "kinds": list(KINDS),
        "threads": 1,
        "cpu": platform.processor() or platform.machine(),
        "load_average": round(os.getloadavg()[0], 2),
        "seconds": round(time.perf_counter() - started, 1),
        **result,
    }
    if args.quick:
        print(json.dumps(result["skipped"], indent=1))
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
