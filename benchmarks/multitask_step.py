"""Cost of one multi-task step against the single-task steps on the same rows, and of shared inputs.

Part ``multitask``: the bundled demo (sentiment, movies, ner; ``sampler.tasks_per_step: all``)
plus a long sentence-pair regression task (``pair``: each side two bundled movie snippets
joined, target 1.0 when both sides' first snippets are of the same category, ``max_length:
96``, so most pairs reach the limit while the tweets stay short). One step's rows are drawn once per
task from polytask's own ``TaskStream`` (``--steps`` such steps) and reused by every impl:

* ``multitask`` (a): one ``polytask.training.step.train_step`` on ``collate`` of all tasks;
* ``single_sum`` (b): each task's rows collated alone, one ``train_step`` each, summed;
* ``article_loop`` (c): the source article's loop — the concatenated step padded to a fixed
  ``ARTICLE_LENGTH`` (throughput.py's), the encoder called directly, one backward of the
  summed losses, clipping, AdamW.

Part ``shared``: two classification tasks labelled on the same tweets (``sentiment`` and
``confidence``: the annotators' confidence ≥ 0.7, both read one JSONL): ``once`` = one batch
whose two segments cover the same rows (one encoder pass), ``twice`` = the same rows
collated twice (disjoint segments), each with equal weighting (one plain backward) and with
UPGrad under the engine's single-input modes ``exact`` and ``representation``.

Tokens per step: ``real`` = the sum of the attention masks; ``computed`` = what
:func:`computed_tokens` says the encoder computes (padding included), and ``observed`` =
what a forward pre-hook on the encoder counted (rows × width of every encoder call).

All impls of a part run in one child process, alternating (the order rotates every round);
round 0 is a warm-up; medians over ``--repeats`` rounds; ratios come from one run. Writes
``benchmarks/results/multitask_step.json`` under ``runs[--as]`` (other runs are kept).

    python benchmarks/multitask_step.py [--repeats 5] [--steps 2] [--parts all] [--as latest]
    python benchmarks/multitask_step.py --at HEAD --as before   # the code of a commit
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "multitask_step.json"
ARTICLE_LENGTH = 128  # the article's fixed max_length (benchmarks/throughput.py MAX_LENGTH)
PAIR_LENGTH = 96
PAIRS = {"train": 2000, "validation": 200}
TWEETS = {"train": 4000, "validation": 300}
IMPLS = ("multitask", "single_sum", "article_loop")
SHARED_MODES: dict[
    str, tuple[str, Literal["exact", "representation"] | None]
] = {  # mode -> (aggregator, engine's single_input mode or None: no engine)
    "equal": ("sum", None),
    "upgrad-exact": ("upgrad", "exact"),
    "upgrad-representation": ("upgrad", "representation"),
}
TARGETS = {"multitask_over_single_sum": 1.1, "padded_over_real": 1.3, "once_over_twice": 0.6}


def computed_tokens(batch: Any) -> tuple[int, str]:
    """Token positions the model's encoder computes for ``batch`` (padding included), and
    where the count comes from.

    ``polytask.segments.computed_tokens(lengths)`` (the encoder's chunk plan over each row's
    real length, ``batch.attention_mask.sum(1)``) when polytask has it; else one encoder call
    at the batch's width: rows × padded width."""
    import polytask.segments as segments

    plan: Callable[[list[int]], int] | None = getattr(segments, "computed_tokens", None)
    if plan is None:
        return int(batch.input_ids.numel()), "rows x padded width (one encoder call)"
    lengths = [int(n) for n in batch.attention_mask.sum(1).tolist()]
    return int(plan(lengths)), "polytask.segments.computed_tokens(row lengths)"


# ---- data: the long pair task and the shared-input file, from bundled real text ------------


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _records(path: Path) -> list[dict[str, Any]]:
    """A JSONL file's records (split at newlines only: a tweet may hold U+2028)."""
    return [json.loads(line) for line in path.read_text("utf-8").split("\n") if line.strip()]


def _write(folder: Path, name: str, text: str) -> str:
    """Write only when the content changed: the tokenised cache is keyed by mtime."""
    path = folder / name
    if not path.is_file() or path.read_text("utf-8") != text:
        path.write_text(text, "utf-8")
    return str(path)


