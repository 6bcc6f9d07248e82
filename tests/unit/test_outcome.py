"""``check``'s expected outcome of sharing (part 6): each rule on hand-made measurements, the
noise rule on cosines, and the forecast; both bundled scenarios' shapes."""

from __future__ import annotations

from typing import Any

import pytest

from polytask.diagnostics.outcome import GAINS, LOSSES, UNCLEAR, outcomes, task_outcome
from polytask.diagnostics.rules import recommend


def measured(
    types: dict[str, str],
    sizes: dict[str, int],
    cosines: dict[tuple[str, str], tuple[float, float]],
    warmup: int = 30,
    batches: int = 16,
) -> dict[str, Any]:
    """A check result holding what the outcome rules read (cosine: (mean, std) per pair)."""
    tasks = list(types)
    pairs = []
    for i, a in enumerate(tasks):
        for b in tasks[i + 1 :]:
            mean, std = cosines.get((a, b), cosines.get((b, a), (0.0, 0.0)))
            label = "interference" if mean < -0.1 else "neutral" if mean <= 0.1 else "positive"
            pairs.append(
                {"a": a, "b": b, "mean": mean, "std": std, "min": mean, "max": mean, "label": label}
            )
    return {
        "tasks": tasks,
        "batches": batches,
        "head_warmup": warmup,
        "cosine": {"pairs": pairs},
        "loss_scale": {"tasks": {t: {"loss": 1.0, "type": ty} for t, ty in types.items()}},
        "datasets": {"sizes": sizes, "imbalance": max(sizes.values()) / min(sizes.values())},
    }


DEMO = {"sentiment": "classification", "movies": "classification", "ner": "tagging"}
DEMO_SIZES = {"sentiment": 12000, "movies": 11068, "ner": 1836}


def test_granularity_mismatch_expects_losses_even_with_positive_cosines() -> None:
    result = measured(DEMO, DEMO_SIZES, {("ner", "sentiment"): (0.19, 0.12)})
    ner = task_outcome(result, "ner")
    assert ner["outcome"] == LOSSES
    assert "the only token-level task" in ner["evidence"] and "(12.6x)" in ner["evidence"]
    assert "+0.190 ± 0.060" in ner["evidence"] and "positive beyond noise" in ner["evidence"]
    assert task_outcome(result, "sentiment")["outcome"] == UNCLEAR  # comparable sizes
    # the token task holding more data than the others together: no loss predicted
    big = measured(DEMO, {"sentiment": 100, "movies": 100, "ner": 5000}, {})
    assert task_outcome(big, "ner")["outcome"] == UNCLEAR


def test_small_task_beside_a_data_rich_partner_expects_gains() -> None:
    types = {"amazon": "regression", "movies": "regression"}
    result = measured(types, {"amazon": 300, "movies": 8482}, {("amazon", "movies"): (0.04, 0.12)})
    amazon = task_outcome(result, "amazon")
    assert amazon["outcome"] == GAINS and "28.3x its training examples" in amazon["evidence"]
    assert "within noise, no evidence either way" in amazon["evidence"]
    movies = task_outcome(result, "movies")
    assert movies["outcome"] == UNCLEAR and "the data-rich one" in movies["evidence"]
    # below DATA_RICH (4x) the partner does not count as data-rich
    close = measured(types, {"amazon": 3000, "movies": 8482}, {})
    assert task_outcome(close, "amazon")["outcome"] == UNCLEAR


def test_a_conflict_beyond_noise_expects_losses_and_noise_does_not() -> None:
    types = {"a": "classification", "b": "classification"}
    sizes = {"a": 100, "b": 1000}
    clear = measured(types, sizes, {("a", "b"): (-0.3, 0.2)})  # 2 s.e. = 0.1
    assert task_outcome(clear, "a")["outcome"] == LOSSES
    assert "negative beyond noise" in task_outcome(clear, "a")["evidence"]
    noisy = measured(types, sizes, {("a", "b"): (-0.3, 0.8)})  # 2 s.e. = 0.4: not clear
    assert task_outcome(noisy, "a")["outcome"] == GAINS
    cold = measured(types, sizes, {("a", "b"): (-0.3, 0.2)}, warmup=0)  # random heads
    assert task_outcome(cold, "a")["outcome"] == GAINS
    assert "random heads: uninformative" in task_outcome(cold, "a")["evidence"]


def test_forecast(tiny_config: Any) -> None:
    types = {"sent": "classification", "tags": "tagging", "reg": "regression"}
    sizes = {"sent": 5000, "tags": 200, "reg": 100}
    result = measured(types, sizes, {})
    forecast = outcomes(tiny_config, result)
    assert forecast["tasks"]["tags"]["outcome"] == LOSSES
    assert forecast["tasks"]["reg"]["outcome"] == GAINS
    assert forecast["forecast"] == "expect the single-task models to stay better on tags"
    assert forecast["deploy_expected"] is False


