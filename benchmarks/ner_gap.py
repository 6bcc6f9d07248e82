"""Why the demo's NER task loses under sharing: what each task's gradient and the update do.

Two arms of the bundled demo as configured (``--steps``, default 300, its budget), with
``eval_every`` 20 for a learning curve (the classification tasks' validation sets cut to
200 rows so that it is cheap) and no cosine monitor:

* ``multi``: the demo as configured (three tasks every step, equal weighting, NER weight 2);
* ``single``: NER alone (its compare baseline: ``hard``, ``equal``, ``sum``, weight 1).

Each arm runs polytask's own training loop (``polytask.train.train``); every ``--every``
steps the step is measured around the real ``train_step``: before it, each task's weighted
loss gradient on the shared encoder (one ``torch.autograd.grad`` per task on the very batch
of the step, dropout state restored so the run's trajectory is unchanged); after it, the
AdamW update of the shared parameters ``Δθ``. Reported per measured step and task: the
gradient norm ``|g_t|``, and ``cos(Δθ, −g_t)``, the share of the update's direction that
descends task ``t``'s loss (1: the update is exactly task t's steepest descent). Plus each
arm's NER validation F1 at every evaluation (its learning curve).

    python benchmarks/ner_gap.py [--every 10] [--steps 300]

Writes ``benchmarks/results/ner_gap.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "ner_gap.json"
SIZE = [
    "train.eval_every=20",
    "train.patience=null",
    "train.monitor_every=null",
    "tasks.sentiment.data.max_validation_examples=200",
    "tasks.movies.data.max_validation_examples=200",
]


def _arm_config(arm: str, steps: int) -> Any:
    from polytask.config.run import load_config
    from polytask.experiments.compare import baseline_config

    config = load_config("demo", [*SIZE, f"train.max_steps={steps}"])
    if arm == "multi":
        return config
    return baseline_config(config, "ner", config.seed, steps, config.train.eval_every)


def measure_arm(arm: str, steps: int, every: int) -> dict[str, Any]:
    """Train one arm with the measuring wrapper around ``train_step``; its records."""
    import polytask.train as loop
    from polytask.training.step import task_losses

    real_step = loop.train_step
    records: list[dict[str, Any]] = []
    calls = [0]

    def measured(setup: Any, model: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] % every:
            return real_step(setup, model, batch, *args, **kwargs)
        core = getattr(model, "module", model)
        shared = [p for _, p in core.shared_parameters() if p.requires_grad]
        rng = torch.get_rng_state()
        losses = task_losses(model, batch, setup.specs)
        weights = {t: setup.specs[t].weight for t in losses}
        grads = {}
        for i, (task, loss) in enumerate(losses.items()):
            g = torch.autograd.grad(
                loss * weights[task], shared, retain_graph=i < len(losses) - 1, allow_unused=True
            )
            parts = [
                x if x is not None else torch.zeros_like(p) for x, p in zip(g, shared, strict=True)
            ]
            grads[task] = torch.cat([x.flatten() for x in parts])
        torch.set_rng_state(rng)  # the real step draws the same dropout masks
        before = torch.cat([p.detach().flatten() for p in shared]).clone()
        out = real_step(setup, model, batch, *args, **kwargs)
        update = torch.cat([p.detach().flatten() for p in shared]) - before
        row: dict[str, Any] = {"step": calls[0], "update_norm": float(update.norm())}
        for task, g in grads.items():
            cos = float(torch.dot(update, -g) / (update.norm() * g.norm()).clamp(min=1e-30))
            row[task] = {"grad_norm": float(g.norm()), "update_cos": round(cos, 5)}
        records.append(row)
        return out

    loop.train_step = measured
    try:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            final = loop.train(_arm_config(arm, steps), Path(tmp) / arm, show_progress=False)
            seconds = time.perf_counter() - started
            evals = [
                json.loads(line)
                for line in (Path(tmp) / arm / "metrics.jsonl").read_text().splitlines()
                if '"event": "eval"' in line
            ]
    finally:
        loop.train_step = real_step
    curve = [
        {"step": e["step"], "f1": e["metrics"]["ner"]["f1"]} for e in evals if "ner" in e["metrics"]
    ]
    return {
        "measured": records,
        "ner_validation_f1": curve,
        "ner_test_f1": final["tasks"]["ner"]["test"]["f1"],
        "seconds": round(seconds, 1),
    }


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 5) if values else math.nan


def summarize(arms: dict[str, Any]) -> dict[str, Any]:
    """Per arm and task: mean gradient norm and mean ``cos(Δθ, −g_t)`` over measured steps."""
    out: dict[str, Any] = {}
    for arm, data in arms.items():
        tasks = [k for k in data["measured"][0] if k not in ("step", "update_norm")]
        out[arm] = {
            t: {
                "grad_norm": _mean([r[t]["grad_norm"] for r in data["measured"]]),
                "update_cos": _mean([r[t]["update_cos"] for r in data["measured"]]),
            }
            for t in tasks
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    arms = {arm: measure_arm(arm, args.steps, args.every) for arm in ("multi", "single")}
    result = {
        "command": f"python benchmarks/ner_gap.py --steps {args.steps} --every {args.every}",
        "overrides": SIZE,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "summary": summarize(arms),
        "arms": arms,
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    print(json.dumps(result["summary"], indent=2))
    for arm, data in arms.items():
        curve = ", ".join(f"{c['step']}: {c['f1']:.3f}" for c in data["ner_validation_f1"])
        print(f"{arm}: NER validation F1 {curve}; test {data['ner_test_f1']:.3f}")


if __name__ == "__main__":
    main()