def _data_dir() -> Path:
    from polytask.cache import cache_dir

    folder = cache_dir() / "benchmarks" / "multitask_step"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _pair_files() -> dict[str, str]:
    """Pairs of two-snippet texts; target 1.0 when the first snippets share a category."""
    from polytask.data.bundled import split_files

    out = {}
    for split, n in PAIRS.items():
        snippets = _records(split_files("movie_snippets")[split])
        rng = random.Random(f"pair-{split}")
        rows: list[dict[str, Any]] = []
        for _ in range(n):
            a, a2, b, b2 = rng.sample(snippets, 4)
            same = float(a["label"] == b["label"])
            left, right = f"{a['text']} {a2['text']}", f"{b['text']} {b2['text']}"
            rows.append({"text": left, "text_pair": right, "label": same})
        out[split] = _write(_data_dir(), f"pair-{split}.jsonl", _jsonl(rows))
    return out


def _tweet_files() -> dict[str, str]:
    """Bundled tweets with two label columns: sentiment, and confidence high/low."""
    from polytask.data.bundled import split_files

    out = {}
    for split, n in TWEETS.items():
        tweets = [r for r in _records(split_files("tweet_sentiment")[split]) if r["confidence"]]
        rows = [
            {"text": r["text"], "sentiment": r["label"]}
            | {"confidence": "high" if r["confidence"] >= 0.7 else "low"}
            for r in random.Random(f"tweets-{split}").sample(tweets, n)  # the file is sorted
        ]
        out[split] = _write(_data_dir(), f"tweets-{split}.jsonl", _jsonl(rows))
    return out


def _config(tasks: list[dict[str, Any]] | None, extra: list[dict[str, Any]]) -> Any:
    """The bundled demo config (``tasks`` replace its tasks when given) plus ``extra`` tasks."""
    from polytask.config.run import config_from_dict, load_config

    base = load_config(None, ["train.max_steps=100000", "train.monitor_every=null"])
    data = base.model_dump(mode="json")
    if tasks is not None:
        data["tasks"] = tasks
        data["train"]["primary_task"] = tasks[0]["name"]
    data["tasks"] += extra
    return config_from_dict(data, "demo.yaml + benchmark tasks")


def _prepared(config: Any) -> tuple[Any, Any, Any, Any]:
    """Setup, accelerator, optimiser and schedule as the training loop prepares them."""
    from polytask.training.prepare import open_accelerator
    from polytask.training.setup import build, build_optimization

    accelerator = open_accelerator("no", False)
    setup = build(config)
    optimizer, scheduler = build_optimization(setup)
    model, optimizer, scheduler = accelerator.prepare(setup.model, optimizer, scheduler)
    setup.objective.to(accelerator.device)
    setup.objective.attach(accelerator.unwrap_model(model))
    return setup, accelerator, optimizer, scheduler


class EncoderCalls:
    """Counts rows × width of every encoder call (a forward pre-hook): observed tokens."""

    def __init__(self, encoder: Any) -> None:
        self.tokens, self.calls = 0, 0
        encoder.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            self.tokens += int(ids.shape[0] * ids.shape[1])
            self.calls += 1

    def take(self) -> tuple[int, int]:
        out, self.tokens, self.calls = (self.tokens, self.calls), 0, 0
        return out


def _timed_rounds(
    steps: dict[str, Callable[[], None]], repeats: int, calls: EncoderCalls
) -> tuple[dict[str, list[float]], dict[str, tuple[int, int]]]:
    """Every impl once per round, the order rotating; round 0 (warm-up) is not kept."""
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    seen: dict[str, tuple[int, int]] = {}
    for r in range(repeats + 1):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            calls.take()
            start = time.perf_counter()
            steps[name]()
            elapsed = time.perf_counter() - start
            seen[name] = calls.take()
            if r > 0:
                times[name].append(elapsed)
    return times, seen


# ---- part multitask: (a) the multi-task step, (b) the single-task steps, (c) the article ---


def _draw(setup: Any, n_steps: int, seed: int) -> list[dict[str, dict[str, list[Any]]]]:
    """``n_steps`` steps of rows per task, from the tasks' own length-bucketed streams."""
    from polytask.data.batching import TaskStream

    tc = setup.config.train
    streams = {
        n: TaskStream(d.splits["train"], tc.batch_size, tc.bucket_batches, seed + i, d.spec)
        for i, (n, d) in enumerate(setup.data.items())
    }
    return [{n: s.next_rows() for n, s in streams.items()} for _ in range(n_steps)]


