"""What ``polytask check`` expects sharing to do to each task, before anything is trained.

The rules follow the source article's account of when multi-task learning pays, applied to
what check measured (docs/check.md, part 6). For each task ``t``, with its **partners** the
other tasks of its granularity (:attr:`polytask.tasks.base.TaskType.level`: token tagging
vs whole-sequence classification / regression):

1. **Granularity mismatch.** No partner, and the other tasks together hold at least as
   many training examples: ``expect losses``. The encoder is shared with tasks that want
   other features (one label per token vs one per text), and their data outweighs ``t``'s.
2. **Measured conflict.** A partner's gradient cosine is negative beyond its noise (mean +
   2 standard errors < 0, cosines measured with warmed-up heads): ``expect losses``.
3. **Small task, data-rich partner.** A partner with at least ``DATA_RICH`` times ``t``'s
   training examples, and no measured conflict: ``expect gains`` (the small task borrows
   what the related task's data teaches the encoder).
4. Otherwise ``unclear``: partners of comparable size (each is about as well served alone),
   or a data-rich ``t`` beside smaller partners. The change is expected within noise.

Cosines count as evidence only when check warmed the heads up (``--head-warmup``; random
heads make every cosine read near 0) and only when they clear their noise: the standard
error over the ``--batches`` batches, ``std / sqrt(N)``. The numbers behind each outcome
are quoted in its evidence. ``forecast`` sums them up for the served tasks.
"""

from __future__ import annotations

import math
from typing import Any

from polytask.config.run import RunConfig
from polytask.diagnostics.rules import CLEARS

#: a partner with this many times the task's training examples is data-rich
DATA_RICH = 4.0

GAINS, LOSSES, UNCLEAR = "expect gains", "expect losses", "unclear"


def _level(type_name: str) -> str:
    from polytask.tasks import task_type

    return task_type(type_name).level


def _pair(result: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    return next(p for p in result["cosine"]["pairs"] if {p["a"], p["b"]} == {a, b})


def cosine_evidence(result: dict[str, Any], a: str, b: str) -> tuple[str, str]:
    """``(reading, text)`` of the pair's cosine: ``positive`` / ``negative`` beyond its
    noise, ``noise`` within it, or ``uninformative`` (random heads)."""
    pair = _pair(result, a, b)
    se = pair["std"] / math.sqrt(result["batches"])
    batches = result["batches"]
    text = f"cosine {a}/{b} {pair['mean']:+.3f} ± {CLEARS * se:.3f} (2 s.e., {batches} batches)"
    if not result["head_warmup"]:
        return "uninformative", text + ", random heads: uninformative (use --head-warmup)"
    if batches < 2:
        return "noise", text + ": one batch has no spread, no evidence either way"
    if pair["mean"] - CLEARS * se > 0:
        return "positive", text + ": positive beyond noise"
    if pair["mean"] + CLEARS * se < 0:
        return "negative", text + ": negative beyond noise"
    return "noise", text + ": within noise, no evidence either way"


def task_outcome(result: dict[str, Any], task: str) -> dict[str, str]:
    """One task's expected outcome under sharing and the numbers behind it."""
    tasks: list[str] = result["tasks"]
    sizes: dict[str, int] = result["datasets"]["sizes"]
    types = {t: v["type"] for t, v in result["loss_scale"]["tasks"].items()}
    level = _level(types[task])
    partners = [p for p in tasks if p != task and _level(types[p]) == level]
    others = [p for p in tasks if p != task and p not in partners]
    if not partners:
        rest = sum(sizes[p] for p in others)
        facts = (
            f"the only {level}-level task beside {', '.join(others)} "
            f"({_level(types[others[0]])}-level); {task} {sizes[task]:,} training examples, "
            f"they {rest:,} ({rest / sizes[task]:.1f}x)"
        )
        cosines = "; ".join(cosine_evidence(result, task, p)[1] for p in others)
        outcome = LOSSES if rest >= sizes[task] else UNCLEAR
        return {"outcome": outcome, "evidence": f"{facts}; {cosines}"}
    readings = {p: cosine_evidence(result, task, p) for p in partners}
    quoted = "; ".join(text for _, text in readings.values())
    conflict = [p for p, (reading, _) in readings.items() if reading == "negative"]
    if conflict:
        return {
            "outcome": LOSSES,
            "evidence": f"gradient conflict with {', '.join(conflict)}: {quoted}",
        }
    rich = [p for p in partners if sizes[p] >= DATA_RICH * sizes[task]]
    if rich:
        best = max(rich, key=lambda p: sizes[p])
        facts = (
            f"{level}-level like {', '.join(rich)}; {best} has {sizes[best] / sizes[task]:.1f}x "
            f"its training examples ({sizes[best]:,} vs {sizes[task]:,})"
        )
        return {"outcome": GAINS, "evidence": f"{facts}; {quoted}"}
    largest = max(partners, key=lambda p: sizes[p])
    ratio = sizes[largest] / sizes[task]
    if ratio < 1 / DATA_RICH:
        facts = f"the data-rich one beside {', '.join(partners)} ({largest} has {ratio:.2f}x its"
    else:
        facts = f"{level}-level partners of comparable size ({largest} has {ratio:.2f}x its"
    return {
        "outcome": UNCLEAR,
        "evidence": f"{facts} examples): a change within noise either way; {quoted}",
    }


def outcomes(config: RunConfig, result: dict[str, Any]) -> dict[str, Any]:
    """Every task's expected outcome and the forecast for the served (non-auxiliary) ones."""
    per_task = {t: task_outcome(result, t) for t in result["tasks"]}
    served = [t.name for t in config.tasks if not t.auxiliary and t.name in per_task]
    critical = [t.name for t in config.tasks if t.critical and t.name in served]
    losing = [t for t in critical if per_task[t]["outcome"] == LOSSES]
    gaining = [t for t in served if per_task[t]["outcome"] == GAINS]
    if losing:
        text = f"expect the single-task models to stay better on {', '.join(losing)}"
    elif gaining:
        text = f"expect multi-task to pay on {', '.join(gaining)}, the rest within noise"
    else:
        text = "no task is expected to change beyond noise: unclear"
    return {"tasks": per_task, "forecast": text, "deploy_expected": not losing and bool(gaining)}
