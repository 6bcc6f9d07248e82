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
side in one run. Writes ``benchmarks/results/throughput.json``.

    python benchmarks/throughput.py [--steps 20] [--repeats 2]
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
BATCH = 32
MAX_LENGTH = 128


def _setup(seed: int = 0) -> Any:
    import torch

    from polytask.config import load_config
    from polytask.train import build, build_optimizer

    config = load_config(
        None,
        [
            f"encoder.max_length={MAX_LENGTH}",
            "tasks.ner.max_length=null",
            "tasks.sentiment.data.max_train_examples=null",
            "sampler.name=proportional",
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
    from polytask.data.samplers import build_sampler

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=IMPLS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps)))
        return
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in IMPLS}
    for _ in range(args.repeats):
        for impl in IMPLS:
            cmd = [sys.executable, __file__, "--child", impl, "--steps", str(args.steps)]
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
    result = {
        "benchmark": "throughput",
        "encoder": "all-MiniLM-L6-v2",
        "batch_size": BATCH,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": _threads(),
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'impl':<14}{'examples/s':>12}{'tokens/example':>16}{'peak MB':>10}{'speedup':>9}")
    for row in rows:
        print(
            f"{row['impl']:<14}{row['examples_per_s']:>12.2f}{row['padded_tokens_per_example']:>16.1f}"
            f"{row['peak_mb']:>10}{row['speedup']:>8.2f}x"
        )
    print(f"written {RESULTS}")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