def _article_batch(batch: Any, pad: int) -> Any:
    """``batch`` padded to the article's fixed length (labels of token tasks with -100)."""
    import torch.nn.functional as F

    extra = ARTICLE_LENGTH - batch.input_ids.shape[1]
    if extra > 0:
        batch.input_ids = F.pad(batch.input_ids, (0, extra), value=pad)
        batch.attention_mask = F.pad(batch.attention_mask, (0, extra))
        if batch.token_type_ids is not None:
            batch.token_type_ids = F.pad(batch.token_type_ids, (0, extra))
        for task, labels in batch.labels.items():
            if labels.ndim == 2 and not labels.dtype.is_floating_point:
                batch.labels[task] = F.pad(labels, (0, extra), value=-100)
    return batch


def _article_step(setup: Any, model: Any, batch: Any, optimizer: Any) -> None:
    """The article's step: the encoder on the whole padded batch, heads, Σ losses, AdamW."""
    import torch

    from polytask.models.heads import pool
    from polytask.tasks import task_type

    kwargs = {"token_type_ids": batch.token_type_ids} if batch.token_type_ids is not None else {}
    hidden = model.encoder(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs
    ).last_hidden_state
    losses = []
    for seg in batch.segments:
        spec = setup.specs[seg.task]
        rows, mask = hidden[seg.start : seg.stop], batch.attention_mask[seg.start : seg.stop]
        ttype = task_type(spec.type)
        head = model.heads[seg.task]
        out = head(rows) if ttype.level == "token" else head(pool(rows, mask, model.pooling))
        losses.append(spec.weight * ttype.loss(spec, out, batch.labels[seg.task]))
    torch.stack(losses).sum().backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure_multitask(repeats: int, n_steps: int, seed: int = 1) -> dict[str, Any]:
    """Runs in the child: (a), (b) and (c) alternating on the same drawn rows."""
    from polytask.data.batching import collate
    from polytask.training.step import train_step

    pair = {"name": "pair", "type": "regression", "max_length": PAIR_LENGTH}
    pair |= {"columns": {"text": "text", "text_pair": "text_pair", "label": "label"}}
    pair["data"] = _pair_files()
    setup, accelerator, optimizer, scheduler = _prepared(_config(None, [pair]))
    model, pad = setup.model.train(), int(setup.tokenizer.pad_token_id or 0)
    drawn = _draw(setup, n_steps, seed)
    parts = [[(setup.specs[n], rows) for n, rows in step.items()] for step in drawn]
    batches: dict[str, list[list[Any]]] = {
        "multitask": [[collate(p, pad)] for p in parts],
        "single_sum": [[collate([part], pad) for part in p] for p in parts],
        "article_loop": [[_article_batch(collate(p, pad), pad)] for p in parts],
    }

    def run(impl: str) -> Callable[[], None]:
        def step() -> None:
            for group in batches[impl]:
                for batch in group:
                    if impl == "article_loop":
                        _article_step(setup, model, batch, optimizer)
                    else:
                        train_step(setup, model, batch, accelerator, optimizer, scheduler)

        return step

    calls = EncoderCalls(model.encoder)
    times, seen = _timed_rounds({impl: run(impl) for impl in IMPLS}, repeats, calls)
    rows, source = [], ""
    for impl in IMPLS:
        flat = [b for group in batches[impl] for b in group]
        counted = [computed_tokens(b) for b in flat]
        source = counted[0][1] if impl == "multitask" else source
        computed = sum(c for c, _ in counted) if impl != "article_loop" else None
        rows.append(
            {
                "impl": impl,
                "seconds_per_step": [t / n_steps for t in times[impl]],
                "real_tokens": sum(b.n_tokens for b in flat) / n_steps,
                "computed_tokens": (computed if computed is not None else _numel(flat)) / n_steps,
                "observed_tokens": seen[impl][0] / n_steps,
                "encoder_calls": seen[impl][1] / n_steps,
            }
        )
    tasks = {
        n: {
            "type": s.type,
            "max_length": setup.config.task(n).max_length or setup.config.encoder.max_length,
            "rows": [len(step[n]["input_ids"]) for step in drawn],
            "real_tokens": [sum(len(ids) for ids in step[n]["input_ids"]) for step in drawn],
        }
        for n, s in setup.specs.items()
    }
    return {"rows": rows, "tasks": tasks, "computed_tokens_from": source}


