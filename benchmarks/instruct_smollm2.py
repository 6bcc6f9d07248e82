"""Integration run: multi-task instruction tuning of the bundled SmolLM2-135M-Instruct with LoRA.

Evaluates the untuned model on every task's validation subset, trains the ``instruct``
config (LoRA, bounded steps, short sequences), and writes untuned vs tuned metrics, the
phase wall times and the machine load to ``docs/results/instruct_smollm2.json``. The run is
bounded to finish in under 20 minutes on a 2-core CPU.

    python benchmarks/instruct_smollm2.py [--config instruct] [--threads 1] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch

from polytask.config.run import load_config
from polytask.experiments.diversity import examples_per_run, untuned_metrics
from polytask.train import train

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="instruct")
    parser.add_argument("--out", default="runs/instruct-smollm2")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--results", default=str(RESULTS / "instruct_smollm2.json"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    load_before = os.getloadavg()
    started = time.perf_counter()
    untuned = untuned_metrics(config)
    untuned_seconds = time.perf_counter() - started
    final = train(config, args.out, overwrite=True, show_progress=False)
    total = time.perf_counter() - started
    tuned = {n: m["validation"] for n, m in final["tasks"].items()}
    rows: dict[str, Any] = {}
    for task, metrics in tuned.items():
        held = config.task(task).held_out
        rows[task] = {
            "held_out": held,
            "untuned": untuned[task],
            "tuned": metrics,
            "accuracy_gain": round(metrics["accuracy"] - untuned[task]["accuracy"], 4),
            "loss_change": round(metrics["loss"] - untuned[task]["loss"], 4),
        }
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "adapter": config.architecture.model_extra,
        "steps": final["steps"],
        "examples": examples_per_run(config),
        "params": final["params"],
        "tasks": rows,
        "seconds": {
            "untuned_eval": round(untuned_seconds, 1),
            "train_and_final_eval": round(total - untuned_seconds, 1),
            "train_loop": final["train_seconds"],
            "total": round(total, 1),
        },
        "cpu_seconds": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
        "torch_threads": torch.get_num_threads(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    print("| task | metric | untuned | tuned |")
    print("|---|---|---|---|")
    for task, row in rows.items():
        for metric in ("accuracy", "macro_f1", "entity_f1", "loss"):
            if metric in row["tuned"]:
                name = f"{task}{' (held out)' if row['held_out'] else ''}"
                before, after = row["untuned"][metric], row["tuned"][metric]
                print(f"| {name} | {metric} | {before:.3f} | {after:.3f} |")
    print(f"total {total / 60:.1f} min; written {args.results}")


if __name__ == "__main__":
    main()