@pytest.mark.parametrize(("warmup", "std", "advice"), [
    (0, 0.01, "no evidence either way on sharing"),  # random heads
    (30, 0.3, "no evidence either way on sharing"),  # 0.02 ± 0.15: outside the band
    (30, 0.01, "partial interference"),  # 0.02 ± 0.005: settled near 0
])  # fmt: skip
def test_sharing_advice_rests_on_cosines_clear_of_noise(
    tiny_config: Any, warmup: int, std: float, advice: str
) -> None:
    types = {"sent": "classification", "tags": "tagging", "reg": "regression"}
    cos = {
        ("sent", "tags"): (0.02, std),
        ("sent", "reg"): (0.02, std),
        ("tags", "reg"): (0.02, std),
    }
    result = measured(types, {"sent": 100, "tags": 100, "reg": 100}, cos, warmup=warmup)
    result["sampling"] = {"configured": "x", "plans": {"x": {"starved": []}}}
    result["loss_scale"]["ratio"] = 1.0
    sharing = [r for r in recommend(tiny_config, result) if r["topic"] == "architecture"]
    assert len(sharing) == 1 and sharing[0]["advice"].startswith(advice), sharing


@pytest.fixture()
def tiny_config(tiny_encoder: Any, task_files: Any) -> Any:
    """The three synthetic tasks (sent, tags, reg): every task served and critical."""
    from polytask.config.run import config_from_dict
    from tests.conftest import base_config

    return config_from_dict(base_config(tiny_encoder, task_files))


def test_the_report_shows_the_expected_outcome() -> None:
    from polytask.report.sections import check_body

    result = measured(DEMO, DEMO_SIZES, {})
    result["outcome"] = {
        "tasks": {t: task_outcome(result, t) for t in DEMO},
        "forecast": "expect the single-task models to stay better on ner",
    }
    html = check_body(result)
    assert "<h3>Expected outcome of sharing</h3>" in html
    assert "forecast: expect the single-task models to stay better on ner" in html
    assert html.count("expect losses") == 1 and html.count(">unclear</td>") == 2
    assert "<h3>Expected outcome" not in check_body(
        {k: v for k, v in result.items() if k != "outcome"}
    )


FOUR = {"sent": "classification", "b": "classification", "c": "regression", "d": "regression"}
FOUR_SIZES = dict.fromkeys(FOUR, 500)


def sharing_advice(config: Any, result: dict[str, Any]) -> list[dict[str, str]]:
    result["sampling"] = {"configured": "x", "plans": {"x": {"starved": []}}}
    result["loss_scale"]["ratio"] = 1.0
    return [r for r in recommend(config, result) if r["topic"] in ("architecture", "aggregator")]


@pytest.mark.parametrize("warmup", [0, 30])
def test_issue_case_six_cosines_near_zero_give_no_soft_sharing_advice(
    tiny_config: Any, warmup: int
) -> None:
    """Issue 22 item 3: with random heads, six cosines within ±0.05 read 'partial
    interference: soft sharing (one encoder per task)'. Random heads, or a spread that
    reaches out of the ±0.1 band, are no evidence either way."""
    means = [0.05, -0.05, 0.03, -0.02, 0.01, 0.04]
    std = 0.01 if warmup == 0 else 0.2  # warmed up: 2 s.e. = 0.1 over 16 batches
    names = list(FOUR)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    cos = {pair: (m, std) for pair, m in zip(pairs, means, strict=True)}
    result = measured(FOUR, FOUR_SIZES, cos, warmup=warmup)
    assert len(result["cosine"]["pairs"]) == 6
    (advice,) = sharing_advice(tiny_config, result)
    assert "partial interference" not in advice["advice"]
    assert "soft sharing" not in advice["advice"]
    assert advice["advice"].startswith("no evidence either way on sharing: keep hard sharing")
    if warmup == 0:
        assert "--head-warmup K" in advice["advice"]
        assert "random heads (--head-warmup 0)" in advice["evidence"]
    else:
        assert "more --batches" in advice["advice"]
        assert "sent/b +0.050 ± 0.100" in advice["evidence"]


@pytest.mark.parametrize(("mean", "std", "warmup", "batches", "advice"), [
    (-0.5, 0.2, 0, 16, "strong interference"),  # -0.5 ± 0.1: beyond noise, even cold
    (-0.15, 0.3, 30, 16, "no evidence either way"),  # -0.15 ± 0.15 reaches -0.0
    (-0.5, 0.0, 30, 1, "no evidence either way"),  # one batch: no spread to judge by
    (0.5, 0.2, 0, 16, "hard sharing"),  # +0.5 ± 0.1
    (0.15, 0.3, 30, 16, "no evidence either way"),  # +0.15 ± 0.15 reaches 0.0
    (0.02, 0.04, 30, 16, "partial interference"),  # +0.02 ± 0.02: inside the band
])  # fmt: skip
def test_every_cosine_advice_clears_its_noise(
    tiny_config: Any, mean: float, std: float, warmup: int, batches: int, advice: str
) -> None:
    cos = dict.fromkeys([("sent", "tags"), ("sent", "reg"), ("tags", "reg")], (mean, std))
    types = {"sent": "classification", "tags": "tagging", "reg": "regression"}
    sizes = {"sent": 100, "tags": 100, "reg": 100}
    result = measured(types, sizes, cos, warmup=warmup, batches=batches)
    advices = sharing_advice(tiny_config, result)
    assert advices[0]["advice"].startswith(advice), advices
    if advice == "no evidence either way" and batches == 1:
        assert "one batch has no spread" in advices[0]["evidence"]
