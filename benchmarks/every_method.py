"""Every loss weighting and gradient aggregator trains the bundled demo on the real encoder.

A short run per method (bundled all-MiniLM-L6-v2, the three bundled tasks, every task in
every step): the mean training loss of each task over the first and the last ``--window``
steps, whether any loss or logged weight was not finite, and the run's validation metrics.
A method passes when nothing is NaN and every task's loss fell. Writes
``benchmarks/results/every_method.json``.

    python benchmarks/every_method.py [--steps 60] [--methods pcgrad famo ...] [--resume]

The file is rewritten after every method (``"complete": false`` until the last), so an
interrupted run keeps what it measured; ``--resume`` skips the methods already in the file
when it was written with the same settings.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "every_method.json"
TASKS = ("sentiment", "movies", "ner")


def _methods() -> list[tuple[str, list[str]]]:
    from polytask.aggregation import AGGREGATORS
    from polytask.weighting import WEIGHTINGS

    runs: list[tuple[str, list[str]]] = []
    for name in WEIGHTINGS.names():
        extra = ["weighting.weights=[1.0, 0.5, 2.0]"] if name == "static" else []
        runs.append((f"weighting={name}", [f"weighting.name={name}", *extra]))
    runs.append(
        ("weighting=famo[next_batch]", ["weighting.name=famo", "weighting.update=next_batch"])
    )
    for name in AGGREGATORS.names():
        runs.append((f"aggregator={name}", [f"aggregator.name={name}"]))
    return runs


def _finite(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def run_one(label: str, overrides: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from polytask.config.run import load_config
    from polytask.train import train
    from polytask.training.runlog import read_records

    sizes = []
    for task in TASKS:
        sizes += [
            f"tasks.{task}.data.max_validation_examples={args.validation}",
            f"tasks.{task}.data.max_test_examples=8",
        ]
    config = load_config(
        None,
        [
            "encoder.max_length=32",
            "tasks.ner.max_length=40",
            f"train.max_steps={args.steps}",
            f"train.eval_every={args.steps}",
            f"train.batch_size={args.batch}",
            "train.warmup_ratio=0.1",
            "train.patience=null",
            "sampler.tasks_per_step=all",
            *sizes,
            *overrides,
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        final = train(config, Path(tmp) / "run", show_progress=False)
        seconds = time.perf_counter() - start
        records = [r for r in read_records(Path(tmp) / "run" / "metrics.jsonl")]
    steps = [r for r in records if r["event"] == "train"]
    w = args.window
    first = {t: sum(r["loss"][t] for r in steps[:w]) / w for t in TASKS}
    last = {t: sum(r["loss"][t] for r in steps[-w:]) / w for t in TASKS}
    finite = all(_finite({k: v for k, v in r.items() if k != "event"}) for r in steps)
    fell = all(last[t] < first[t] for t in TASKS)
    metrics = {t: final["tasks"][t]["validation"] for t in TASKS}
    return {
        "method": label,
        "steps": len(steps),
        "first_loss": {t: round(v, 4) for t, v in first.items()},
        "last_loss": {t: round(v, 4) for t, v in last.items()},
        "finite": finite,
        "losses_fell": fell,
        "ok": finite and fell,
        "validation": metrics,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--window", type=int, default=10, help="steps averaged at each end")
    parser.add_argument("--batch", type=int, default=8, help="examples per task per step")
    parser.add_argument("--validation", type=int, default=64)
    parser.add_argument("--methods", nargs="+", help="labels or names to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--resume", action="store_true", help="keep the rows already measured")
    args = parser.parse_args()
    runs = _methods()
    if args.methods:
        runs = [r for r in runs if any(m == r[0] or r[0].endswith(f"={m}") for m in args.methods)]
    import torch

    settings = {
        "benchmark": "every_method",
        "encoder": "all-MiniLM-L6-v2",
        "torch": torch.__version__,
        "steps": args.steps,
        "window": args.window,
        "batch_per_task": args.batch,
        "validation": args.validation,
    }
    rows = _resumed(args.out, settings) if args.resume else []
    done = {r["method"] for r in rows}
    for label, overrides in runs:
        if label in done:
            continue
        row = run_one(label, overrides, args)
        rows.append(row)
        change = ", ".join(
            f"{t} {row['first_loss'][t]:.3f}→{row['last_loss'][t]:.3f}" for t in TASKS
        )
        print(f"{label:<30} {'ok ' if row['ok'] else 'FAIL'} {change}  ({row['seconds']} s)")
        _write(args.out, settings, rows, len(runs))
    _write(args.out, settings, rows, len(runs))
    print(f"{sum(r['ok'] for r in rows)}/{len(rows)} methods ok; written {args.out}")


def _resumed(path: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of an earlier run with the same settings (none if they differ)."""
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    same = all(data.get(k) == v for k, v in settings.items())
    return list(data["rows"]) if same else []


def _write(path: Path, settings: dict[str, Any], rows: list[dict[str, Any]], total: int) -> None:
    result = {
        **settings,
        "rows": rows,
        "methods": total,
        "complete": len(rows) == total,
        "all_ok": all(r["ok"] for r in rows),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
