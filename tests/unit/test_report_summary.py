"""The report shows what ran (issue 22 item 10): only the configured sampler's arguments,
no task-weights plot of weights that never moved (a one-line note instead), and compare
bars with their values and the trivial predictor's line."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from polytask.config.run import load_config
from polytask.experiments.summary import baseline_of, task_summary
from polytask.report.load import Run
from polytask.report.plots import compare_figure
from polytask.report.run import _sampler, weights
from polytask.report.sections import compare_body
from polytask.training.end import _sampler_record

OLD = {"name": "temperature", "tasks_per_step": 1, "alpha": 0.5, "alpha_start": 1.0}


def test_an_old_config_shows_only_the_samplers_own_arguments() -> None:
    """A config.yaml written before samplers were bound lists every sampler's arguments."""
    assert _sampler({**OLD, "alpha_end": 0.2}) == "temperature (tasks_per_step=1, alpha=0.5)"
    annealed = {**OLD, "name": "annealed", "alpha_end": 0.2}
    assert _sampler(annealed) == "annealed (tasks_per_step=1, alpha_start=1.0, alpha_end=0.2)"


def test_the_run_records_the_sampler_that_ran_with_its_defaults() -> None:
    config = load_config(None, ["sampler.name=temperature", "sampler.tasks_per_step=1"])
    record = _sampler_record(SimpleNamespace(config=config))  # type: ignore[arg-type]
    assert record == {"name": "temperature", "tasks_per_step": 1, "alpha": 0.75}
    entry = {"name": "temperature", "tasks_per_step": 1}  # config.yaml: defaults left out
    assert _sampler(entry, record) == "temperature (tasks_per_step=1, alpha=0.75)"
    every = {"name": None, "tasks_per_step": "all"}
    assert _sampler(every, {**every}) == "none: every task in every step"


def _run(records: list[dict[str, Any]]) -> Run:
    return Run(Path("run"), {"tasks": []}, ["a", "b"], None, records, None)


def test_constant_weights_are_a_note_not_a_plot() -> None:
    steps = [
        {"step": s, "weights": {"a": 1.0, "b": 1.0}, "combine": {"a": 0.5 + s, "b": 1.0}}
        for s in range(1, 5)
    ]
    html = weights(_run(steps), steps)
    assert html.count("<img") == 1 and "gradient aggregator" in html  # combine moves
    assert "loss weighting: weight per task: constant over the logged steps (a 1, b 1)" in html
    flat = [{"step": s, "weights": {"a": 1.0, "b": 0.2}} for s in range(1, 5)]
    html = weights(_run(flat), flat)
    assert "<img" not in html and html.count('class="note"') == 1
    assert "(a 1, b 0.2), not plotted." in html


def _finals(baselines: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "primary_metric": {"t": "accuracy"},
            "tasks": {"t": {"test": {"accuracy": 0.7}, "baseline": {"test": b}}},
        }
        for b in baselines
    ]


def test_compare_rows_carry_the_trivial_baseline() -> None:
    finals = _finals([{"majority_accuracy": 0.4}, {"majority_accuracy": 0.5}])
    assert baseline_of(finals, "t", "test", "accuracy") == {
        "name": "majority_accuracy",
        "mean": 0.45,
    }
    assert baseline_of(finals, "t", "test", "macro_f1") is None
    undefined = _finals([{"mean_pearson": None}])
    assert baseline_of(undefined, "t", "test", "pearson") == {"name": "mean_pearson", "mean": None}
    row = task_summary("t", "classification", finals, finals, True)
    assert row["baseline"] == {"name": "majority_accuracy", "mean": 0.45}


def _entry(baseline: Any) -> dict[str, Any]:
    return {
        "metric": "accuracy",
        "single": {"mean": 0.61, "std": None},
        "multi": {"mean": 0.64, "std": None},
        "delta_pct": 4.9,
        "baseline": baseline,
    }


def test_compare_bars_show_values_and_the_baseline_line() -> None:
    tasks = {"a": _entry({"name": "majority_accuracy", "mean": 0.45}), "b": _entry(None)}
    fig = compare_figure(tasks)
    first, second = fig.axes[:2]
    assert [t.get_text() for t in first.texts] == ["0.6100", "0.6400"]
    dashed = [line for line in first.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [0.45, 0.45]
    assert first.get_legend().get_texts()[0].get_text() == "majority baseline 0.4500"
    assert not [line for line in second.lines if line.get_linestyle() == "--"]
    undefined = {"r": {**_entry({"name": "mean_pearson", "mean": None}), "metric": "pearson"}}
    html = compare_body({"tasks": undefined, "seeds": [0]})
    assert "none for r (pearson): undefined for a constant prediction" in html
