"""Every published number block of the README and docs, rendered from committed JSON.

    python benchmarks/readme_tables.py --write         # rewrite every marked block
    python benchmarks/readme_tables.py --check         # exit 1 if any block differs
    python benchmarks/readme_tables.py step_cost       # print one block

A block is the text between ``<!-- NAME -->`` and ``<!-- /NAME -->`` in ``README.md`` or a
``docs/**/*.md`` file. Each NAME has one entry in ``BLOCKS``: the JSON files it reads
(``benchmarks/results/*.json``, ``docs/results/*.json``), the command that wrote them and
a function that formats them. This script measures nothing; a block whose JSON is not
committed says which command would write it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS_RESULTS = ROOT / "docs" / "results"
RENDER = "python benchmarks/readme_tables.py --write"


def _load(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _missing(path: Path, command: str, how: str) -> str:
    """The text of a block whose JSON is not committed: no number, only the way to one."""
    return (
        f"Not measured in a committed file yet. `{command}` {how}; commit it as "
        f"`{_rel(path)}` and run `{RENDER}`."
    )


# name -> (paper, kind, cost class); the full table with hyperparameters is docs/methods.md
METHODS: dict[str, tuple[str, str, str]] = {
    "equal": ("sum of the losses (baseline)", "loss", "O(1)"),
    "static": ("fixed per-task weights", "loss", "O(1)"),
    "scale_norm": ("running loss-scale normalisation", "loss", "O(1)"),
    "uncertainty": ("Kendall, Gal & Cipolla, CVPR 2018", "loss (learned)", "O(1)"),
    "dwa": ("Liu, Johns & Davison, CVPR 2019", "loss", "O(1)"),
    "rlw": ("Lin et al., TMLR 2022", "loss (random)", "O(1)"),
    "famo": ("Liu, Liu, Stone & Liu, NeurIPS 2023", "loss", "O(1) + 1 no-grad forward"),
    "famo[next_batch]": ("FAMO, polytask's variant without the extra forward", "loss", "O(1)"),
    "gradnorm": ("Chen et al., ICML 2018", "loss (learned)", "per-task norms"),
    "sum": ("sum of the task gradients (baseline)", "gradient", "O(1) in training*"),
    "mean": ("mean of the task gradients", "gradient", "O(1) in training*"),
    "pcgrad": ("Yu et al., NeurIPS 2020", "gradient", "per-task gradients"),
    "mgda": ("Sener & Koltun, NeurIPS 2018", "gradient", "per-task gradients"),
    "imtl_g": ("Liu et al., ICLR 2021", "gradient", "per-task gradients"),
    "cagrad": ("Liu et al., NeurIPS 2021", "gradient", "per-task gradients"),
    "gradvac": ("Wang et al., ICLR 2021", "gradient", "per-task gradients"),
    "nash_mtl": ("Navon et al., ICML 2022", "gradient", "per-task gradients"),
    "aligned_mtl": ("Senushkin et al., CVPR 2023", "gradient", "per-task gradients"),
    "upgrad": ("Quinton & Rey, 2024 (torchjd)", "gradient", "per-task gradients"),
}


def _ratio(rows: list[dict[str, Any]], **key: Any) -> str:
    for r in rows:
        if all(r.get(k) == v for k, v in key.items()):
            return f"{r['ratio_vs_equal']:.2f}×"
    return "—"


def _solver(rows: list[dict[str, Any]], method: str, T: int) -> str:
    for r in rows:
        if r["method"] == method and r["T"] == T and r.get("aggregate_ms") is not None:
            return f"{r['aggregate_ms']:.2f}"
    return "—"


def _rounds(data: dict[str, Any]) -> str:
    """The rounds per row: "5", or "5 (9 for multi-input T=4 polytask-segments)"."""
    base = data["repeats"]
    other: dict[int, set[str]] = {}
    for r in data["rows"]:
        if r.get("repeats", base) != base:
            other.setdefault(r["repeats"], set()).add(f"{r['mode']} T={r['T']} {r['impl']}")
    extra = "; ".join(f"{n} for {', '.join(sorted(w))}" for n, w in sorted(other.items()))
    return f"{base} ({extra})" if extra else str(base)


def _upgrad_three_ways(data: dict[str, Any], Ts: list[int]) -> list[str]:
    """UPGrad by polytask, a naive loop and torchjd; says "same run" only when it is one."""
    rows = data["rows"]
    table: list[str] = []
    runs: set[Any] = set()
    rounds_differ = False
    for mode, ours in (("multi-input", "polytask-segments"), ("single-input", "polytask-exact")):
        for T in Ts:
            cells = []
            for impl in (ours, "naive-loop", "torchjd"):
                match = [
                    r
                    for r in rows
                    if r["mode"] == mode
                    and r["T"] == T
                    and r["impl"] == impl
                    and r["method"] == "upgrad"
                ]
                cells.append(match[0] if match else None)
            found = [c for c in cells if c is not None]
            runs |= {c.get("run") for c in found}
            rounds = [str(c.get("repeats", data["repeats"])) for c in found]
            rounds_differ |= len(set(rounds)) > 1
            table.append(
                f"| {mode} | {T} | {_ratio(rows, mode=mode, T=T, method='upgrad', impl=ours)} | "
                f"{_ratio(rows, mode=mode, T=T, method='upgrad', impl='naive-loop')} | "
                f"{_ratio(rows, mode=mode, T=T, method='upgrad', impl='torchjd')} | "
                + " / ".join(str(c["peak_mb"]) if c else "—" for c in cells)
                + f" | {' / '.join(rounds)} |"
            )
    one_run = len(runs) == 1 and None not in runs
    title = (
        "UPGrad three ways, same run"
        if one_run
        else "UPGrad three ways, not one run (the JSON merges several invocations of "
        "`benchmarks/step_cost.py`, see its `merge_notes`)"
    )
    lines = [
        "",
        f"{title}: each cell is the ratio ÷ the equal step timed in that cell's own process, "
        "and that process's peak RSS:",
        "",
        "| mode | T | polytask | naive loop (T × `backward(retain_graph=True)`) | torchjd 0.18 "
        "| peak MB polytask / naive / torchjd | rounds polytask / naive / torchjd |",
        "|---|---:|---:|---:|---:|---|---|",
        *table,
    ]
    if not one_run:
        lines += [
            "",
            "A row whose rounds differ mixes measurements of different invocations; rows with "
            "equal rounds may still come from different invocations (these rows carry no run "
            "id; rows written from now on do, in `run`).",
        ]
    elif rounds_differ:  # pragma: no cover - one run has one --repeats
        raise ValueError("one run with different rounds")
    return lines


def step_cost() -> str:
    data = _load(RESULTS / "step_cost.json")
    rows = data["rows"]
    Ts = sorted({r["T"] for r in rows})
    big = max(Ts)
    mid = 4 if 4 in Ts else Ts[len(Ts) // 2]
    lines = [
        f"Step time ÷ the equal-weighted step, bundled MiniLM on CPU ({data['threads']} threads), "
        f"{data['per_task']} examples per task, ≤ {data['length']} tokens, medians of "
        f"{_rounds(data)} alternating rounds. "
        "Multi-input: each task has its own rows (exact per-task gradients from one "
        "backward). Single-input: every task labels the same rows.",
        "",
        f"| method | paper | kind | cost class | multi-input T={mid} | multi-input T={big} "
        f"| single-input exact T={mid} | exact T={big} | representation T={mid} "
        f"| representation T={big} | solver ms (T={big}) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (paper, kind, cost) in METHODS.items():
        weighting = kind.startswith("loss")
        impl = "polytask-weighting" if weighting else "polytask-segments"
        cells = [
            _ratio(rows, mode="multi-input", T=mid, method=name, impl=impl),
            _ratio(rows, mode="multi-input", T=big, method=name, impl=impl),
        ]
        for single in ("polytask-exact", "polytask-representation"):
            for T in (mid, big):
                cells.append(
                    "—"
                    if weighting
                    else _ratio(rows, mode="single-input", T=T, method=name, impl=single)
                )
        cells.append("—" if weighting else _solver(rows, name, big))
        lines.append(f"| `{name}` | {paper} | {kind} | {cost} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "\\* `sum`/`mean` rows show the per-task gradient engine's own cost (the "
        "benchmark forces it); training takes one plain backward for them.",
    ]
    lines += _upgrad_three_ways(data, Ts)
    model = [T for T in Ts if _ratio(rows, T=T, method="floor_exact", impl="cost-model") != "—"]
    if model:
        lines += [
            "",
            "Single-input exact against its floors (`cost-model`: the parts timed alone in "
            "the same process as the equal step `F + B`):",
            "",
            "| T | forward `F` | `F` + activation-only backward | floor: T activation passes "
            "+ 1 backward | floor: T activation + T weight-gradient passes | polytask exact "
            "(`sum` / `upgrad`) |",
            "|---:|---:|---:|---:|---:|---|",
        ]
        for T in model:
            cell = {
                m: _ratio(rows, mode="single-input", T=T, method=m, impl="cost-model")
                for m in ("forward", "forward+activation_backward", "floor_act", "floor_exact")
            }
            exact = " / ".join(
                _ratio(rows, mode="single-input", T=T, method=m, impl="polytask-exact")
                for m in ("sum", "upgrad")
            )
            lines.append(
                f"| {T} | {cell['forward']} | {cell['forward+activation_backward']} | "
                f"{cell['floor_act']} | {cell['floor_exact']} | {exact} |"
            )
    return "\n".join(lines) + "\n\n" + _step_cost_added(rows) + step_cost_targets()


def _step_cost_added(rows: list[dict[str, Any]]) -> str:
    """The methods the table above does not name (added later; multi-input rows only),
    from their own run (its rounds and load are in the JSON's merge notes)."""
    added = sorted(
        {r["method"] for r in rows if r["mode"] == "multi-input" and r["T"] in (4, 8)}
        - set(METHODS)
        - {"equal", "sum", "mean"}
    )
    if not added:
        return ""
    lines = [
        "Methods added since (multi-input, measured together in one run of 3 rounds on the "
        "shared, loaded machine, where `sum` itself measured 1.25×: read these against that; "
        "see [docs/methods.md](docs/methods.md) for papers and cost classes):",
        "",
        "| method | impl | T=4 | T=8 | aggregate ms (T=8) |",
        "|---|---|---:|---:|---:|",
    ]
    for name in added:
        cells = {r["T"]: r for r in rows if r["method"] == name and r["mode"] == "multi-input"}
        impl = next(iter(cells.values()))["impl"]
        ms = cells.get(8, {}).get("aggregate_ms")
        lines.append(
            f"| `{name}` | {impl} | "
            + " | ".join(
                f"{cells[T]['ratio_vs_equal']:.2f}×" if T in cells else "—" for T in (4, 8)
            )
            + f" | {'—' if ms is None else f'{ms:,.2f}'} |"
        )
    return "\n".join(lines) + "\n\n"


# the issue's targets for the step-cost ratios, checked against the JSON
TARGET_AGGREGATORS = {4: 1.2, 8: 1.3}  # multi-input, every aggregator
TARGET_O1_WEIGHTINGS = 1.05  # multi-input T=4
TARGET_FAMO = 1.35
TARGET_REPRESENTATION = 1.1
TARGET_EXACT = {4: 2.5, 8: 4.0}  # single-input exact
O1_WEIGHTINGS = ("rlw", "dwa", "uncertainty", "scale_norm")


def _values(rows: list[dict[str, Any]], **key: Any) -> list[float]:
    return [r["ratio_vs_equal"] for r in rows if all(r.get(k) == v for k, v in key.items())]


def _span(values: list[float]) -> str:
    if not values:
        return "—"
    lo, hi = min(values), max(values)
    return f"{lo:.2f}×" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}×"