def _numel(batches: list[Any]) -> int:
    return sum(int(b.input_ids.numel()) for b in batches)


# ---- part shared: two tasks on one input, encoded once vs twice -----------------------------


def _shared_batches(setup: Any, n_steps: int, seed: int) -> dict[str, list[Any]]:
    """The same drawn tweets as one batch with overlapping segments, and collated twice."""
    from polytask.data.batching import TaskStream, collate
    from polytask.segments import Segment
    from polytask.tasks import task_type

    a, b = (setup.data[n] for n in ("sentiment", "confidence"))
    tc, pad = setup.config.train, int(setup.tokenizer.pad_token_id or 0)
    stream = TaskStream(a.splits["train"], tc.batch_size, tc.bucket_batches, seed, a.spec)
    out: dict[str, list[Any]] = {"once": [], "twice": []}
    for _ in range(n_steps):
        index = stream.next_indices()
        rows_a, rows_b = a.splits["train"][index], b.splits["train"][index]
        if rows_a["input_ids"] != rows_b["input_ids"]:
            raise RuntimeError("the two tasks' training rows are not the same tweets")
        if "shares" in inspect.signature(collate).parameters:  # tasks.N.inputs: the real path
            once = collate([(a.spec, rows_a), (b.spec, rows_b)], pad, {"confidence": "sentiment"})
        else:  # older code: the same layout by hand
            once = collate([(a.spec, rows_a)], pad)
            once.segments.append(Segment("confidence", 0, len(index)))
            once.labels["confidence"] = task_type(b.spec.type).collate(b.spec, rows_b["target"])
            once.extras["confidence"] = {}
        out["once"].append(once)
        out["twice"].append(collate([(a.spec, rows_a), (b.spec, rows_b)], pad))
    return out


def _objectives(setup: Any, model: Any, notes: list[str]) -> dict[str, Any]:
    """One objective per shared-input mode; the engine's single-input mode set by hand."""
    from polytask.autograd.engine import PerTaskGradients
    from polytask.objective import build_objective

    names = list(setup.specs)
    configurable = "single_input" in inspect.signature(build_objective).parameters
    out = {}
    for mode, (aggregator, single) in SHARED_MODES.items():
        args = (names, dict.fromkeys(names, 1.0), ["classification"] * 2)
        methods = (("equal", {}), (aggregator, {}))
        if configurable:  # train.single_input reaches build_objective
            objective = build_objective(*args, *methods, single or "exact")
            objective.attach(model)
        else:
            objective = build_objective(*args, *methods)
            objective.attach(model)
            if single is not None:
                objective._engine = PerTaskGradients(model, single_input=single)
        out[mode] = objective
    notes.append(
        "shared: the objective of each mode from build_objective(..., single_input=MODE), as "
        "train.single_input builds it"
        if configurable
        else "shared: this code has no train.single_input; the benchmark sets "
        "objective._engine = PerTaskGradients(model, single_input=MODE)"
    )
    return out


def measure_shared(repeats: int, n_steps: int, seed: int = 1) -> dict[str, Any]:
    """Runs in the child: every mode × (once, twice), alternating, on the same tweets."""
    from polytask.training.step import train_step

    files = _tweet_files()
    tasks = [
        {"name": n, "type": "classification", "columns": {"text": "text", "label": n}}
        | {"data": dict(files)}
        for n in ("sentiment", "confidence")
    ]
    setup, accelerator, optimizer, scheduler = _prepared(_config(tasks, []))
    model, notes = setup.model.train(), list[str]()
    batches = _shared_batches(setup, n_steps, seed)
    objectives = _objectives(setup, model, notes)

    def run(mode: str, layout: str) -> Callable[[], None]:
        def step() -> None:
            setup.objective = objectives[mode]
            for batch in batches[layout]:
                train_step(setup, model, batch, accelerator, optimizer, scheduler)

        return step

    steps = {f"{m}/{lay}": run(m, lay) for m in SHARED_MODES for lay in ("once", "twice")}
    calls = EncoderCalls(model.encoder)
    times, seen = _timed_rounds(steps, repeats, calls)
    rows = []
    for name in steps:
        mode, layout = name.split("/")
        rows.append(
            {
                "mode": mode,
                "aggregator": SHARED_MODES[mode][0],
                "single_input": SHARED_MODES[mode][1],
                "layout": layout,
                "seconds_per_step": [t / n_steps for t in times[name]],
                "real_tokens": sum(b.n_tokens for b in batches[layout]) / n_steps,
                "computed_tokens": sum(computed_tokens(b)[0] for b in batches[layout]) / n_steps,
                "observed_tokens": seen[name][0] / n_steps,
                "encoder_calls": seen[name][1] / n_steps,
            }
        )
    rows_per_task = len(batches["once"][0].input_ids)
    return {"rows": rows, "rows_per_task": rows_per_task, "notes": notes}


