"""Soft-sharing penalty: polytask's O(T) closed form against the pairwise loop, value + gradient.

``λ Σ_{i<j} ‖θ_i − θ_j‖²`` over T copies of the bundled all-MiniLM-L6-v2 (22.7 M parameters
each), every copy moved by its own N(0, ``--drift``²) noise (fine-tuned copies that drifted
apart). Two implementations, each from ``.grad = None`` (as after ``zero_grad``) to the
gradient in ``.grad``:

* ``naive``: the article-style loop over pairs × parameters, ``sum((a - b) ** 2)`` with
  autograd, then ``backward()`` — O(T²) passes over the weights plus autograd temporaries;
* ``polytask``: ``SoftSharing.regularization()`` (``T Σ_i ‖θ_i − θ̄‖²`` with foreach ops and
  the closed-form gradient ``2λT(θ_i − θ̄)``, no pairs, no autograd graph) then ``backward()``.

For each T both run alternately in one process (``--repeats`` rounds after a warm-up each);
times are medians. ``rel_diff`` is the relative difference of the two penalty values,
``grad_rel_diff`` ``‖g_polytask − g_naive‖ / ‖g_naive‖`` over every copy's gradient. Writes
``benchmarks/results/soft_penalty.json``.

    python benchmarks/soft_penalty.py [--tasks 2 4 8] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from polytask.models.encoder import load_encoder
from polytask.models.soft import SoftSharing
from polytask.tasks import TaskSpec

RESULTS = Path(__file__).parent / "results" / "soft_penalty.json"
ENCODER = "bundled:all-minilm-l6-v2"
PENALTY = 1e-3


def soft_model(n_tasks: int, drift: float, seed: int = 0) -> SoftSharing:
    """T copies of the bundled encoder, each moved by its own noise."""
    encoder, _ = load_encoder(ENCODER)
    specs = [
        TaskSpec(name=f"t{i}", type="classification", labels=["a", "b"]) for i in range(n_tasks)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # T > 4: the cost warning
        model = SoftSharing(encoder, specs, penalty=PENALTY)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for copy in model.tied_parameters():
            for p in copy:
                p.add_(torch.randn(p.shape, generator=g) * drift)
    return model


def naive(model: SoftSharing) -> torch.Tensor:
    """The article's loop: every pair, every parameter, autograd."""
    copies = model.tied_parameters()
    loss = torch.zeros(())
    for a, b in itertools.combinations(copies, 2):
        for x, y in zip(a, b, strict=True):
            loss = loss + torch.sum((x - y) ** 2)
    loss = PENALTY * loss
    loss.backward()
    return loss.detach()


def polytask(model: SoftSharing) -> torch.Tensor:
    value = model.regularization()["soft_penalty"]
    value.backward()
    return value.detach()


def gradients(model: SoftSharing) -> list[torch.Tensor]:
    return [p.grad.clone() for ps in model.tied_parameters() for p in ps if p.grad is not None]


def timed(impl: Callable[[SoftSharing], torch.Tensor], model: SoftSharing) -> tuple[float, Any]:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    value = impl(model)
    return (time.perf_counter() - start) * 1000, value


def measure(n_tasks: int, repeats: int, drift: float) -> dict[str, Any]:
    model = soft_model(n_tasks, drift)
    _, want = timed(naive, model)  # warm-up, and the reference value and gradient
    reference = gradients(model)
    _, got = timed(polytask, model)
    ours = gradients(model)
    num = sum(
        float((a.double() - b.double()).square().sum())
        for a, b in zip(ours, reference, strict=True)
    )
    den = sum(float(b.double().square().sum()) for b in reference)
    del ours, reference
    times: dict[str, list[float]] = {"naive": [], "polytask": []}
    for _ in range(repeats):  # alternate, so both see the same machine state
        for name, impl in (("naive", naive), ("polytask", polytask)):
            ms, _ = timed(impl, model)
            times[name].append(ms)
    naive_ms, ours_ms = statistics.median(times["naive"]), statistics.median(times["polytask"])
    per_copy = sum(p.numel() for p in model.tied_parameters()[0])
    del model
    gc.collect()
    return {
        "T": n_tasks,
        "naive_ms": round(naive_ms, 1),
        "polytask_ms": round(ours_ms, 1),
        "speedup": round(naive_ms / ours_ms, 2),
        "rel_diff": float(abs(got - want) / abs(want)),
        "grad_rel_diff": (num / den) ** 0.5,
        "penalty": float(want),
        "params_per_copy": per_copy,
        "naive_runs_ms": [round(t, 1) for t in times["naive"]],
        "polytask_runs_ms": [round(t, 1) for t in times["polytask"]],
    }


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'T':>3}{'naive ms':>11}{'polytask ms':>13}{'speedup':>9}{'rel diff':>11}"]
    for r in rows:
        lines.append(
            f"{r['T']:>3}{r['naive_ms']:>11.1f}{r['polytask_ms']:>13.1f}"
            f"{r['speedup']:>8.2f}x{r['rel_diff']:>11.1e}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--drift", type=float, default=1e-3, help="std of each copy's noise")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke test: T=2, one round")
    parser.add_argument("--out", type=Path, help=f"default {RESULTS} (--quick: a temp file)")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.repeats = [2], 1
    if args.out is None:  # a smoke test never overwrites the real results
        args.out = (
            Path(tempfile.gettempdir()) / "soft_penalty.quick.json" if args.quick else RESULTS
        )
    torch.set_num_threads(args.threads)
    rows = [measure(t, args.repeats, args.drift) for t in args.tasks]
    result = {
        "benchmark": "soft_penalty",
        "encoder": "all-MiniLM-L6-v2",
        "torch": torch.__version__,
        "threads": args.threads,
        "penalty": PENALTY,
        "drift": args.drift,
        "repeats": args.repeats,
        "quick": args.quick,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(_table(rows))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
