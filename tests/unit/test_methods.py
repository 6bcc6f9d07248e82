"""Config sections bind to method constructors: typed, strict, checked at load."""

import pytest

from polytask.aggregation import AGGREGATORS
from polytask.config.constructors import check_constructors
from polytask.config.run import config_from_dict
from polytask.errors import ConfigError
from polytask.objective import build_objective
from polytask.registry import bind, build
from polytask.weighting import WEIGHTINGS

TASKS = {
    "tasks": [{"name": n, "type": "classification", "data": {"bundled": "x"}} for n in "abc"],
    "sampler": {"tasks_per_step": "all"},
}


def test_bind_types_and_defaults() -> None:
    assert bind(AGGREGATORS, "cagrad", {"c": 0.5}, "aggregator") == {"c": 0.5, "rescale": 1}
    with pytest.raises(ConfigError, match=r"aggregator\.c: Input should be a valid number"):
        bind(AGGREGATORS, "cagrad", {"c": "0.5"}, "aggregator")  # by type: never coerced
    with pytest.raises(ConfigError, match=r"aggregator\.rescale: Input should not be a boolean"):
        bind(AGGREGATORS, "cagrad", {"rescale": True}, "aggregator")
    message = r"aggregator: 'cagrad' has no hyperparameter 'cc' \(did you mean 'c'\?\)"
    with pytest.raises(ConfigError, match=message):
        bind(AGGREGATORS, "cagrad", {"cc": 1}, "aggregator")
    with pytest.raises(ConfigError, match=r"aggregator\.c: Input should be a valid number"):
        bind(AGGREGATORS, "cagrad", {"c": "lots"}, "aggregator")


def test_constructor_checks_run_before_anything_is_built() -> None:
    # the config loads without torch (the manifest); the constructors' own checks run in
    # check_constructors (the CLI calls it right after load) and again when training builds
    dwa = config_from_dict({**TASKS, "weighting": {"name": "dwa", "temperature": 0}})
    with pytest.raises(ConfigError, match=r"^run.yaml: weighting: dwa: temperature must be > 0"):
        check_constructors(dwa, "run.yaml")
    both = {
        "weighting": {"name": "static", "weights": [1, 2]},
        "aggregator": {"name": "cagrad", "c": -1},
    }
    with pytest.raises(ConfigError) as err:
        check_constructors(config_from_dict({**TASKS, **both}))
    assert [line.split(": ", 2)[1] for line in err.value.lines] == ["weighting", "aggregator"]
    assert "expected 3 values, got 2" in err.value.lines[0]


def test_history_methods_need_every_task_each_step() -> None:
    data = {**TASKS, "sampler": {"tasks_per_step": 1}, "aggregator": {"name": "pcgrad"}}
    with pytest.raises(ConfigError, match="combines the gradients of every task in one step"):
        config_from_dict(data)
    config_from_dict({**data, "aggregator": {"name": "mean"}})  # subset steps are fine here


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_weighting_builds_from_defaults(name: str) -> None:
    kwargs = {"weights": [1.0, 2.0, 3.0]} if name == "static" else {}
    assert build(WEIGHTINGS, name, kwargs, 3, "weighting").n_tasks == 3


def test_uncertainty_gets_task_kinds_from_task_types() -> None:
    objective = build_objective(
        ["a", "b"],
        {"a": 1.0, "b": 1.0},
        ["regression", "classification"],
        ("uncertainty", {}),
        ("sum", {}),
    )
    assert "regression" in repr(objective.weighting)
