"""``data: {dataset: ..., subset: ..., splits: ...}``: a local folder in hub layout and a saved
``DatasetDict``, read offline through ``datasets`` with the same checks and cache as files."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml
from transformers import AutoTokenizer

from polytask.config.run import TaskConfig, load_config
from polytask.data import loading
from polytask.data.loading import load_task_data
from polytask.errors import ConfigError, DataError

CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.csv
  - split: validation
    path: data/validation-*.csv
  - split: test
    path: data/test-*.csv
- config_name: swapped
  data_files:
  - split: train
    path: data/validation-*.csv
  - split: validation
    path: data/train-*.csv
---
# a tiny dataset card
"""

TRAIN = [("good film", "pos"), ("bad film", "neg"), ("a plot", "pos"), ("awful", "neg")]
VALID = [("great movie", "pos"), ("bad plot", "neg"), ("the film", "pos")]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing may download: the hub is unreachable for ``datasets`` and its cache is fresh."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setenv("POLYTASK_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(tiny_encoder))


def _csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sentence", "label"])
        writer.writerows(rows)


def hub_folder(root: Path) -> Path:
    """Data files in hub layout and a README card whose ``configs:`` header maps the splits."""
    _csv(root / "data" / "train-00000-of-00001.csv", TRAIN)
    _csv(root / "data" / "validation-00000-of-00001.csv", VALID)
    _csv(root / "data" / "test-00000-of-00001.csv", VALID[:2])
    (root / "README.md").write_text(CARD)
    return root


def saved_dict(root: Path) -> Path:
    """A ``DatasetDict`` with class-label ids (as hub datasets store them), saved to disk."""
    names = datasets.ClassLabel(names=["neg", "pos"])
    features = datasets.Features({"sentence": datasets.Value("string"), "label": names})

    def split(rows: list[tuple[str, str]]) -> datasets.Dataset:
        cols = {"sentence": [t for t, _ in rows], "label": [names.str2int(y) for _, y in rows]}
        return datasets.Dataset.from_dict(cols, features=features)

    dd = datasets.DatasetDict({"train": split(TRAIN), "dev": split(VALID)})
    dd.save_to_disk(str(root))
    return root


def task(data: dict[str, Any], **kw: Any) -> TaskConfig:
    cols = {"text": "sentence", "label": "label"}
    return TaskConfig.model_validate(
        {"name": "t", "type": "classification", "data": data, "columns": cols, **kw}
    )


def labels(data: Any, split: str) -> list[str]:
    return [data.spec.labels[i] for i in data.splits[split]["target"]]


def test_hub_layout_folder_reads_the_card_splits(tmp_path: Path, tokenizer: Any) -> None:
    folder = hub_folder(tmp_path / "hub")
    cfg = task(
        {
            "dataset": str(folder),
            "splits": {"train": "train", "validation": "validation", "test": "test"},
        }
    )
    data = load_task_data(cfg, tokenizer, 16, 0)
    assert labels(data, "train") == [y for _, y in TRAIN]
    assert labels(data, "validation") == [y for _, y in VALID]
    assert len(data.splits["test"]) == 2
    # the subset is the card's config_name: 'swapped' reads the other files as train
    swapped = load_task_data(task({"dataset": str(folder), "subset": "swapped"}), tokenizer, 16, 0)
    assert labels(swapped, "train") == [y for _, y in VALID]
    assert "test" not in swapped.splits  # splits.test defaults to none
    # a split expression is passed to datasets as written
    part = task({"dataset": str(folder), "splits": {"train": "train[:2]"}})
    assert labels(load_task_data(part, tokenizer, 16, 0), "train") == ["pos", "neg"]


def test_saved_dataset_dict_maps_splits_and_label_names(tmp_path: Path, tokenizer: Any) -> None:
    folder = saved_dict(tmp_path / "saved")
    cfg = task({"dataset": str(folder), "splits": {"train": "train", "validation": "dev"}})
    data = load_task_data(cfg, tokenizer, 16, 0)
    assert sorted(data.spec.labels) == ["neg", "pos"]  # ids become the ClassLabel names
    assert labels(data, "validation") == [y for _, y in VALID]
    # the same subsets (max_*_examples) as files
    cfg = task({"dataset": str(folder), "splits": {"validation": "dev"}, "max_train_examples": 2})
    assert len(load_task_data(cfg, tokenizer, 16, 0).splits["train"]) == 2


