"""The decision rules of docs/check.md, applied to the measurements of ``polytask check``.

Each rule returns ``{"topic", "advice", "evidence"}``; the evidence quotes the numbers that
triggered it. Thresholds are the rule of thumb (cosine ±0.1) and plain ratios, named here
so the docs and the tests can point at them:

* tasks are **related** when every pair's mean cosine is > +0.1, **in strong
  interference** when some pair's is < −0.1, otherwise **partially interfering**;
* dataset sizes are **similar** when largest / smallest ≤ ``SIMILAR_SIZES``;
* loss scales need normalising when largest / smallest raw loss ≥ ``LOSS_RATIO_HIGH``;
* the primary task is **small** when its training set is < ``SMALL_PRIMARY`` of the largest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from polytask.config.run import RunConfig

#: how a rule adds a recommendation: ``add(topic, advice, evidence)``
Add = Callable[[str, str, str], None]

SIMILAR_SIZES = 4.0
LOSS_RATIO_HIGH = 10.0
LOSS_RATIO_SOME = 3.0
SMALL_PRIMARY = 0.25
#: the rule of thumb's band around zero
NEUTRAL = 0.1
#: standard errors a mean cosine must clear to count as evidence
CLEARS = 2.0


def surgery() -> str:
    """The aggregators meant for conflicting gradients (``advised_for_conflict``), by name
    from the registry; they combine every task's gradient, so every task in every step."""
    from polytask.aggregation import AGGREGATORS

    names = [n for n in AGGREGATORS.names() if AGGREGATORS.get(n).advised_for_conflict]
    return " / ".join(names) + " (with sampler.tasks_per_step: all)"


def scale_weightings(every_step: bool) -> list[str]:
    """The weightings that adapt to loss scales and that apply at this sampler setting."""
    from polytask.weighting import WEIGHTINGS

    return [
        n
        for n in WEIGHTINGS.names()
        if WEIGHTINGS.get(n).adapts_to_scale
        and (every_step or not WEIGHTINGS.get(n).needs_all_tasks)
    ]


def adapts_to_scale(weighting: str) -> bool:
    from polytask.weighting import WEIGHTINGS

    return bool(WEIGHTINGS.get(weighting).adapts_to_scale)


def loss_scale_advice(ratio: float, weighting: str, every_step: bool = True) -> str:
    """Whether the raw loss scales need normalising (largest / smallest loss = ``ratio``)."""
    if adapts_to_scale(weighting) and ratio >= LOSS_RATIO_SOME:
        return f"scales differ {ratio:.1f}x; the configured '{weighting}' weighting adapts to it"
    choices = " or ".join(scale_weightings(every_step))
    if ratio >= LOSS_RATIO_HIGH:
        return f"normalise: scales differ {ratio:.1f}x (weighting {choices})"
    if ratio >= LOSS_RATIO_SOME:
        return f"consider weighting {choices}: scales differ {ratio:.1f}x"
    return f"not needed: scales within {ratio:.1f}x"


def recommend(config: RunConfig, result: dict[str, Any]) -> list[dict[str, str]]:
    """Recommendations with their evidence, from the measured ``result`` of a check."""
    recs: list[dict[str, str]] = []

    def add(topic: str, advice: str, evidence: str) -> None:
        recs.append({"topic": topic, "advice": advice, "evidence": evidence})

    _sharing_rule(config, result, add)
    _sampling_rule(result, add)
    _scale_rule(config, result, add)
    _primary_rule(config, result, add)
    return recs


def pair_reading(pair: dict[str, Any], batches: int, warmed: bool) -> str:
    """The rule of thumb on a pair's cosine, read only where it clears its noise.

    ``interference`` / ``positive transfer``: the mean ± ``CLEARS`` standard errors
    (``std / sqrt(batches)``) lies wholly beyond ∓0.1; ``neutral``: wholly inside the band,
    heads warmed up (random heads read near 0 whatever the tasks); else ``no evidence``
    (one batch has no spread to judge its noise by).
    """
    if batches < 2:
        return "no evidence"
    reach = CLEARS * pair["std"] / batches**0.5
    if pair["mean"] + reach < -NEUTRAL:
        return "interference"
    if pair["mean"] - reach > NEUTRAL:
        return "positive transfer"
    if warmed and abs(pair["mean"]) + reach <= NEUTRAL:
        return "neutral"
    return "no evidence"


def _fmt_clear(pair: dict[str, Any], batches: int) -> str:
    reach = CLEARS * pair["std"] / batches**0.5
    return f"{pair['a']}/{pair['b']} {pair['mean']:+.3f} ± {reach:.3f}"


