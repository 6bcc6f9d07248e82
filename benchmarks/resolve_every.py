"""Step time with periodic re-solving (``aggregator.resolve_every: N``) as a multiple of N = 1.

The bundled demo (``configs/demo.yaml``: MiniLM, its three tasks, every task in every step) at
a small batch, one Gramian aggregator (``nash_mtl`` by default: the FAMO paper's case), CPU.
A step is the training loop's own :func:`polytask.training.step.train_step` (forward,
objective, AdamW). One model; one :class:`polytask.objective.Objective` per N, all built in
this process; in every round each N runs ``--steps`` steps on the same batches (a multiple
of every N: whole periods), the order of the N rotating between rounds, so all are measured
side by side under the same load. ``mean_s``: the mean step time over every round (solve
steps included); ``ratio``: its ratio to N = 1's; ``solve_s`` / ``reuse_s``: the medians of
the two kinds of step. Writes ``benchmarks/results/resolve_every.json``.

    python benchmarks/resolve_every.py [--every 1 10 50] [--steps 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "resolve_every.json"


def _batches(setup: Any, count: int, batch_size: int) -> list[Any]:
    from polytask.data.batching import TaskStream, collate

    names = list(setup.specs)
    streams = {
        n: TaskStream(setup.data[n].splits["train"], batch_size, 1, i, setup.specs[n])
        for i, n in enumerate(names)
    }
    pad = int(setup.tokenizer.pad_token_id or 0)
    return [
        collate([(setup.specs[n], streams[n].next_draw().rows) for n in names], pad)
        for _ in range(count)
    ]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator

    from polytask.config.run import load_config
    from polytask.objective import build_objective
    from polytask.train import build, train_step
    from polytask.training.setup import build_optimization

    torch.manual_seed(0)
    overrides = [f"train.batch_size={args.batch_size}", f"aggregator.name={args.aggregator}"]
    config = load_config("demo", overrides)
    setup = build(config)
    accelerator = Accelerator(cpu=True)
    specs = [s for s in setup.specs.values() if not s.held_out]
    kinds = ["regression" if s.type == "regression" else "classification" for s in specs]
    runs = {}
    for every in args.every:
        objective = build_objective(
            [s.name for s in specs],
            {s.name: s.weight for s in specs},
            kinds,
            (config.weighting.name, config.weighting.kwargs),
            (args.aggregator, {}),
            "exact",
            every,
        )
        objective.attach(setup.model)
        run = dataclasses.replace(setup, objective=objective)
        runs[every] = (run, *build_optimization(run))
    batches = _batches(setup, args.steps, args.batch_size)
    times: dict[int, dict[str, list[float]]] = {
        n: {"all": [], "solve": [], "reuse": []} for n in runs
    }
    order = list(runs)
    for r in range(args.rounds + 1):  # round 0 warms up and is not counted
        for every in order[r % len(order) :] + order[: r % len(order)]:
            run, optimizer, scheduler = runs[every]
            for batch in batches:
                start = time.perf_counter()
                record = train_step(run, run.model, batch, accelerator, optimizer, scheduler)
                spent = time.perf_counter() - start
                if r > 0:
                    kind = "reuse" if record.get("grad_method") == "reused" else "solve"
                    times[every]["all"].append(spent)
                    times[every][kind].append(spent)
    base = statistics.fmean(times[args.every[0]]["all"])
    rows = []
    for every, t in times.items():
        mean = statistics.fmean(t["all"])
        rows.append(
            {
                "resolve_every": every,
                "mean_s": round(mean, 4),
                "ratio": round(mean / base, 3),
                "solve_s": round(statistics.median(t["solve"]), 4) if t["solve"] else None,
                "reuse_s": round(statistics.median(t["reuse"]), 4) if t["reuse"] else None,
                "steps": len(t["all"]),
                "solve_steps": len(t["solve"]),
            }
        )
    return {
        "benchmark": "resolve_every",
        "config": "demo",
        "encoder": config.encoder.name,
        "tasks": [s.name for s in specs],
        "aggregator": args.aggregator,
        "batch_size_per_task": args.batch_size,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "note": (
            "CPU, measured side by side in one process on a machine shared with other jobs: "
            "absolute times are skewed by the load, the ratios less so "
            "(same rounds, rotating order)"
        ),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--steps", type=int, default=50, help="steps per N per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="rows per task per step")
    parser.add_argument("--aggregator", default="nash_mtl")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.every[0] != 1 or any(args.steps % n for n in args.every):
        sys.exit("--every must start with 1 and divide --steps (whole periods)")
    result = measure(args)
    for row in result["rows"]:
        print(
            f"N={row['resolve_every']:>3}  mean {row['mean_s']:.3f} s  ratio {row['ratio']:.3f}  "
            f"solve {row['solve_s']}  reuse {row['reuse_s']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