def test_tokenised_splits_are_cached_and_keyed_on_the_files(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = hub_folder(tmp_path / "hub")
    cfg = task({"dataset": str(folder)})
    calls: list[int] = []
    featurize = loading._Featurizer.__call__

    def counted(self: Any, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        calls.append(len(batch["text"]))
        return featurize(self, batch)

    monkeypatch.setattr(loading._Featurizer, "__call__", counted)
    load_task_data(cfg, tokenizer, 16, 0)
    first = len(calls)
    assert first > 0
    load_task_data(cfg, tokenizer, 16, 0)
    assert len(calls) == first  # read from the tokenised cache
    _csv(folder / "data" / "train-00000-of-00001.csv", [*TRAIN, ("very good", "pos")])
    data = load_task_data(cfg, tokenizer, 16, 0)
    assert len(calls) > first and len(data.splits["train"]) == len(TRAIN) + 1


@pytest.mark.parametrize(
    ("data", "columns", "match"),
    [
        ({"splits": {"validation": "valid"}}, None, r"task 't': data\.splits\.validation: .*valid"),
        ({"subset": "nope"}, None, r"task 't': data\.subset: .*nope"),
        ({}, {"text": "text"}, r"task 't', dataset '.*hub', split 'train': missing column 'text'"),
    ],
)
def test_bad_dataset_input_is_one_line(
    tmp_path: Path, tokenizer: Any, data: dict[str, Any], columns: Any, match: str
) -> None:
    folder = hub_folder(tmp_path / "hub")
    cfg = task({"dataset": str(folder), **data})
    if columns is not None:
        cfg = task({"dataset": str(folder)}, columns={**columns, "label": "label"})
    with pytest.raises(DataError, match=match) as err:
        load_task_data(cfg, tokenizer, 16, 0)
    assert "\n" not in str(err.value)


def test_saved_dict_errors_and_unresolvable_name(tmp_path: Path, tokenizer: Any) -> None:
    folder = saved_dict(tmp_path / "saved")
    with pytest.raises(
        DataError,
        match=r"data\.splits\.validation: no split 'validation' in .*"
        r"\(has: train, dev\)",
    ):
        load_task_data(task({"dataset": str(folder)}), tokenizer, 16, 0)
    with pytest.raises(DataError, match=r"task 't': data\.subset does not apply"):
        load_task_data(task({"dataset": str(folder), "subset": "x"}), tokenizer, 16, 0)
    name = "polytask-no-such-user/no-such-dataset"
    with pytest.raises(
        DataError,
        match=r"task 't': data\.dataset: cannot load 'polytask-no-such"
        r".*resolves only when online",
    ) as err:
        load_task_data(task({"dataset": name}), tokenizer, 16, 0)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"dataset": "x", "train": "a.csv"}, "'dataset' and 'bundled' or file paths are exclusive"),
        ({"dataset": "x", "format": "csv"}, "'format' and 'encoding' do not apply to 'dataset'"),
        ({"train": "a", "validation": "b", "subset": "s"}, "'subset' only applies with 'dataset'"),
        ({"train": "a", "validation": "b", "splits": {}}, "'splits' only applies with 'dataset'"),
        ({"dataset": "x", "splits": {"dev": "v"}}, "dev"),
        ({"dataset": "x", "splits": {"train": 3}}, "train"),
    ],
)
def test_dataset_options_refused_at_load(data: dict[str, Any], match: str) -> None:
    with pytest.raises(Exception, match=match):
        task(data)


def test_dataset_folder_resolves_against_the_config_file(tmp_path: Path) -> None:
    hub_folder(tmp_path / "conf" / "hub")
    cfg = {
        "encoder": {"name": "x"},
        "tasks": [
            {"name": "t", "type": "classification", "data": {"dataset": "hub"}},
            {"name": "u", "type": "classification", "data": {"dataset": "org/name"}},
        ],
    }
    (tmp_path / "conf" / "run.yaml").write_text(yaml.safe_dump(cfg))
    try:
        run = load_config(tmp_path / "conf" / "run.yaml")
    except ConfigError as exc:  # pragma: no cover - shows the lines
        raise AssertionError(str(exc)) from None
    assert run.tasks[0].data.dataset == str((tmp_path / "conf" / "hub").resolve())
    assert run.tasks[1].data.dataset == "org/name"  # not a folder: a hub name, kept
    assert run.tasks[0].data.splits is not None and run.tasks[0].data.splits.train == "train"


def test_tagging_reads_lists_of_class_labels_as_tag_names(tmp_path: Path, tokenizer: Any) -> None:
    tags = datasets.ClassLabel(names=["O", "B-per", "B-loc"])
    features = datasets.Features(
        {"tokens": datasets.List(datasets.Value("string")), "ner_tags": datasets.List(tags)}
    )
    rows = {"tokens": [["alice", "visited", "paris"], ["bob"]], "ner_tags": [[1, 0, 2], [1]]}
    ds = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "ner"))
    cfg = TaskConfig.model_validate(
        {
            "name": "ner",
            "type": "tagging",
            "data": {"dataset": str(tmp_path / "ner")},
            "columns": {"text": "tokens", "label": "ner_tags"},
        }
    )
    data = load_task_data(cfg, tokenizer, 16, 0)
    first = [data.spec.labels[i] for i in data.splits["train"]["word_labels"][0]]
    assert first == ["B-per", "O", "B-loc"]


def test_cli_names_the_task_and_field_in_one_line(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    import os

    from tests import forked_cli
    from tests.conftest import base_config

    cfg = base_config(tiny_encoder, task_files, max_steps=2, eval_every=2)
    cfg["tasks"][0]["data"] = {"dataset": "hub", "splits": {"validation": "valid"}}
    cfg["tasks"][0]["columns"] = {"text": "sentence"}
    hub_folder(tmp_path / "hub")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HF_DATASETS_OFFLINE": "1"}
    env["POLYTASK_CACHE"] = str(tmp_path / "cache")
    args = ["train", str(tmp_path / "run.yaml"), "-o", str(tmp_path / "out")]
    result = forked_cli.run(args, env=env, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and "task 'sent': data.splits.validation: " in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_lm_task_reads_its_texts_from_a_dataset(tmp_path: Path, tokenizer: Any) -> None:
    folder = hub_folder(tmp_path / "hub")
    cfg = TaskConfig.model_validate(
        {
            "name": "mlm",
            "type": "lm",
            "data": {"dataset": str(folder)},
            "columns": {"text": "sentence"},
        }
    )
    data = load_task_data(cfg, tokenizer, 16, 0)
    assert len(data.splits["train"]) == len(TRAIN) and len(data.splits["validation"]) == len(VALID)