# ---- the parent: children, medians, ratios, the JSON ----------------------------------------


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _source(at: str | None, folder: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Which polytask the children import: the working tree, or ``git archive`` of ``at``."""
    if at is None:
        dirty = bool(_git("status", "--porcelain", "--", "src"))
        return {"commit": _git("rev-parse", "HEAD"), "src": "working tree", "dirty": dirty}, {}
    commit = _git("rev-parse", "--verify", f"{at}^{{commit}}")
    archive = subprocess.run(
        ["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    env = {"PYTHONPATH": str(folder / "src")}
    return {"commit": commit, "src": f"git archive {commit[:12]} src", "dirty": False}, env


def _child(part: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", part]
    cmd += ["--repeats", str(args.repeats), "--steps", str(args.steps)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:] or ["no output"]
        return {"error": " | ".join(tail)}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _med(row: dict[str, Any]) -> float:
    return statistics.median(row["seconds_per_step"])


def _tokens(row: dict[str, Any]) -> dict[str, Any]:
    real = row["real_tokens"]
    return {
        "real_tokens": round(real, 1),
        "computed_tokens": round(row["computed_tokens"], 1),
        "padded_over_real": round(row["computed_tokens"] / real, 3),
        "observed_tokens": round(row["observed_tokens"], 1),
        "observed_over_real": round(row["observed_tokens"] / real, 3),
        "encoder_calls": row["encoder_calls"],
    }


def _summarise_multitask(raw: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    base = _med(next(r for r in raw["rows"] if r["impl"] == "single_sum"))
    rows = []
    for r in raw["rows"]:
        row = {"impl": r["impl"], "median_s": round(_med(r), 4)}
        row["ratio_vs_single_sum"] = round(_med(r) / base, 3)
        row |= _tokens(r) | {"seconds_per_step": [round(t, 4) for t in r["seconds_per_step"]]}
        if r["impl"] != "article_loop" and row["computed_tokens"] != row["observed_tokens"]:
            notes.append(
                f"multitask {r['impl']}: computed_tokens ({raw['computed_tokens_from']}) "
                f"{row['computed_tokens']} != {row['observed_tokens']} counted at the encoder"
            )
        rows.append(row)
    return {"computed_tokens_from": raw["computed_tokens_from"], "tasks": raw["tasks"]} | {
        "rows": rows
    }


def _summarise_shared(raw: dict[str, Any]) -> dict[str, Any]:
    by = {(r["mode"], r["layout"]): r for r in raw["rows"]}
    rows = []
    for mode, (aggregator, single) in SHARED_MODES.items():
        once, twice = by[(mode, "once")], by[(mode, "twice")]
        rows.append(
            {
                "mode": mode,
                "aggregator": aggregator,
                "single_input": single,
                "once_s": round(_med(once), 4),
                "twice_s": round(_med(twice), 4),
                "once_over_twice": round(_med(once) / _med(twice), 3),
                "once": _tokens(once) | {"seconds_per_step": once["seconds_per_step"]},
                "twice": _tokens(twice) | {"seconds_per_step": twice["seconds_per_step"]},
            }
        )
    return {"rows_per_task": raw["rows_per_task"], "rows": rows}


def _acceptance(run: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows = {r["impl"]: r for r in run.get("multitask", {}).get("rows", [])}
    if "multitask" in rows:
        a = rows["multitask"]
        for key, value in (
            ("multitask_over_single_sum", a["ratio_vs_single_sum"]),
            ("padded_over_real", a["padded_over_real"]),
        ):
            out[key] = {"value": value, "target": TARGETS[key], "met": value <= TARGETS[key]}
    for r in run.get("shared", {}).get("rows", []):
        value = r["once_over_twice"]
        target = TARGETS["once_over_twice"]
        out[f"once_over_twice[{r['mode']}]"] = {
            "value": value,
            "target": target,
            "met": value <= target,
        }
    return out


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    notes: list[str] = []
    run: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        source, env = _source(args.at, Path(tmp))
        run |= {"polytask": source, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
        run |= {"torch": torch.__version__, "threads": torch.get_num_threads()}
        run |= {"repeats": args.repeats, "steps": args.steps, "warmup_rounds": 1}
        run["load_average_before"] = _load()
        for part in ("multitask", "shared"):
            if args.parts not in ("all", part):
                continue
            raw = _child(part, args, env)
            if "error" in raw:
                run[part] = {"error": raw["error"]}
                print(f"{part}: FAILED {raw['error']}", file=sys.stderr)
                continue
            run[part] = (
                _summarise_multitask(raw, notes) if part == "multitask" else _summarise_shared(raw)
            )
            notes += raw.get("notes", [])
            run[part]["imported"] = raw["imported"]
    run["load_average_after"] = _load()
    run["acceptance"] = _acceptance(run)
    run["notes"] = notes
    return run


def _print(run: dict[str, Any]) -> None:
    print(f"{'impl':<14}{'s/step':>9}{'÷ (b)':>8}{'real':>8}{'computed':>10}{'÷ real':>8}")
    for r in run.get("multitask", {}).get("rows", []):
        print(
            f"{r['impl']:<14}{r['median_s']:>9.3f}{r['ratio_vs_single_sum']:>7.2f}x"
            f"{r['real_tokens']:>8.0f}{r['computed_tokens']:>10.0f}{r['padded_over_real']:>7.2f}x"
        )
    print(f"\n{'shared mode':<24}{'once s':>9}{'twice s':>9}{'once/twice':>12}")
    for r in run.get("shared", {}).get("rows", []):
        print(
            f"{r['mode']:<24}{r['once_s']:>9.3f}{r['twice_s']:>9.3f}{r['once_over_twice']:>11.2f}x"
        )
    for key, a in run["acceptance"].items():
        print(
            f"  {key}: {a['value']} (target <= {a['target']}: {'met' if a['met'] else 'NOT met'})"
        )
    for note in run["notes"]:
        print(f"  note: {note}")


def _load() -> list[float]:
    """The machine's 1/5/15-minute load averages (other jobs share the cores)."""
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (after 1 warm-up)")
    parser.add_argument("--steps", type=int, default=2, help="drawn steps of rows per round")
    parser.add_argument("--parts", choices=("all", "multitask", "shared"), default="all")
    parser.add_argument("--at", help="measure the src/ of this commit (git archive), not the tree")
    parser.add_argument("--as", dest="label", default="latest", help="key of runs[] to write")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=("multitask", "shared"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import polytask

        measure = measure_multitask if args.child == "multitask" else measure_shared
        result = measure(args.repeats, args.steps)
        result["imported"] = str(Path(polytask.__file__).parent)
        print(json.dumps(result))
        return
    run = _measure(args)
    data: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    data |= {"benchmark": "multitask_step", "encoder": "all-MiniLM-L6-v2"}
    data |= {"targets": TARGETS, "article_length": ARTICLE_LENGTH, "pair_length": PAIR_LENGTH}
    command = "python benchmarks/multitask_step.py" + (f" --at {args.at}" if args.at else "")
    command += "" if args.parts == "all" else f" --parts {args.parts}"
    run["command"] = command + f" --as {args.label} --repeats {args.repeats} --steps {args.steps}"
    old = data.setdefault("runs", {}).get(args.label, {})
    for part in ("multitask", "shared"):  # --parts: the other part stays as measured before
        if args.parts not in ("all", part) and part in old:
            run[part] = old[part]
            run["notes"].append(f"part {part}: kept from `{old.get('command', '?')}`")
    if args.parts != "all":
        run["acceptance"] = _acceptance(run)
    data["runs"][args.label] = run
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    _print(run)
    print(f"written {args.out} (runs[{args.label!r}])")


if __name__ == "__main__":
    main()
