"""LoRA per task against hard sharing and prefix tuning on the bundled demo, at the same steps.

The bundled demo config (all-MiniLM-L6-v2, sentiment + movies + Twitter NER, every task in
every step) shortened to ``--steps`` steps with one evaluation at the end, one run per
architecture, each ``polytask train`` in its own process on one torch thread:

* ``hard``: the demo as it is (the encoder fine-tuned at ``train.lr``, heads at ``head_lr``);
* ``prefix``: frozen encoder, a 10-token key/value prefix per task and layer;
* ``lora``: frozen encoder, one PEFT LoRA adapter per task (PEFT's defaults: r = 8,
  alpha = 8, query and value), adapters at ``head_lr``;
* ``lora_shared``: the same plus a shared adapter (what gradient aggregators can combine).

Per run: trainable parameters (total and per task, from ``final_metrics.json``'s
``params``), the mean wall time of a training step (``step_seconds / steps``: forward,
backward and optimiser, no evaluation), and each task's test and validation metrics at the
last step. Writes ``benchmarks/results/lora_vs_hard.json`` with the commands that made it.

    python benchmarks/lora_vs_hard.py [--steps 60] [--runs hard prefix lora lora_shared]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "lora_vs_hard.json"
RUNS: dict[str, list[str]] = {
    "hard": ["architecture.name=hard"],
    "prefix": ["architecture.name=prefix"],
    "lora": ["architecture.name=lora"],
    "lora_shared": ["architecture.name=lora", "architecture.shared_adapter=true"],
}


def command(run: str, steps: int, out: Path) -> list[str]:
    """The ``polytask train`` command of one run (the bundled demo: no config file)."""
    overrides = [f"train.max_steps={steps}", f"train.eval_every={steps}", *RUNS[run]]
    return ["polytask", "train", "-o", str(out), "--quiet", *overrides]


def measure(run: str, steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"lora_vs_hard-{run}-") as tmp:
        out = Path(tmp) / "run"
        cmd = command(run, steps, out)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        binary = Path(sys.executable).parent / "polytask"
        started = time.perf_counter()
        subprocess.run([str(binary), *cmd[1:]], check=True, env=env)
        wall = time.perf_counter() - started
        final = json.loads((out / "final_metrics.json").read_text())
        report_file = out / "report.json"
        report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    metrics = {
        task: {key: entry.get(key) for key in ("validation", "test", "majority_accuracy")}
        for task, entry in final["tasks"].items()
    }
    return {
        "command": "OMP_NUM_THREADS=1 " + " ".join([*cmd[:3], "RUN_DIR", *cmd[4:]]),
        "steps": final["steps"],
        "trainable_parameters": final["params"]["trainable"],
        "parameters": final["params"],
        "step_seconds_mean": round(final["step_seconds"] / final["steps"], 4),
        "train_seconds": final["train_seconds"],
        "run_wall_seconds": round(wall, 1),
        "metrics": metrics,
        "report": report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    args = parser.parse_args()
    results = {run: measure(run, args.steps) for run in args.runs}
    hard = results.get("hard")
    if hard is not None:
        for entry in results.values():
            entry["vs_hard"] = {
                "trainable_parameters": round(
                    entry["trainable_parameters"] / hard["trainable_parameters"], 5
                ),
                "step_time": round(entry["step_seconds_mean"] / hard["step_seconds_mean"], 3),
            }
    out = {
        "about": __doc__.splitlines()[0],
        "script": "python benchmarks/lora_vs_hard.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "torch_threads": 1},
        "results": results,
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: {"trainable": v["trainable_parameters"], "step_s": v["step_seconds_mean"]}
                for k, v in results.items()
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