def _sharing_rule(config: RunConfig, result: dict[str, Any], add: Add) -> None:
    """Interference → gradient surgery (and the culprit task); partial → softer sharing;
    related → hard sharing, with a temperature sampler when sizes differ. Each reading must
    clear its noise (:func:`pair_reading`); otherwise the advice says there is no evidence."""
    tasks: list[str] = result["tasks"]
    pairs = result["cosine"]["pairs"]
    imbalance: float = result["datasets"]["imbalance"]
    n, warmed = result["batches"], bool(result["head_warmup"])
    readings = [pair_reading(p, n, warmed) for p in pairs]
    bad = [p for p, r in zip(pairs, readings, strict=True) if r == "interference"]
    weak = [p for p, r in zip(pairs, readings, strict=True) if r == "neutral"]
    unsettled = [p for p, r in zip(pairs, readings, strict=True) if r == "no evidence"]
    band = f"2 s.e. over {n} batches"
    if bad:
        _interference_rule(config, result, bad, add)
    elif unsettled:
        add(
            "architecture",
            "no evidence either way on sharing: keep hard sharing, or measure again with "
            + ("more --batches" if warmed else "--head-warmup K (K > 0)"),
            _unsettled(result, unsettled),
        )
    elif weak:
        arch = (
            "soft sharing (architecture: soft; the cost is one encoder per task)"
            if len(tasks) <= 4
            else "task-conditioned sharing (task_embedding, film or prefix)"
        )
        add(
            "architecture",
            f"partial interference: {arch}",
            f"{len(weak)} of {len(pairs)} pairs neutral (|cosine| + 2 s.e. <= 0.1): "
            + ", ".join(_fmt_clear(p, n) for p in weak)
            + f"; {len(tasks)} tasks",
        )
    elif imbalance <= SIMILAR_SIZES:
        add(
            "architecture",
            "hard sharing (related tasks, similar sizes): proportional sampler, equal weights",
            "every pair's gradient cosine > +0.1 beyond its noise ("
            + ", ".join(_fmt_clear(p, n) for p in pairs)
            + f"; {band}); sizes within {imbalance:.1f}x",
        )
    else:
        add(
            "architecture",
            "hard sharing (related tasks) with a temperature sampler (alpha 0.5-0.75)",
            f"every pair's gradient cosine > +0.1 beyond its noise ({band}); "
            f"sizes differ {imbalance:.1f}x",
        )


def _interference_rule(
    config: RunConfig, result: dict[str, Any], bad: list[dict[str, Any]], add: Add
) -> None:
    """Pairs in interference beyond their noise → gradient surgery, and the task in most of
    them down-weighted (never the primary task)."""
    tasks: list[str] = result["tasks"]
    sizes: dict[str, int] = result["datasets"]["sizes"]
    n = result["batches"]
    worst = sorted(bad, key=lambda p: p["mean"])
    counts = {t: sum(t in (p["a"], p["b"]) for p in bad) for t in tasks}
    culprit = max(tasks, key=lambda t: (counts[t], -sizes[t]))
    add(
        "aggregator",
        f"strong interference: use gradient surgery, aggregator {surgery()}",
        "gradient cosine < -0.1 beyond its noise: "
        + ", ".join(_fmt_clear(p, n) for p in worst)
        + f" (2 s.e. over {n} batches)",
    )
    if config.primary != culprit:
        add(
            "tasks",
            f"down-weight '{culprit}', make it auxiliary, or drop it",
            f"'{culprit}' is in {counts[culprit]} of the {len(bad)} interfering pairs",
        )


def _unsettled(result: dict[str, Any], pairs: list[dict[str, Any]]) -> str:
    n = result["batches"]
    quoted = ", ".join(_fmt_clear(p, n) for p in pairs)
    if n < 2:
        return f"one batch has no spread to judge the cosines' noise by ({quoted}): --batches 8"
    if not result["head_warmup"]:
        return (
            f"with random heads (--head-warmup 0) cosines near 0 are uninformative "
            f"({quoted}; 2 s.e., {n} batches)"
        )
    return f"cosines not clear of their noise or of the ±0.1 band ({quoted}; 2 s.e., {n} batches)"


def _scale_rule(config: RunConfig, result: dict[str, Any], add: Add) -> None:
    """Raw loss scales far apart, and a weighting that ignores them → one that adapts."""
    ratio = result["loss_scale"]["ratio"]
    if ratio >= LOSS_RATIO_SOME and not adapts_to_scale(config.weighting.name):
        every_step = config.tasks_per_step >= len(result["tasks"])
        add(
            "weighting",
            "weighting: " + " or ".join(scale_weightings(every_step)),
            f"raw losses at initialisation differ {ratio:.1f}x: "
            + ", ".join(f"{t} {v['loss']:.3g}" for t, v in result["loss_scale"]["tasks"].items()),
        )


def _primary_rule(config: RunConfig, result: dict[str, Any], add: Add) -> None:
    """A small primary task beside data-rich ones → train those as auxiliary tasks."""
    tasks: list[str] = result["tasks"]
    sizes: dict[str, int] = result["datasets"]["sizes"]
    primary = config.primary
    largest = max(sizes.values())
    others = [t for t in tasks if t != primary]
    if sizes[primary] < SMALL_PRIMARY * largest and others:
        add(
            "auxiliary",
            f"small primary task: train '{primary}' with the data-rich tasks as auxiliary "
            "(auxiliary: true), early stopping on the primary task's metric",
            f"'{primary}' has {sizes[primary]:,} training examples, "
            f"{sizes[primary] / largest:.0%} of the largest ({largest:,})",
        )


def _sampling_rule(result: dict[str, Any], add: Add) -> None:
    sampling = result["sampling"]
    configured = sampling["plans"][sampling["configured"]]
    if not configured["starved"]:
        return
    better = [name for name, plan in sampling["plans"].items() if not plan["starved"]]
    shares = ", ".join(f"{t} {configured['shares'][t]:.1%}" for t in configured["starved"])
    add(
        "sampler",
        f"the '{sampling['configured']}' sampler starves tasks: use "
        + (" or ".join(better) if better else "tasks_per_step: all"),
        f"share of the first {sampling['steps']} steps' updates < 5%: {shares}",
    )
