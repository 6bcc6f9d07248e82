"""Training throughput of polytask vs a plain loop in the style of the source article.

Both sides train the same hard-sharing model (bundled all-MiniLM-L6-v2) on the three bundled
tasks, with the same batch size, optimiser, losses and proportional task sampling, one task
per step. What differs is the data path, which is what polytask changes:

* ``article_loop``: every batch padded to a fixed ``max_length=128`` (tokenised up front,
  not timed), random batches — the loop of the source article;
* ``polytask``: polytask's own ``TaskStream`` (length-bucketed batches) and ``collate``
  (dynamic padding to the longest row of the batch).

Each measurement runs in its own process (so peak memory is that impl's own), alternating
impls over ``--repeats`` rounds; the table reports medians and the ratio, measured side by
side in one run.

Then fp32 against bf16 autocast (``train.mixed_precision``, through Accelerate) on the CPU:
the bundled demo config shortened to ``--demo-steps`` steps (validation/test subsets, gradient
monitoring off), one run per precision, each in its own process: examples/s over the
training steps after two warm-up steps, and each run's final demo metrics.

Writes ``benchmarks/results/throughput.json``.

    python benchmarks/throughput.py [--steps 20] [--repeats 2] [--demo-steps 20] [--parts all]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "throughput.json"
IMPLS = ("article_loop", "polytask")
PRECISIONS = ("no", "bf16")  # train.mixed_precision values: fp32, bf16 autocast
BATCH = 32
MAX_LENGTH = 128
DEMO_SUBSETS = [  # keep the evaluations short: the runs compare precisions, not tasks
    "tasks.sentiment.data.max_validation_examples=300",
    "tasks.sentiment.data.max_test_examples=500",
    "tasks.movies.data.max_validation_examples=300",
    "tasks.movies.data.max_test_examples=500",
]


def _setup(seed: int = 0) -> Any:
    import torch

    from polytask.config.run import load_config
    from polytask.train import build, build_optimizer

    config = load_config(
        None,
        [
            f"encoder.max_length={MAX_LENGTH}",
            "tasks.ner.max_length=null",
            "tasks.sentiment.data.max_train_examples=null",
            "sampler.name=proportional",
            "sampler.tasks_per_step=1",  # one task per step, drawn by dataset size
        ],
    )
    setup = build(config)
    torch.manual_seed(seed)
    optimizer = build_optimizer(setup.model, 5e-5, 1e-3, 0.01)
    return setup, optimizer


def _article_batches(setup: Any, steps: int, seed: int) -> list[Any]:
    """Pre-padded fixed-length batches, one task per step, tasks drawn by dataset size."""
    import torch

    from polytask.data.batching import collate

    names = list(setup.specs)
    sizes = torch.tensor([len(setup.data[n].splits["train"]) for n in names], dtype=torch.float)
    gen = torch.Generator().manual_seed(seed)
    pad = int(setup.tokenizer.pad_token_id)
    batches = []
    for _ in range(steps):
        name = names[int(torch.multinomial(sizes / sizes.sum(), 1, generator=gen))]
        ds = setup.data[name].splits["train"]
        rows = ds[torch.randint(len(ds), (BATCH,), generator=gen).tolist()]
        batch = collate([(setup.specs[name], rows)], pad)
        width = batch.input_ids.shape[1]
        if (
            width < MAX_LENGTH
        ):  # pad every batch to the fixed max length, as the article's tokenizer call does
            extra = MAX_LENGTH - width
            batch.input_ids = torch.nn.functional.pad(batch.input_ids, (0, extra), value=pad)
            batch.attention_mask = torch.nn.functional.pad(batch.attention_mask, (0, extra))
            if batch.token_type_ids is not None:
                batch.token_type_ids = torch.nn.functional.pad(batch.token_type_ids, (0, extra))
            for task, labels in batch.labels.items():
                if labels.ndim == 2 and not labels.dtype.is_floating_point:
                    batch.labels[task] = torch.nn.functional.pad(labels, (0, extra), value=-100)
        batches.append(batch)
    return batches


def _polytask_batches(setup: Any, steps: int, seed: int) -> list[Any]:
    from polytask.data.batching import TaskStream, collate
    from polytask.samplers import build_sampler

    names = list(setup.specs)
    sampler = build_sampler(
        "proportional", [len(setup.data[n].splits["train"]) for n in names], seed
    )
    streams = {
        n: TaskStream(setup.data[n].splits["train"], BATCH, 50, seed + i)
        for i, n in enumerate(names)
    }
    pad = int(setup.tokenizer.pad_token_id)
    out = []
    for step in range(steps):
        name = names[sampler.sample(step, steps, 1)[0]]
        out.append(collate([(setup.specs[name], streams[name].next_rows())], pad))
    return out


def measure(impl: str, steps: int, warmup: int = 2) -> dict[str, Any]:
    """Train ``steps`` timed steps (after ``warmup``); runs inside the child process."""
    import torch

    from polytask.train import task_losses

    setup, optimizer = _setup()
    make = _article_batches if impl == "article_loop" else _polytask_batches
    batches = make(setup, steps + warmup, seed=1)
    model = setup.model.train()
    examples, tokens, started = 0, 0, 0.0
    for i, batch in enumerate(batches):
        if i == warmup:
            started = time.perf_counter()
        losses = task_losses(model, batch, setup.specs)
        torch.stack(list(losses.values())).sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            examples += batch.input_ids.shape[0]
            tokens += batch.input_ids.numel()
    seconds = time.perf_counter() - started
    return {
        "impl": impl,
        "examples_per_s": examples / seconds,
        "padded_tokens_per_example": tokens / examples,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": seconds,
    }


def demo_run(precision: str, steps: int, warmup: int = 2) -> dict[str, Any]:
    """A shortened demo training run at one precision; runs inside the child process."""
    import tempfile

    import polytask.train as training
    from polytask.config.run import load_config

    begun = time.perf_counter()
    overrides = [
        f"train.max_steps={steps}",
        f"train.eval_every={steps}",
        f"train.mixed_precision={precision}",
        "train.monitor_every=null",
        *DEMO_SUBSETS,
    ]
    config = load_config(None, overrides)
    seconds: list[float] = []
    examples: list[int] = []
    step = training.train_step

    def timed(setup: Any, model: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        record = step(setup, model, batch, *args, **kwargs)
        seconds.append(time.perf_counter() - started)
        examples.append(int(batch.input_ids.shape[0]))
        return record

    training.train_step = timed  # the loop looks it up at each step
    with tempfile.TemporaryDirectory() as tmp:
        final = training.train(config, Path(tmp) / "run", show_progress=False)
    metrics = {
        split: {
            task: {k: round(v, 4) for k, v in sorted(m[split].items()) if k != "loss"}
            for task, m in final["tasks"].items()
        }
        for split in ("validation", "test")
    }
    return {
        "precision": "fp32" if precision == "no" else precision,
        "examples_per_s": sum(examples[warmup:]) / sum(seconds[warmup:]),
        "seconds_per_step": statistics.median(seconds[warmup:]),
        "steps": steps,
        "train_seconds": final["train_seconds"],
        "wall_seconds": round(time.perf_counter() - begun, 1),
        "skipped_steps": final["skipped_steps"],
        "primary_metric": final["primary_metric"],
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **metrics,
    }


def compare_precisions(steps: int) -> list[dict[str, Any]]:
    """fp32, then bf16: one demo run each in its own process."""
    rows = []
    for precision in PRECISIONS:
        cmd = [sys.executable, __file__, "--child-precision", precision, "--demo-steps", str(steps)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]["examples_per_s"]
    for row in rows:
        row["examples_per_s"] = round(row["examples_per_s"], 2)
        row["seconds_per_step"] = round(row["seconds_per_step"], 3)
        row["peak_mb"] = round(row["peak_mb"])
        row["ratio"] = round(row["examples_per_s"] / base, 2)
    return rows


def data_paths(steps: int, repeats: int) -> list[dict[str, Any]]:
    """The article's loop against polytask's data path, alternating, medians."""
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in IMPLS}
    for _ in range(repeats):
        for impl in IMPLS:
            cmd = [sys.executable, __file__, "--child", impl, "--steps", str(steps)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[impl].append(json.loads(done.stdout.strip().splitlines()[-1]))
    rows = []
    for impl in IMPLS:
        rs = runs[impl]
        rows.append(
            {
                "impl": impl,
                "examples_per_s": round(statistics.median(r["examples_per_s"] for r in rs), 2),
                "padded_tokens_per_example": round(
                    statistics.median(r["padded_tokens_per_example"] for r in rs), 1
                ),
                "peak_mb": round(max(r["peak_mb"] for r in rs)),
            }
        )
    base = rows[0]["examples_per_s"]
    for row in rows:
        row["speedup"] = round(row["examples_per_s"] / base, 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--demo-steps", type=int, default=20)
    parser.add_argument(
        "--parts",
        choices=("all", "data", "precision"),
        default="all",
        help="measure only one comparison; the other's results stay as written before",
    )
    parser.add_argument("--child", choices=IMPLS)
    parser.add_argument("--child-precision", choices=PRECISIONS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps)))
        return
    if args.child_precision:
        print(json.dumps(demo_run(args.child_precision, args.demo_steps)))
        return
    result: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.parts in ("all", "data"):
        result.update(
            {
                "benchmark": "throughput",
                "encoder": "all-MiniLM-L6-v2",
                "batch_size": BATCH,
                "steps": args.steps,
                "repeats": args.repeats,
                "threads": _threads(),
                "load_average_before": _load(),
                "rows": data_paths(args.steps, args.repeats),
            }
        )
    if args.parts in ("all", "precision"):
        load = _load()
        rows = compare_precisions(args.demo_steps)
        result["precision"] = {
            "config": "bundled demo (3 tasks x 16 examples per step), "
            f"{args.demo_steps} steps, validation/test subsets, monitoring off",
            "bf16_native_on_this_cpu": _native_bf16(),
            "threads": _threads(),
            "load_average_before": load,
            "load_average_after": _load(),
            "rows": rows,
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'impl':<14}{'examples/s':>12}{'tokens/example':>16}{'peak MB':>10}{'speedup':>9}")
    for row in result.get("rows", []):
        print(
            f"{row['impl']:<14}{row['examples_per_s']:>12.2f}{row['padded_tokens_per_example']:>16.1f}"
            f"{row['peak_mb']:>10}{row['speedup']:>8.2f}x"
        )
    print(f"\n{'precision':<10}{'examples/s':>12}{'s/step':>8}{'ratio':>8}  test primary metrics")
    for row in result.get("precision", {}).get("rows", []):
        primary = row["primary_metric"]
        test = "  ".join(f"{t} {primary[t]} {m[primary[t]]}" for t, m in row["test"].items())
        print(
            f"{row['precision']:<10}{row['examples_per_s']:>12.2f}{row['seconds_per_step']:>8.2f}"
            f"{row['ratio']:>7.2f}x  {test}"
        )
    print(f"written {RESULTS}")


def _load() -> list[float]:
    """The machine's 1/5/15-minute load averages (other jobs share the cores)."""
    import os

    return [round(x, 2) for x in os.getloadavg()]


def _native_bf16() -> bool:
    from polytask.distributed import native_cpu_bf16

    return native_cpu_bf16()


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