def _verdict(values: list[float], target: float) -> str:
    if not values:
        return "not measured"
    return "met" if max(values) <= target else "missed"


#: aggregators that need the [T, P] gradient matrix (their own line: O(T·P) maths, no solve)
MATRIX_METHODS = ("graddrop", "trimmed_mean", "excess_mtl", "moco", "db_mtl")


def _matrix_methods(rows: list[dict[str, Any]]) -> list[str]:
    """The multi-input ratios of the ``needs_matrix`` aggregators, if measured."""
    parts = []
    for T in (4, 8):
        key = {"mode": "multi-input", "T": T, "impl": "polytask-segments"}
        v = [x for m in MATRIX_METHODS for x in _values(rows, method=m, **key)]
        ms = [
            r["aggregate_ms"]
            for r in rows
            if r["method"] in MATRIX_METHODS and all(r.get(k) == x for k, x in key.items())
        ]
        if v:
            parts.append(f"{_span(v)} at T={T} (their maths: up to {max(ms):,.0f} ms)")
    if not parts:
        return []
    return [
        f"- **Aggregators that need the [T, P] matrix** ({', '.join(MATRIX_METHODS)}: O(T·P) "
        "coordinate-wise maths and state over MiniLM's shared parameters instead of a T × T "
        "solve): " + "; ".join(parts) + "."
    ]


