from pathlib import Path

import pytest
import yaml

from polytask.config.run import RunConfig, config_from_dict, dump_config, load_config
from polytask.errors import ConfigError

MINIMAL = {
    "tasks": [
        {"name": "a", "type": "classification", "data": {"bundled": "tweet_sentiment"}},
        {"name": "b", "type": "tagging", "data": {"bundled": "twitter_ner"}},
    ]
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_demo_config_loads_and_defaults_apply() -> None:
    config = load_config(None)
    assert [t.name for t in config.tasks] == ["sentiment", "movies", "ner"]
    assert config.primary == "ner"
    assert config.sampler.tasks_per_step == "all"


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    data = {**MINIMAL, "trian": {"max_steps": 3}}
    with pytest.raises(ConfigError, match=r"unknown key 'trian' \(did you mean 'train'\?\)"):
        load_config(write(tmp_path, data))


def test_nested_unknown_key_names_its_location(tmp_path: Path) -> None:
    data = {**MINIMAL, "train": {"max_step": 3}}
    with pytest.raises(
        ConfigError, match=r"train: unknown key 'max_step' \(did you mean 'max_steps'\?\)"
    ):
        load_config(write(tmp_path, data))


def test_every_error_is_listed_with_its_key(tmp_path: Path) -> None:
    # a missing section used to hide the misspelt key behind "(and 1 more)", and an unknown
    # key the other problems of its own section: one line each, in file order
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  max_stepz: 3\n  lr: fast\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [line.removeprefix(f"{path}: ") for line in err.value.lines] == [
        "train: unknown key 'max_stepz' (did you mean 'max_steps'?)",
        "train.lr: Input should be a valid number, unable to parse string as a number",
        "tasks: Field required",
    ]
    assert "more)" not in str(err.value)


def test_three_mistakes_report_three_lines_in_file_order(tmp_path: Path) -> None:
    # two in one method section (an unknown hyperparameter, a value of the wrong type), one
    # in a task: each its own line, none hiding another
    path = tmp_path / "run.yaml"
    path.write_text(
        "tasks:\n"
        "  - {name: a, type: clasification, data: {bundled: tweet_sentiment}}\n"
        "  - {name: b, type: tagging, data: {bundled: twitter_ner}}\n"
        "sampler: {tasks_per_step: all}\n"
        "aggregator: {name: cagrad, cc: 0.5, rescale: lots}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = [line.removeprefix(f"{path}: ") for line in err.value.lines]
    assert len(lines) == 3, lines
    assert lines[0].startswith("tasks.0: unknown task type 'clasification' (did you mean")
    assert lines[1].startswith("aggregator: 'cagrad' has no hyperparameter 'cc' (did you mean")
    assert lines[2] == "aggregator.rescale: Input should be 0, 1 or 2"


def test_wrong_type_names_key(tmp_path: Path) -> None:
    data = {**MINIMAL, "train": {"max_steps": "many"}}
    with pytest.raises(ConfigError, match=r"train\.max_steps"):
        load_config(write(tmp_path, data))


def test_unknown_task_type(tmp_path: Path) -> None:
    data = {"tasks": [{"name": "a", "type": "clasification", "data": {"bundled": "twitter_ner"}}]}
    with pytest.raises(
        ConfigError,
        match=r"tasks\.0.*unknown task type 'clasification' \(did you mean 'classification'",
    ):
        load_config(write(tmp_path, data))


def test_duplicate_task_names_rejected() -> None:
    data = {"tasks": [MINIMAL["tasks"][0], MINIMAL["tasks"][0]]}
    with pytest.raises(ConfigError, match="unique; repeated: a"):
        config_from_dict(data)


def test_primary_task_must_exist() -> None:
    with pytest.raises(ConfigError, match=r"primary_task 'c' is not a task"):
        config_from_dict({**MINIMAL, "train": {"primary_task": "c"}})


def test_overrides_by_index_and_task_name(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    config = load_config(
        path,
        [
            "train.max_steps=7",
            "tasks.b.weight=0.5",
            "tasks.0.critical=false",
            "sampler.tasks_per_step=all",
        ],
    )
    assert config.train.max_steps == 7
    assert config.task("b").weight == 0.5
    assert config.task("a").critical is False
    assert config.sampler.tasks_per_step == "all"


def test_override_unknown_task_and_bad_form(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match=r"no list item 'bb'.*did you mean 'b'"):
        load_config(path, ["tasks.bb.weight=1"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(path, ["train.max_steps"])


def test_sampler_alpha_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"sampler\.alpha"):
        config_from_dict({**MINIMAL, "sampler": {"alpha": 0}})


def test_data_needs_train_and_validation() -> None:
    data = {"tasks": [{"name": "a", "type": "classification", "data": {"train": "x.csv"}}]}
    with pytest.raises(ConfigError, match="both 'train' and 'validation'"):
        config_from_dict(data)


def test_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    data = {
        "tasks": [
            {
                "name": "a",
                "type": "classification",
                "data": {"train": "d/train.csv", "validation": "d/val.csv"},
            }
        ]
    }
    config = load_config(write(tmp_path, data))
    assert config.tasks[0].data.train == str(tmp_path / "d" / "train.csv")


def test_dump_round_trips() -> None:
    config = load_config(None, ["train.max_steps=3"])
    again = RunConfig.model_validate(yaml.safe_load(dump_config(config)))
    assert again == config


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("tasks: [\n  - a: 1\n b")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(path)
