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
        'train.lr: Input should be a valid number, got "fast"',
        "tasks: Field required",
    ]
    assert "more)" not in str(err.value)


WRONG_TYPES = [  # (override, the line's key, what it got): each accepted (and coerced) before
    ("train.lr=true", "train.lr", "true"),  # trained at lr 1.0
    ('train.max_steps="10"', "train.max_steps", '"10"'),
    ("train.max_steps=10.0", "train.max_steps", "10.0"),
    ("train.patience=2.5", "train.patience", "2.5"),
    ("seed=1.5", "seed", "1.5"),
    ('encoder.max_length="32"', "encoder.max_length", '"32"'),
    ("tasks.ner.weight=true", "tasks.ner.weight", "true"),  # a task named, not tasks.2
    ("tasks.ner.columns.text=3", "tasks.ner.columns.text", "3"),
    ('sampler.tasks_per_step="2"', "sampler.tasks_per_step", '"2"'),
    ("aggregator.name=upgrad aggregator.reg_eps=true", "aggregator.reg_eps", "true"),
    ('weighting.name=famo weighting.lr="0.1"', "weighting.lr", '"0.1"'),
    ('weighting.name=famo weighting.betas=[0.8,"0.9"]', "weighting.betas.1", '"0.9"'),
    ("architecture.name=mmoe architecture.experts=2.0", "architecture.experts", "2.0"),
    ("aggregator.name=cagrad aggregator.rescale=true", "aggregator.rescale", "true"),  # Literal
]


@pytest.mark.parametrize(("override", "key", "got"), WRONG_TYPES)
def test_a_value_of_the_wrong_type_is_refused_never_coerced(
    override: str, key: str, got: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("demo", override.split())
    (line,) = err.value.lines
    assert line.startswith(f"demo.yaml: {key}: Input should ") and line.endswith(f", got {got}")


def test_a_union_is_one_line_with_its_alternatives() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("demo", ['sampler.tasks_per_step="2"'])
    assert err.value.lines == [
        """demo.yaml: sampler.tasks_per_step: Input should be a valid integer or 'all', got "2\""""
    ]


@pytest.mark.parametrize(
    ("override", "value"),
    [
        ("train.lr=1e-4", 1e-4),  # YAML 1.2 float: PyYAML's 1.1 rules read the string "1e-4"
        ("train.lr=5E-5", 5e-5),
        ("train.lr=1", 1.0),  # an int where a float is wanted is that number
        ("train.lr=2.0e-5", 2e-5),
    ],
)
def test_numbers_users_write_are_numbers(override: str, value: float) -> None:
    lr = load_config("demo", [override]).train.lr
    assert lr == value and type(lr) is float


def test_yaml_file_exponent_float_and_tuple_argument(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    extra = "sampler: {tasks_per_step: all}\ntrain: {lr: 3e-4}\n"
    path.write_text(path.read_text() + extra + "weighting: {name: famo, betas: [0.8, 0.95]}\n")
    config = load_config(path)
    assert config.train.lr == 3e-4 and config.weighting.name == "famo"


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
    assert lines[0].startswith("tasks.a: unknown task type 'clasification' (did you mean")
    assert lines[1].startswith("aggregator: 'cagrad' has no hyperparameter 'cc' (did you mean")
    assert lines[2] == 'aggregator.rescale: Input should be 0, 1 or 2, got "lots"'


def test_wrong_type_names_key(tmp_path: Path) -> None:
    data = {**MINIMAL, "train": {"max_steps": "many"}}
    with pytest.raises(ConfigError, match=r"train\.max_steps"):
        load_config(write(tmp_path, data))


def test_unknown_task_type(tmp_path: Path) -> None:
    data = {"tasks": [{"name": "a", "type": "clasification", "data": {"bundled": "twitter_ner"}}]}
    with pytest.raises(
        ConfigError,
        match=r"tasks\.a: unknown task type 'clasification' \(did you mean 'classification'",
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
