"""Markdown tables for the README, rendered from the committed benchmark results.

    python benchmarks/readme_tables.py step_cost|soft_penalty|serve_load|throughput  # prints

The README's numbers come from ``benchmarks/results/*.json`` only; this script formats
them, it measures nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

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


def step_cost() -> str:
    data = json.loads((RESULTS / "step_cost.json").read_text())
    rows = data["rows"]
    Ts = sorted({r["T"] for r in rows})
    big = max(Ts)
    mid = 4 if 4 in Ts else Ts[len(Ts) // 2]
    lines = [
        f"Step time ÷ the equal-weighted step, bundled MiniLM on CPU ({data['threads']} threads), "
        f"{data['per_task']} examples per task, ≤ {data['length']} tokens, medians of "
        f"{_rounds(data)} alternating rounds (`benchmarks/results/step_cost.json`). "
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
        "",
        "UPGrad three ways, same run (ratio ÷ equal step; peak RSS of the process):",
        "",
        "| mode | T | polytask | naive loop (T × `backward(retain_graph=True)`) | torchjd 0.18 "
        "| peak MB polytask / naive / torchjd |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for mode, ours in (("multi-input", "polytask-segments"), ("single-input", "polytask-exact")):
        for T in Ts:
            peak = []
            for impl in (ours, "naive-loop", "torchjd"):
                match = [
                    r
                    for r in rows
                    if r["mode"] == mode
                    and r["T"] == T
                    and r["impl"] == impl
                    and r["method"] == "upgrad"
                ]
                peak.append(str(match[0]["peak_mb"]) if match else "—")
            lines.append(
                f"| {mode} | {T} | {_ratio(rows, mode=mode, T=T, method='upgrad', impl=ours)} | "
                f"{_ratio(rows, mode=mode, T=T, method='upgrad', impl='naive-loop')} | "
                f"{_ratio(rows, mode=mode, T=T, method='upgrad', impl='torchjd')} | "
                f"{' / '.join(peak)} |"
            )
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
    return "\n".join(lines)


def soft_penalty() -> str:
    data = json.loads((RESULTS / "soft_penalty.json").read_text())
    lines = [
        f"Penalty value + gradient, T copies of MiniLM ({data['rows'][0]['params_per_copy']:,} "
        f"parameters each), CPU, {data['threads']} threads, medians of {data['repeats']} "
        "alternating rounds (`benchmarks/results/soft_penalty.json`):",
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
    data = json.loads((RESULTS / "serve_load.json").read_text())
    summary = data["summary"]
    lines = [
        f"`python benchmarks/serve_load.py`: {data['run']}, task `{data['task']}`, one text per "
        f"request, closed-loop clients on 127.0.0.1 in their own process, "
        f"{data['seconds_per_cell']:g} s per cell, {data['threads']} torch thread(s) per server, "
        f"{data['cpus']} CPUs; batching on = `{data['modes']['on']}`, off = "
        f"`{data['modes']['off']}` (`benchmarks/results/serve_load.json`):",
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
    data = json.loads((RESULTS / "throughput.json").read_text())
    names = {
        "article_loop": "plain loop in the style of the source article (pad every batch to 128)",
        "polytask": "polytask (length-bucketed batches, dynamic padding)",
    }
    lines = [
        "`python benchmarks/throughput.py` trains the same hard-sharing model (bundled MiniLM, "
        f"the three bundled tasks, batch {data['batch_size']}, one task per step, AdamW) two "
        "ways, each measurement in its own process, alternating, medians of "
        f"{data['repeats']} rounds × {data['steps']} timed steps; from "
        f"`benchmarks/results/throughput.json` (2-core CPU, {data['threads']} threads):",
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
            f"{native} native bf16: {precision['config']}, one run per precision in its own "
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


def _load_note(part: dict[str, Any]) -> str:
    """The clause saying how loaded the machine was, or nothing when not recorded."""
    before, after = part.get("load_average_before"), part.get("load_average_after")
    if not before:
        return ""
    span = f"{before[0]:.1f}" + (f" before, {after[0]:.1f} after" if after else "")
    return f", measured while other jobs shared the 2 cores (1-minute load average {span})"


TABLES = {
    "step_cost": step_cost,
    "soft_penalty": soft_penalty,
    "serve_load": serve_load,
    "throughput": throughput,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=list(TABLES))
    args = parser.parse_args()
    print(TABLES[args.benchmark]())


if __name__ == "__main__":
    main()