def step_cost_targets() -> str:
    """The measured ratios against the issue's targets, as a list."""
    data = _load(RESULTS / "step_cost.json")
    rows = data["rows"]
    aggregators = [n for n, (_, kind, _) in METHODS.items() if kind == "gradient"]
    lines = ["Against the issue's targets:", ""]
    parts = []
    for T, target in TARGET_AGGREGATORS.items():
        v = [
            x
            for m in aggregators
            for x in _values(rows, mode="multi-input", T=T, method=m, impl="polytask-segments")
        ]
        parts.append(f"{_span(v)} at T={T} (target ≤ {target}×: {_verdict(v, target)})")
    solver = [
        r["aggregate_ms"]
        for r in rows
        if r["mode"] == "multi-input"
        and r.get("aggregate_ms") is not None
        and r["method"] in aggregators
    ]
    lines.append(
        "- **Multi-input, exact per-task gradients** (the usual NLP layout), every "
        "Gramian aggregator of the table: "
        + "; ".join(parts)
        + (f"; the solvers themselves take at most {max(solver):.2f} ms." if solver else ".")
    )
    lines += _matrix_methods(rows)
    parts = []
    for T in (4, 8):
        v = [
            x
            for m in O1_WEIGHTINGS
            for x in _values(rows, mode="multi-input", T=T, method=m, impl="polytask-weighting")
        ]
        parts.append(f"{_span(v)} at T={T}")
    v4 = [
        x
        for m in O1_WEIGHTINGS
        for x in _values(rows, mode="multi-input", T=4, method=m, impl="polytask-weighting")
    ]
    lines.append(
        f"- **{', '.join(O1_WEIGHTINGS)}**: "
        + ", ".join(parts)
        + f" (target ≤ {TARGET_O1_WEIGHTINGS}× at T=4: "
        f"{_verdict(v4, TARGET_O1_WEIGHTINGS)})."
    )
    famo = {
        r["T"]: r["ratio_vs_equal"]
        for r in rows
        if r["method"] == "famo" and r["impl"] == "polytask-weighting"
    }
    nxt = {
        r["T"]: r["ratio_vs_equal"]
        for r in rows
        if r["method"] == "famo[next_batch]" and r["impl"] == "polytask-weighting"
    }
    lines.append(
        "- **FAMO** (the paper's extra no-grad forward of the same batch): "
        + ", ".join(f"{v:.2f}× at T={T}" for T, v in sorted(famo.items()))
        + f" (target ≤ {TARGET_FAMO}×: {_verdict(list(famo.values()), TARGET_FAMO)}); "
        "`famo[next_batch]`: "
        + ", ".join(f"{v:.2f}× at T={T}" for T, v in sorted(nxt.items()))
        + "."
    )
    v = [
        x
        for T in (4, 8)
        for m in aggregators
        for x in _values(rows, mode="single-input", T=T, method=m, impl="polytask-representation")
    ]
    lines.append(
        f"- **Single-input, representation level**, every aggregator at T=4 and T=8: "
        f"{_span(v)} (target ≤ {TARGET_REPRESENTATION}×: "
        f"{_verdict(v, TARGET_REPRESENTATION)})."
    )
    parts = []
    for T, target in TARGET_EXACT.items():
        v = [
            x
            for m in aggregators
            for x in _values(rows, mode="single-input", T=T, method=m, impl="polytask-exact")
        ]
        naive = _ratio(rows, mode="single-input", T=T, method="upgrad", impl="naive-loop")
        jd = _ratio(rows, mode="single-input", T=T, method="upgrad", impl="torchjd")
        floor = _ratio(rows, mode="single-input", T=T, method="floor_exact", impl="cost-model")
        parts.append(
            f"{_span(v)} at T={T} (target ≤ {target:g}×: {_verdict(v, target)}; UPGrad by a "
            f"naive loop {naive}, by torchjd {jd}; floor of T activation + T weight-gradient "
            f"passes {floor})"
        )
    lines.append("- **Single-input, exact**, every aggregator: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def soft_penalty() -> str:
    data = _load(RESULTS / "soft_penalty.json")
    lines = [
        f"Penalty value + gradient, T copies of MiniLM ({data['rows'][0]['params_per_copy']:,} "
        f"parameters each), CPU, {data['threads']} threads, medians of {data['repeats']} "
        "alternating rounds:",
        "",
        "| T | loop over pairs × parameters (autograd) | polytask (O(T) closed form) "
        "| speedup | relative difference of the value | of the gradient |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['T']} | {r['naive_ms']:,.0f} ms | {r['polytask_ms']:,.0f} ms "
            f"| **{r['speedup']:.2f}×** | {r['rel_diff']:.1e} | {r['grad_rel_diff']:.1e} |"
        )
    return "\n".join(lines)


def serve_load() -> str:
    data = _load(RESULTS / "serve_load.json")
    summary = data["summary"]
    lines = [
        f"{data['run']}, task `{data['task']}`, one text per "
        f"request, closed-loop clients on 127.0.0.1 in their own process, "
        f"{data['seconds_per_cell']:g} s per cell, {data['threads']} torch thread(s) per server, "
        f"{data['cpus']} CPUs; batching on = `{data['modes']['on']}`, off = "
        f"`{data['modes']['off']}`:",
        "",
        "| clients | batching | requests/s | p50 ms | p99 ms | errors | mean inputs per batch |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['clients']} | {r['batching']} | {r['rps']:,.1f} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['errors']} | {r['mean_batch_inputs']} |"
        )
    lines += [
        "",
        f"At {summary['clients']} clients batching serves **{summary['rps_ratio']}×** the "
        f"requests/s at {summary['p99_ratio']}× the p99 latency; {summary['errors']} errors "
        "in the whole run.",
    ]
    return "\n".join(lines)


def throughput() -> str:
    data = _load(RESULTS / "throughput.json")
    names = {
        "article_loop": "plain loop in the style of the source article (pad every batch to 128)",
        "polytask": "polytask (length-bucketed batches, dynamic padding)",
    }
    lines = [
        "The same hard-sharing model (bundled MiniLM, "
        f"the three bundled tasks, batch {data['batch_size']}, one task per step, AdamW) trained "
        "two ways, each measurement in its own process, alternating, medians of "
        f"{data['repeats']} rounds × {data['steps']} timed steps (2-core CPU, "
        f"{data['threads']} threads):",
        "",
        "| data path | examples/s | padded tokens / example | peak RSS | speedup |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        speedup = f"{r['speedup']:.2f}×"
        if r["impl"] == "polytask":
            speedup = f"**{speedup}**"
        lines.append(
            f"| {names[r['impl']]} | {r['examples_per_s']:.2f} | "
            f"{r['padded_tokens_per_example']:.1f} | {r['peak_mb']:,} MB | {speedup} |"
        )
    precision = data.get("precision")
    if precision:
        rows = precision["rows"]
        tasks = list(rows[0]["test"])
        native = "has" if precision.get("bf16_native_on_this_cpu") else "has no"
        lines += [
            "",
            f"fp32 against bf16 autocast (`train.mixed_precision: bf16`) on the same CPU, which "
            f"{native} native bf16 (`python benchmarks/throughput.py --parts precision`): "
            f"{precision['config']}, one run per precision in its own "
            "process, fp32 first; examples/s over the training steps after two warm-up steps"
            + _load_note(precision)
            + ":",
            "",
            "| precision | examples/s | s / step | ratio | "
            + " | ".join(f"{t} test {rows[0]['primary_metric'][t]}" for t in tasks)
            + " |",
            "|---|---:|---:|---:|" + "---:|" * len(tasks),
        ]
        for r in rows:
            cells = [f"{r['test'][t][r['primary_metric'][t]]:.4f}" for t in tasks]
            lines.append(
                f"| {r['precision']} | {r['examples_per_s']:.2f} | {r['seconds_per_step']:.2f} | "
                f"{r['ratio']:.2f}× | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines)


MULTITASK_IMPLS = {
    "multitask": "(a) multi-task step: one `train_step` on all four tasks' rows",
    "single_sum": "(b) the four single-task steps on the same rows, summed",
    "article_loop": "(c) the source article's loop: the step padded to {length}, one backward",
}


def _run_name(label: str, run: dict[str, Any]) -> str:
    source = run["polytask"]
    dirty = " + uncommitted src/" if source.get("dirty") else ""
    return f"{label} (`{source['commit'][:8]}`{dirty})"


def multitask_step_text(data: dict[str, Any]) -> str:
    """The multi-task step block from ``multitask_step.json``: every run it holds."""
    runs: dict[str, dict[str, Any]] = data["runs"]
    first = next(iter(runs.values()))
    tasks = first.get("multitask", {}).get("tasks", {})
    sizes = ", ".join(f"{n} ({t['type']}, max_length {t['max_length']})" for n, t in tasks.items())
    lines = [
        "The multi-task path (`python benchmarks/multitask_step.py`): one training step on "
        f"the bundled demo tasks plus a long sentence-pair task, {sizes}; "
        "the same rows, drawn once from each task's stream, for every impl; each run's impls "
        "alternate in one process, medians after a warm-up round; tokens per step: real = "
        "the attention masks' sum, computed = rows × padded width of every encoder call:",
        "",
        "| run | step | s / step | ÷ (b) | real tokens | computed tokens | computed ÷ real |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, run in runs.items():
        for r in run.get("multitask", {}).get("rows", []):
            name = MULTITASK_IMPLS[r["impl"]].format(length=data["article_length"])
            lines.append(
                f"| {_run_name(label, run)} | {name} | {r['median_s']:.2f} | "
                f"{r['ratio_vs_single_sum']:.2f}× | {r['real_tokens']:,.0f} | "
                f"{r['computed_tokens']:,.0f} | {r['padded_over_real']:.2f}× |"
            )
    lines += [
        "",
        "Shared inputs: two classification tasks labelled on the same tweets, the rows "
        "encoded once (two segments over the same rows) or twice (collated twice):",
        "",
        "| run | method | once s / step | twice s / step | once ÷ twice |",
        "|---|---|---:|---:|---:|",
    ]
    for label, run in runs.items():
        for r in run.get("shared", {}).get("rows", []):
            how = (
                "equal weighting (one backward)"
                if r["single_input"] is None
                else (f"{r['aggregator']}, single_input `{r['single_input']}`")
            )
            lines.append(
                f"| {_run_name(label, run)} | {how} | {r['once_s']:.2f} | {r['twice_s']:.2f} | "
                f"{r['once_over_twice']:.2f}× |"
            )
    lines.append("")
    for label, run in runs.items():
        checks = "; ".join(
            f"{key.replace('_', ' ')} {a['value']:.2f}× (target ≤ {a['target']}×: "
            f"{'met' if a['met'] else '**not met**'})"
            for key, a in run["acceptance"].items()
        )
        lines.append(
            f"- {_run_name(label, run)}: `{run['command']}`, {run['repeats']} rounds × "
            f"{run['steps']} drawn steps, {run['threads']} torch threads, 1-minute load average "
            f"{run['load_average_before'][0]:.1f} before, {run['load_average_after'][0]:.1f} "
            f"after. {checks}."
        )
        lines += [f"  {note}" for note in run.get("notes", [])]
        lines += [
            f"  Part `{part}` failed (its error is in the JSON)."
            for part in ("multitask", "shared")
            if "error" in run.get(part, {})
        ]
    return "\n".join(lines)


def multitask_step() -> str:
    return multitask_step_text(_load(RESULTS / "multitask_step.json"))


def _load_note(part: dict[str, Any]) -> str:
    """The clause saying how loaded the machine was, or nothing when not recorded."""
    before, after = part.get("load_average_before"), part.get("load_average_after")
    if not before:
        return ""
    span = f"{before[0]:.1f}" + (f" before, {after[0]:.1f} after" if after else "")
    return f", measured while other jobs shared the 2 cores (1-minute load average {span})"


# ---- runs of `polytask train` (final_metrics.json) ----------------------------------------

DEMO = DOCS_RESULTS / "demo.json"
ARCHITECTURES = ("hard", "soft", "task_embedding", "film", "prefix", "mmoe", "switch")


def _metric_names(final: dict[str, Any], task: str) -> list[str]:
    primary = final["primary_metric"][task]
    values = final["tasks"][task].get("validation", {})
    return [primary] + [m for m in values if m not in (primary, "loss", "perplexity")]


def _metrics(values: dict[str, Any], names: list[str], bold: bool = False) -> str:
    if not values:
        return "—"
    cells = [f"{values[m]:.3f}" if m in values else "—" for m in names]
    if bold:
        cells[0] = f"**{cells[0]}**"
    return " / ".join(cells)


def final_metrics_table(final: dict[str, Any]) -> str:
    """The per-task table of one `polytask train` run's ``final_metrics.json``."""
    lines = [
        "| task | metric | validation | test | majority-class baseline (test) |",
        "|---|---|---:|---:|---:|",
    ]
    for task, values in final["tasks"].items():
        names = _metric_names(final, task)
        primary = " (primary)" if task == final.get("primary_task") else ""
        majority = values.get("majority_accuracy")
        lines.append(
            f"| {task}{primary} | {' / '.join(names)} | "
            f"{_metrics(values.get('validation', {}), names)} | "
            f"{_metrics(values.get('test', {}), names, bold=True)} | "
            f"{'—' if majority is None else f'{majority:.3f}'} |"
        )
    p = final["params"]
    heads = " / ".join(f"{n:,}" for n in p.get("per_task", {}).values())
    lines += [
        "",
        f"{final['steps']} training steps in {final['train_seconds']:g} s "
        f"(`train_seconds`), best checkpoint at step {final['best_step']}; parameters: "
        f"{p['total']:,} in all, {p['shared']:,} shared, {heads} per task, "
        f"{p['trainable']:,} trainable.",
    ]
    return "\n".join(lines)


def demo_results() -> str:
    if not DEMO.is_file():
        return _missing(
            DEMO, "make demo", "trains the bundled demo and writes `runs/demo/final_metrics.json`"
        )
    return final_metrics_table(_load(DEMO))


def _architecture_file(name: str) -> Path:
    return DEMO if name == "hard" else DOCS_RESULTS / f"architecture-{name}.json"


def architectures() -> str:
    """One row per architecture run on the bundled demo whose final_metrics.json is committed."""
    found = [(n, _architecture_file(n)) for n in ARCHITECTURES if _architecture_file(n).is_file()]
    if not found:
        return _missing(
            DOCS_RESULTS / "architecture-NAME.json",
            "polytask train -o runs/NAME architecture.name=NAME",
            "writes `runs/NAME/final_metrics.json` (hard sharing: `docs/results/demo.json`; "
            "expert routing: `polytask eval runs/NAME` shows `report.json`)",
        )
    first = _load(found[0][1])
    tasks = list(first["tasks"])
    lines = [
        "| run | steps | "
        + " | ".join(f"{t} {first['primary_metric'][t]} (test)" for t in tasks)
        + " | trainable parameters | JSON |",
        "|---|---:|" + "---:|" * len(tasks) + "---:|---|",
    ]
    for name, path in found:
        final = _load(path)
        cells = []
        for t in tasks:
            test = final["tasks"].get(t, {}).get("test", {})
            metric = final["primary_metric"].get(t)
            cells.append(f"{test[metric]:.3f}" if metric in test else "—")
        lines.append(
            f"| `{name}` | {final['steps']} | "
            + " | ".join(cells)
            + f" | {final['params']['trainable']:,} | `{_rel(path)}` |"
        )
    return "\n".join(lines)


def prefix_results() -> str:
    path = _architecture_file("prefix")
    if not path.is_file():
        return _missing(
            path,
            "polytask train configs/prefix-demo.yaml -o runs/prefix",
            "writes `runs/prefix/final_metrics.json`",
        )
    return final_metrics_table(_load(path))


LORA = RESULTS / "lora_vs_hard.json"


def lora_vs_hard() -> str:
    """LoRA per task against hard sharing and prefix tuning, same steps (one benchmark run)."""
    if not LORA.is_file():
        return _missing(LORA, "python benchmarks/lora_vs_hard.py", "writes it")
    data = _load(LORA)
    runs = data["results"]
    first = next(iter(runs.values()))
    tasks = list(first["metrics"])
    names = {
        t: next(k for k in ("accuracy", "f1", "pearson") if k in first["metrics"][t]["test"])
        for t in tasks
    }
    lines = [
        "| run | trainable parameters | vs hard | step s | vs hard | "
        + " | ".join(f"{t} {names[t]} (test)" for t in tasks)
        + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(tasks),
    ]
    for name, run in runs.items():
        ratio = run.get("vs_hard", {})
        cells = [f"{run['metrics'][t]['test'][names[t]]:.3f}" for t in tasks]
        lines.append(
            f"| `{name}` | {run['trainable_parameters']:,} | "
            f"{ratio.get('trainable_parameters', float('nan')):.2%} | "
            f"{run['step_seconds_mean']:.3f} | {ratio.get('step_time', float('nan')):.2f}× | "
            + " | ".join(cells)
            + " |"
        )
    steps = {run["steps"] for run in runs.values()}
    lines += [
        "",
        f"{'/'.join(map(str, sorted(steps)))} steps each, one evaluation at the end, one torch "
        "thread, each run its own `polytask train` process, one after another (step time: "
        "`step_seconds / steps`, training only; the runs shared the machine with other jobs, "
        "so the ratios carry that load's drift).",
    ]
    return "\n".join(lines)


# ---- diagnostics and experiments (docs/results, written by the polytask commands) ---------

SWEEP = DOCS_RESULTS / "sweep-aux.json"


def sweep_aux() -> str:
    if not SWEEP.is_file():
        return _missing(
            SWEEP,
            "polytask sweep-aux configs/demo_aux.yaml --out runs/sweep-aux ...",
            "(the full command is in `docs/auxiliary.md`) writes `runs/sweep-aux/sweep_aux.json`",
        )
    from polytask.experiments.sweep import markdown

    return markdown(_load(SWEEP)).rstrip("\n")


def compare() -> str:
    """``compare.md`` as ``polytask compare`` writes it, its summary lines as a list."""
    from polytask.experiments.summary import markdown

    lines = markdown(_load(DOCS_RESULTS / "compare.json")).rstrip("\n").splitlines()
    return "\n".join(
        f"- {line}" if line and not line.startswith(("|", "**")) else line for line in lines
    )


def diversity() -> str:
    from polytask.experiments.diversity import markdown

    data = _load(DOCS_RESULTS / "diversity.json")
    timing = data.get("timing", {})
    train = ", ".join(f"{a} {v['train_seconds']:g} s" for a, v in data["arms"].items())
    lines = [
        markdown(data).rstrip("\n"),
        "",
        f"Wall time {timing.get('wall_seconds', data['seconds']):g} s for the untuned "
        f"evaluation and both arms (training: {train}; "
        f"{timing.get('torch_threads', '?')} torch thread(s)"
        + (f", {timing['cpu_seconds']:g} s of CPU" if "cpu_seconds" in timing else "")
        + (
            ", 1-minute load average {} before, {} after".format(
                *timing["load_average_before_after"]
            )
            if "load_average_before_after" in timing
            else ""
        )
        + ").",
    ]
    return "\n".join(lines)


INSTRUCT = DOCS_RESULTS / "instruct_smollm2.json"


def instruct() -> str:
    data = _load(INSTRUCT)
    a = data["adapter"]
    p = data["params"]
    lines = [
        f"Config `{data['config']}`"
        + (f" with `{' '.join(data['overrides'])}`" if data["overrides"] else "")
        + f": {a['adapter']} r={a['r']}, alpha {a['alpha']}, dropout {a['dropout']:g} on "
        f"{', '.join(a['target_modules'])} ({p['trainable']:,} trained of {p['total']:,} "
        f"parameters), {data['steps']} steps, {data['examples']:,} training examples. "
        "Validation, untuned → tuned:",
        "",
        "| task | metric | untuned | tuned | Δ |",
        "|---|---|---:|---:|---:|",
    ]
    for task, row in data["tasks"].items():
        name = f"{task} (held out)" if row["held_out"] else task
        for metric in ("accuracy", "macro_f1", "entity_f1", "loss"):
            if metric in row["tuned"]:
                before, after = row["untuned"][metric], row["tuned"][metric]
                delta = f"{after - before:+.3f}".replace("-", "−")
                lines.append(f"| {name} | {metric} | {before:.3f} | {after:.3f} | {delta} |")
    s = data["seconds"]
    load = data.get("load_average_before_after")
    lines += [
        "",
        f"Wall time {s['total'] / 60:.1f} min: untuned evaluation {s['untuned_eval'] / 60:.1f} "
        f"min, training with its evaluation {s['train_and_final_eval'] / 60:.1f} min (loop "
        f"{s['train_loop']:g} s); {data['torch_threads']} torch threads, {data['cpu_seconds']:g} "
        "s of CPU"
        + (f", 1-minute load average {load[0]} before, {load[1]} after" if load else "")
        + ".",
        "",
        "Every run of this benchmark committed in `docs/results/`, each measured once with the "
        "`instruct` config of its day:",
        "",
        "| JSON | steps | LoRA dropout | tasks | wall | sentiment acc. | movies acc. | entity F1 |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    for path in sorted(DOCS_RESULTS.glob("instruct_smollm2*.json")):
        run = _load(path)
        t = run["tasks"]

        def change(task: str, metric: str, t: dict[str, Any] = t) -> str:
            if task not in t or metric not in t[task]["tuned"]:
                return "—"
            return f"{t[task]['untuned'][metric]:.3f} → {t[task]['tuned'][metric]:.3f}"

        lines.append(
            f"| `{path.name}` | {run['steps']} | {run['adapter'].get('dropout', 0):g} | "
            f"{len(t)} | {run['seconds']['total'] / 60:.1f} min | {change('sentiment', 'accuracy')}"
            f" | {change('movies', 'accuracy')} | {change('entities', 'entity_f1')} |"
        )
    return "\n".join(lines)


def solver_time() -> str:
    """docs/methods.md: each Gramian aggregator's ``weights()`` alone, T = 4 / 8 / 32."""
    path = RESULTS / "solver_time.json"
    if not path.exists():
        return _missing(path, "python benchmarks/solver_time.py", "writes it")
    data = _load(path)
    Ts = data["tasks"]
    cell: dict[tuple[str, int], dict[str, Any]] = {(r["method"], r["T"]): r for r in data["rows"]}
    methods = sorted({r["method"] for r in data["rows"]})
    head = "| aggregator | " + " | ".join(f"T={T} median (slowest kind) µs" for T in Ts) + " |"
    lines = [head, "|---|" + "---|" * len(Ts)]
    for m in methods:
        vals = []
        for T in Ts:
            r = cell.get((m, T))
            vals.append("—" if r is None else f"{r['median_us']:,.0f} ({r['max_kind_us']:,.0f})")
        lines.append(f"| `{m}` | " + " | ".join(vals) + " |")
    skipped = "; ".join(f"`{k}`: {v}" for k, v in sorted(data["skipped"].items()))
    lines += [
        "",
        f"{data['calls']} calls per Gramian kind ({', '.join(data['kinds'])}) after "
        f"{data['warmup']} warm-up calls, {data['threads']} thread, load average "
        f"{data['load_average']} when it ran. Not timed: {skipped or 'none'}.",
    ]
    return "\n".join(lines)


def _check_pairs(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{p['a']} / {p['b']}": p for p in result["cosine"]["pairs"]}


def check() -> str:
    plain = _load(DOCS_RESULTS / "check-demo.json")
    warm_path = DOCS_RESULTS / "check-demo-head-warmup-40.json"
    warm = _load(warm_path) if warm_path.is_file() else None
    head = "| pair | mean cosine | std | reading (random heads) |"
    rule = "|---|---:|---:|---|"
    if warm:
        head += f" with `--head-warmup {warm['head_warmup']}` ({warm['seconds']:g} s) |"
        rule += "---|"
    lines = [
        f"`polytask check` on the {plain['config']}, {plain['batches']} batches, "
        f"{plain['seconds']:g} s:",
        "",
        head,
        rule,
    ]
    warm_pairs = _check_pairs(warm) if warm else {}
    for name, p in _check_pairs(plain).items():
        row = f"| {name} | {p['mean']:+.3f} | {p['std']:.3f} | {p['label']} |"
        if warm:
            w = warm_pairs.get(name)
            row += f" {w['mean']:+.3f} {w['label']} |" if w else " — |"
        lines.append(row)
    scale = plain["loss_scale"]
    sizes = plain["datasets"]["sizes"]
    lines += [
        "",
        "Raw losses "
        + " / ".join(f"{v['loss']:.2f}" for v in scale["tasks"].values())
        + f" ({scale['advice']}); "
        + " / ".join(f"{n:,}" for n in sizes.values())
        + f" training examples (imbalance {plain['datasets']['imbalance']:.1f}×). "
        "Recommendations: "
        + "; ".join(f"*{r['advice']}* ({r['evidence']})" for r in plain["recommendations"])
        + ".",
    ]
    return "\n".join(lines)


def ner_gap() -> str:
    """benchmarks/ner_gap.py: NER's gradient, its share of the update, its learning curve."""
    data = _load(RESULTS / "ner_gap.json")
    summary, arms = data["summary"], data["arms"]
    lines = [
        "| arm | task | mean gradient norm on the encoder | mean cos(update, −gradient) |",
        "|---|---|---:|---:|",
    ]
    for arm, tasks in summary.items():
        for task, v in tasks.items():
            lines.append(f"| {arm} | {task} | {v['grad_norm']:.3f} | {v['update_cos']:+.3f} |")
    lines.append("")
    for arm, v in arms.items():
        curve = ", ".join(f"{c['step']}: {c['f1']:.3f}" for c in v["ner_validation_f1"])
        lines.append(f"- {arm}: NER validation F1 by step {curve}; test F1 {v['ner_test_f1']:.3f}")
    return "\n".join(lines)


def board_command(board: dict[str, Any], out: str) -> str:
    """The ``polytask compare`` command a leaderboard.json was written by, from what it
    records: its config, ``key=value`` overrides, the registered methods and the variants."""
    methods, variants = [], []
    order = list(board.get("runs", {}).get("methods", {}))  # as given (rows are ranked)
    for row in sorted(board["methods"], key=lambda r: order.index(r["method"])):
        keys = set(row["overrides"])
        picked = {v["name"] for v in row["overrides"].values() if isinstance(v, dict)}
        if keys <= {"weighting", "aggregator"} and row["method"] in picked:
            methods.append(row["method"])
        else:
            pairs = " ".join(f"{k}={json.dumps(v)}" for k, v in row["overrides"].items())
            variants.append(f" --variant '{row['method']}:{pairs}'")
    overrides = "".join(f" {o}" for o in board["overrides"])
    return (
        f"polytask compare {board['config']}{overrides} --methods {','.join(methods)}"
        f"{''.join(variants)} --seeds {len(board['seeds'])} -o {out}"
    )


def _recorded(name: str, out: str, fallback: str) -> str:
    """A leaderboard's command from its JSON (one written before the JSON recorded its
    overrides: ``fallback``, the command as run)."""
    path = DOCS_RESULTS / f"leaderboard-{name}.json"
    board = _load(path) if path.is_file() else {}
    return board_command(board, out) if "overrides" in board else fallback


LEADERBOARDS = {
    "sentiment_transfer": _recorded(
        "sentiment_transfer",
        "runs/lb-sentiment",
        "polytask compare sentiment_transfer --methods equal,uncertainty,famo,pcgrad,upgrad,"
        "mgda --seeds 3 -o runs/lb-sentiment",
    ),
    "demo": "polytask compare demo train.max_steps=200 "
    "--methods equal,uncertainty,famo,pcgrad,upgrad,mgda "
    "--variant 'aux0.2:tasks.sentiment.auxiliary=true tasks.sentiment.weight=0.2 "
    "tasks.movies.auxiliary=true tasks.movies.weight=0.2' "
    "--variant 'temperature-k2:sampler.name=temperature sampler.alpha=0.1 "
    "sampler.tasks_per_step=2' --seeds 3 -o runs/lb-demo --resume",
}


def check_file(name: str) -> Path:
    """check's forecast beside a leaderboard: with warmed-up heads (the demo's check block
    keeps its random-heads run in check-demo.json)."""
    return DOCS_RESULTS / (
        "check-demo-head-warmup-40.json" if name == "demo" else f"check-{name}.json"
    )


def _run_counts(board: dict[str, Any]) -> str:
    runs, trained = board["runs_trained"] + board["runs_reused"], board["runs_trained"]
    text = (
        f"{runs} runs ({trained} trained by this invocation in {board['wall_seconds'] / 60:.0f} min"
    )
    if "run_seconds" in board:
        text += f"; the training time of all {runs}, summed: {board['run_seconds'] / 60:.0f} min"
    return text + ")"


def _statuses(board: dict[str, Any], task: str) -> str:
    counts = {"better": 0, "matches": 0, "worse": 0}
    for row in board["methods"]:
        counts[row["tasks"][task]["status"]] += 1
    return ", ".join(f"{s} {n}" for s, n in counts.items() if n) + f" (of {len(board['methods'])})"


def leaderboard(name: str) -> Callable[[], str]:
    """One scenario's leaderboard as ``leaderboard.md`` has it, then check's forecast per
    task beside what the leaderboard measured."""

    def render() -> str:
        from polytask.experiments.leaderboard_text import markdown

        for path in (
            DOCS_RESULTS / f"leaderboard-{name}.json",
            check_file(name),
        ):
            if not path.is_file():
                return _missing(path, LEADERBOARDS[name], "writes it")
        board = _load(DOCS_RESULTS / f"leaderboard-{name}.json")
        forecast = _load(check_file(name))["outcome"]
        best = board["methods"][0]
        lines = [
            f"`{LEADERBOARDS[name]}`: {_run_counts(board)} on this machine.",
            "",
            markdown(board).rstrip("\n"),
            "",
            "| task | `polytask check` expected (before training) | the leaderboard measured: "
            "status per method | best method |",
            "|---|---|---|---|",
        ]
        for task in board["baselines"]:
            cell = best["tasks"][task]
            lines.append(
                f"| {task} | {forecast['tasks'][task]['outcome']} | {_statuses(board, task)} | "
                f"{best['method']}: {cell['status']} ({cell['delta_pct']:+.2f}%) |"
            )
        deploy = sum(r["verdict"]["deploy_multitask"] for r in board["methods"])
        lines += [
            "",
            f"check's forecast: *{forecast['forecast']}*; the leaderboard: {deploy} of "
            f"{len(board['methods'])} methods' verdicts say deploy multi-task (best: "
            f"{best['method']}, {best['verdict']['text']}).",
        ]
        return "\n".join(lines)

    return render


LABELS = "labels-sentiment_transfer-*.json"
LABELS_BOARD = DOCS_RESULTS / "leaderboard-sentiment_transfer.json"
LABELS_COMMAND = (
    "polytask compare sentiment_transfer tasks.amazon.data.max_train_examples=N "
    "--methods equal --seeds 3 -o DIR"
)


def _gain(cell: dict[str, Any]) -> str:
    """A task cell's Δ%, its margin in seed-noise units and status."""
    margin = cell.get("margin_sigmas")
    shown = "n/a" if margin is None else f"{margin:+.2f}σ"
    return f"{cell['delta_pct']:+.2f}% ({shown}, {cell['status']})"


def sharing_vs_labels() -> str:
    """equal vs the single-task model on the primary task, one leaderboard per label count."""
    from polytask.report.leaderboard_cells import stats as _stat

    files = sorted(DOCS_RESULTS.glob(LABELS))
    if not files:
        return _missing(DOCS_RESULTS / LABELS, LABELS_COMMAND, "writes leaderboard.json")
    boards = [_load(f) for f in files]
    if LABELS_BOARD.is_file():  # the packaged config's count: the leaderboard's equal row
        boards.append(_load(LABELS_BOARD))
    primary = boards[0]["primary_task"]
    boards.sort(key=lambda b: b["train_examples"][primary])
    lines = [
        f"| {primary} labels | single-task (test) | multi-task `equal` (test) | Δ% (margin, "
        "status) | validation: single-task | validation: multi-task | validation Δ% (margin, "
        "status) |",
        "|---:|---:|---:|---|---:|---:|---|",
    ]
    for board in boards:  # the validation margin is what chose the config's label count
        [row] = [r for r in board["methods"] if r["method"] == "equal"]
        cell, valid = row["tasks"][primary], row["tasks"][primary]["validation"]
        lines.append(
            f"| {board['train_examples'][primary]} | {_stat(cell['single'])} | "
            f"{_stat(cell['multi'])} | {_gain(cell)} | {_stat(valid['single'])} | "
            f"{_stat(valid['multi'])} | {_gain(valid)} |"
        )
    first = boards[0]
    others = ", ".join(f"{t}: {n}" for t, n in first["train_examples"].items() if t != primary)
    lines += [
        "",
        f"{boards[0]['baselines'][primary]['metric']}, mean ± sample std over seeds "
        f"{', '.join(str(s) for s in first['seeds'])} (each seed draws its own {primary} "
        f"subset; the single-task and multi-task runs of a seed share it); training rows of "
        f"the other tasks: {others}. margin: the difference in units of "
        "sqrt(std_multi² + std_single²); 'better' beyond 1σ. "
        + "; ".join(f"{b['train_examples'][primary]} labels: {_run_counts(b)}" for b in boards)
        + ".",
    ]
    return "\n".join(lines)


RESOLVE = RESULTS / "resolve_every.json"
RESOLVE_BOARD = DOCS_RESULTS / "leaderboard-resolve_every.json"
RESOLVE_COMMAND = (  # run when the packaged config had 300 Amazon labels: said explicitly
    "polytask compare sentiment_transfer tasks.amazon.data.max_train_examples=300 "
    "--methods nash_mtl --variant "
    "'nash_mtl-N10:aggregator.name=nash_mtl aggregator.resolve_every=10' --seeds 3 -o DIR"
)


def resolve_every() -> str:
    """Step time per N (one process, side by side), then the leaderboard of N = 1 vs N = 10."""
    if not RESOLVE.is_file():
        return _missing(RESOLVE, "python benchmarks/resolve_every.py", "writes it")
    data = _load(RESOLVE)
    lines = [
        f"Step time, `{data['aggregator']}` on the `{data['config']}` config "
        f"({data['batch_size_per_task']} rows per task, {data['steps_per_round']} steps per N "
        f"per round, {data['rounds']} rounds, {data['threads']} thread):",
        "",
        "| N | mean step s | vs N = 1 | solve step s (median) | reuse step s (median) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in data["rows"]:
        reuse = "—" if row["reuse_s"] is None else f"{row['reuse_s']:.3f}"
        lines.append(
            f"| {row['resolve_every']} | {row['mean_s']:.3f} | {row['ratio']:.3f}× | "
            f"{row['solve_s']:.3f} | {reuse} |"
        )
    lines += ["", data["note"] + "."]
    if not RESOLVE_BOARD.is_file():
        lines += ["", _missing(RESOLVE_BOARD, RESOLVE_COMMAND, "writes leaderboard.json")]
        return "\n".join(lines)
    from polytask.experiments.leaderboard_text import markdown

    board = _load(RESOLVE_BOARD)
    lines += [
        "",
        f"Δm on the `sentiment_transfer` scenario with 300 Amazon labels, `{RESOLVE_COMMAND}`: "
        f"{_run_counts(board)}.",
        "",
        markdown(board).rstrip("\n"),
    ]
    return "\n".join(lines)


def _sci(value: float) -> str:
    return "0" if value == 0 else f"{value:+.2e}".replace("-", "−")


def affinity() -> str:
    data = _load(DOCS_RESULTS / "affinity-demo.json")
    tasks = data["tasks"]
    lines = [
        f"`polytask affinity` on the {data['config']} config, {data['steps']} steps "
        f"({data['measured']} measured, every {data['every']}, {data['lookahead']} lookahead):",
        "",
        "| step on ↓ / loss of → | " + " | ".join(tasks) + " |",
        "|---|" + "---:|" * len(tasks),
    ]
    for i, task in enumerate(tasks):
        lines.append(f"| {task} | " + " | ".join(_sci(v) for v in data["matrix"][i]) + " |")
    lines += ["", "| K | groups | score |", "|---|---|---:|"]
    for k, entry in data["groups"].items():
        groups = " ".join("{" + ", ".join(g) + "}" for g in entry["groups"])
        lines.append(f"| {k} | {groups} | {_sci(entry['score'])} |")
    return "\n".join(lines)


def every_method() -> str:
    path = RESULTS / "every_method.json"
    data = _load(path)
    written = {"finite", "validation", "seconds"}  # what benchmarks/every_method.py writes
    if any("source" in r or not written <= set(r) for r in data["rows"]):
        return _missing(
            path,
            "python benchmarks/every_method.py",
            "trains every method briefly and writes it (the committed rows were typed in "
            "from printed lines, so they are not published)",
        )
    lines = [
        f"{data['steps']} steps per method, {data['batch_per_task']} examples per task per step, "
        f"training loss averaged over the first and last {data['window']} steps "
        f"(torch {data.get('torch', '?')}):",
        "",
        "| method | ok | "
        + " | ".join(f"{t} loss first → last" for t in _every_tasks(data))
        + " | seconds |",
        "|---|---|" + "---|" * len(_every_tasks(data)) + "---:|",
    ]
    for r in data["rows"]:
        cells = [f"{r['first_loss'][t]:.3f} → {r['last_loss'][t]:.3f}" for t in _every_tasks(data)]
        lines.append(
            f"| `{r['method']}` | {'yes' if r['ok'] else '**no**'} | "
            + " | ".join(cells)
            + f" | {r['seconds']:g} |"
        )
    ok = sum(r["ok"] for r in data["rows"])
    lines += ["", f"{ok} of {len(data['rows'])} methods pass (every loss finite and falling)."]
    if not data.get("complete", True):
        lines[-1] += (
            f" Only {len(data['rows'])} of the {data['methods']} methods are measured so far: "
            "the run was interrupted, and `python benchmarks/every_method.py --resume` "
            "measures the rest."
        )
    return "\n".join(lines)


def _every_tasks(data: dict[str, Any]) -> list[str]:
    return list(data["rows"][0]["first_loss"]) if data["rows"] else []


# ---- the blocks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    render: Callable[[], str]
    sources: tuple[Path, ...]
    command: str

    def text(self) -> str:
        files = ", ".join(f"`{_rel(p)}`" for p in self.sources)
        return (
            f"{self.render()}\n\n"
            f"<sub>Rendered by `{RENDER}` from {files}, written by `{self.command}`.</sub>"
        )


def applicability() -> str:
    """docs/methods.md: every weighting × aggregator × tasks per step × architecture family."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "applicability", Path(__file__).parent / "applicability.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text: str = module.render(_load(RESULTS / "applicability.json"))
    return text


BLOCKS: dict[str, Block] = {
    "applicability": Block(
        applicability, (RESULTS / "applicability.json",), "python benchmarks/applicability.py"
    ),
    "demo-results": Block(
        demo_results, (DEMO,), "make demo (runs/demo/final_metrics.json, copied)"
    ),
    "architectures": Block(
        architectures,
        (DOCS_RESULTS / "architecture-NAME.json",),
        "polytask train -o runs/NAME architecture.name=NAME (final_metrics.json, copied)",
    ),
    "prefix-results": Block(
        prefix_results,
        (_architecture_file("prefix"),),
        "polytask train configs/prefix-demo.yaml -o runs/prefix (final_metrics.json, copied)",
    ),
    "lora-vs-hard": Block(lora_vs_hard, (LORA,), "python benchmarks/lora_vs_hard.py --steps 60"),
    "step_cost": Block(
        step_cost,
        (RESULTS / "step_cost.json",),
        "python benchmarks/step_cost.py (later rows: --merge, see merge_notes)",
    ),
    "soft_penalty": Block(
        soft_penalty, (RESULTS / "soft_penalty.json",), "python benchmarks/soft_penalty.py"
    ),
    "serve_load": Block(
        serve_load, (RESULTS / "serve_load.json",), "python benchmarks/serve_load.py"
    ),
    "throughput": Block(
        throughput, (RESULTS / "throughput.json",), "python benchmarks/throughput.py"
    ),
    "multitask_step": Block(
        multitask_step,
        (RESULTS / "multitask_step.json",),
        "python benchmarks/multitask_step.py (each run's command is listed above)",
    ),
    "every_method": Block(
        every_method, (RESULTS / "every_method.json",), "python benchmarks/every_method.py"
    ),
    "sweep-aux": Block(sweep_aux, (SWEEP,), "polytask sweep-aux (DIR/sweep_aux.json, copied)"),
    "instruct": Block(
        instruct,
        tuple(sorted(DOCS_RESULTS.glob("instruct_smollm2*.json"))),
        "python benchmarks/instruct_smollm2.py",
    ),
    "diversity": Block(
        diversity,
        (DOCS_RESULTS / "diversity.json",),
        "polytask diversity diversity_single diversity_mixed -o runs/diversity "
        "(diversity.json, copied)",
    ),
    "compare": Block(
        compare,
        (DOCS_RESULTS / "compare.json",),
        "polytask compare demo train.max_steps=250 -o runs/compare-demo (compare.json, copied)",
    ),
    "check": Block(
        check,
        (DOCS_RESULTS / "check-demo.json", DOCS_RESULTS / "check-demo-head-warmup-40.json"),
        "polytask check --head-warmup 0 --json -o FILE (and --head-warmup 40)",
    ),
    **{
        f"leaderboard-{name}": Block(
            leaderboard(name),
            (DOCS_RESULTS / f"leaderboard-{name}.json", check_file(name)),
            f"{command} (leaderboard.json, copied) and "
            f"polytask check {name} --head-warmup 40 -o FILE",
        )
        for name, command in LEADERBOARDS.items()
    },
    "sharing-vs-labels": Block(
        sharing_vs_labels,
        (*sorted(DOCS_RESULTS.glob(LABELS)), LABELS_BOARD),
        LABELS_COMMAND + " (leaderboard.json, copied; the packaged count: the leaderboard's)",
    ),
    "ner_gap": Block(ner_gap, (RESULTS / "ner_gap.json",), "python benchmarks/ner_gap.py"),
    "resolve-every": Block(
        resolve_every,
        (RESOLVE, RESOLVE_BOARD),
        "python benchmarks/resolve_every.py and " + RESOLVE_COMMAND + " (leaderboard.json, copied)",
    ),
    "solver-time": Block(
        solver_time, (RESULTS / "solver_time.json",), "python benchmarks/solver_time.py"
    ),
    "affinity": Block(
        affinity,
        (DOCS_RESULTS / "affinity-demo.json",),
        "polytask affinity --steps 20 -o docs/results/affinity-demo.json",
    ),
}

MARKER = re.compile(r"<!-- (/?)([A-Za-z0-9_.-]+) -->")


def documents(root: Path = ROOT) -> list[Path]:
    """The files whose marked blocks are published numbers: README.md and docs/**/*.md."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def blocks_in(text: str) -> list[tuple[str, int, int]]:
    """(name, start, end) of every ``<!-- name -->...<!-- /name -->`` block's inner text.

    Raises ValueError on an unclosed, unopened or nested marker."""
    found: list[tuple[str, int, int]] = []
    open_name: str | None = None
    start = 0
    for m in MARKER.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if not closing:
            if open_name is not None:
                raise ValueError(f"<!-- {name} --> opened inside <!-- {open_name} -->")
            open_name, start = name, m.end()
        else:
            if name != open_name:
                raise ValueError(f"<!-- /{name} --> closes {open_name or 'nothing'}")
            found.append((name, start, m.start()))
            open_name = None
    if open_name is not None:
        raise ValueError(f"<!-- {open_name} --> is never closed")
    return found


def render_text(text: str, blocks: dict[str, Block] = BLOCKS) -> str:
    """``text`` with every marked block's inner text rendered anew (KeyError: no renderer)."""
    cache: dict[str, str] = {}
    out, last = [], 0
    for name, start, end in blocks_in(text):
        if name not in cache:
            cache[name] = blocks[name].text()
        out += [text[last:start], "\n", cache[name], "\n"]
        last = end
    out.append(text[last:])
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite every marked block")
    group.add_argument("--check", action="store_true", help="exit 1 if any block differs")
    group.add_argument("block", nargs="?", choices=list(BLOCKS), help="print one block")
    args = parser.parse_args()
    if args.block:
        print(BLOCKS[args.block].text())
        return
    rendered = {}
    for path in documents():  # every file renders before any is written
        text = path.read_text("utf-8")
        try:
            new = render_text(text)
        except KeyError as err:
            sys.exit(f"{_rel(path)}: no renderer for block <!-- {err.args[0]} -->")
        except ValueError as err:
            sys.exit(f"{_rel(path)}: {err}")
        if new != text:
            rendered[path] = new
    stale = [_rel(p) for p in rendered]
    if args.write:
        for path, new in rendered.items():
            path.write_text(new, "utf-8")
    verb = "rewrote" if args.write else "differ from their JSON"
    print(f"{len(stale)} file(s) {verb}: {', '.join(stale) or '-'}")
    if args.check and stale:
        sys.exit(1)


if __name__ == "__main__":
    main()
