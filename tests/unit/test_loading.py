import csv
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from polytask.config.run import TaskConfig
from polytask.data.loading import load_task_data
from polytask.errors import DataError


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder: Path):  # type: ignore[no-untyped-def]
    return AutoTokenizer.from_pretrained(str(tiny_encoder))


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def task(type_: str, train: Path, val: Path, **kw: object) -> TaskConfig:
    return TaskConfig.model_validate(
        {"name": "t", "type": type_, "data": {"train": str(train), "validation": str(val)}, **kw}
    )


def test_csv_classification_with_partial_labels(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    train = write_csv(
        tmp_path / "train.csv",
        [
            {"text": "good film", "label": "pos"},
            {"text": "bad film", "label": "neg"},
            {"text": "a film", "label": ""},
        ],
    )
    data = load_task_data(task("classification", train, train), tokenizer, 16, 0)
    ds = data.splits["train"]
    assert data.spec.labels == ["neg", "pos"]
    assert list(ds["target"]) == [1, 0, None]
    assert list(ds["length"]) == [len(ids) for ids in ds["input_ids"]]
    assert ds["input_ids"][0][0] == tokenizer.cls_token_id


def test_sentence_pairs_use_token_types(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    train = write_csv(
        tmp_path / "p.csv",
        [
            {"a": "good film", "b": "bad film", "label": "no"},
            {"a": "a film", "b": "a film", "label": "yes"},
        ],
    )
    cfg = task("classification", train, train, columns={"text": "a", "text_pair": "b"})
    data = load_task_data(cfg, tokenizer, 16, 0)
    assert data.spec.pair and max(data.splits["train"]["token_type_ids"][0]) == 1


def test_missing_file(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match=r"data file not found: .*nope\.csv"):
        load_task_data(
            task("classification", tmp_path / "nope.csv", tmp_path / "nope.csv"), tokenizer, 16, 0
        )


def test_missing_column(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    train = write_csv(tmp_path / "t.csv", [{"sentence": "x", "label": "a"}])
    with pytest.raises(DataError, match=r"t\.csv: missing column 'text' \(has: sentence, label\)"):
        load_task_data(task("classification", train, train), tokenizer, 16, 0)


def test_label_outside_label_set_names_row(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    train = write_csv(
        tmp_path / "t.csv", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}]
    )
    val = write_csv(tmp_path / "v.csv", [{"text": "x", "label": "a"}, {"text": "y", "label": "c"}])
    with pytest.raises(
        DataError, match=r"v\.csv, row 2, column 'label': label 'c' is not in the label set"
    ):
        load_task_data(task("classification", train, val), tokenizer, 16, 0)


def test_nan_regression_target_names_row(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    train = write_csv(
        tmp_path / "t.csv",
        [{"text": "x", "y": "1.5"}, {"text": "y", "y": "2"}, {"text": "z", "y": "NaN"}],
    )
    cfg = task("regression", train, train, columns={"label": "y"})
    with pytest.raises(DataError, match=r"t\.csv, row 3, column 'y': regression target is 'NaN'"):
        load_task_data(cfg, tokenizer, 16, 0)


def test_empty_split(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    train = write_csv(
        tmp_path / "t.csv", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}]
    )
    val = tmp_path / "v.csv"
    val.write_text("text,label\n")
    with pytest.raises(DataError, match=r"v\.csv: the validation split is empty"):
        load_task_data(task("classification", train, val), tokenizer, 16, 0)


def test_conll_tagging_and_line_without_tag(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.conll"
    good.write_text("alice\tB-per\nvisited\tO\nparis\tB-loc\n\nbob\tB-per\n")
    cfg = task("tagging", good, good, columns={"text": "tokens", "label": "tags"})
    data = load_task_data(cfg, tokenizer, 16, 0)
    ds = data.splits["train"]
    assert list(ds["n_words"]) == [3, 1]
    assert [data.spec.labels[i] for i in ds["word_labels"][0]] == ["B-per", "O", "B-loc"]
    bad = tmp_path / "bad.conll"
    bad.write_text("alice\tB-per\nvisited\n")
    cfg = task("tagging", bad, bad, columns={"text": "tokens", "label": "tags"})
    with pytest.raises(DataError, match=r"bad\.conll, line 2: token 'visited' has no tag"):
        load_task_data(cfg, tokenizer, 16, 0)


def test_wrong_encoding(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9 ok,a\nb,b\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv: cannot decode as utf-8"):
        load_task_data(task("classification", path, path), tokenizer, 16, 0)
    cfg = TaskConfig.model_validate(
        {
            "name": "t",
            "type": "classification",
            "data": {"train": str(path), "validation": str(path), "encoding": "latin-1"},
        }
    )
    assert load_task_data(cfg, tokenizer, 16, 0).spec.labels == ["a", "b"]


def test_subsets_are_seeded(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    rows = [{"text": f"w{i}", "label": "ab"[i % 2]} for i in range(40)]
    train = write_csv(tmp_path / "t.csv", rows)
    cfg = TaskConfig.model_validate(
        {
            "name": "t",
            "type": "classification",
            "data": {
                "train": str(train),
                "validation": str(train),
                "max_train_examples": 10,
                "max_validation_examples": 5,
            },
        }
    )
    a = load_task_data(cfg, tokenizer, 16, 3)
    b = load_task_data(cfg, tokenizer, 16, 3)
    assert len(a.splits["train"]) == 10 and len(a.splits["validation"]) == 5
    assert list(a.splits["train"]["input_ids"]) == list(b.splits["train"]["input_ids"])


def test_parquet_and_saved_dataset_dirs(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    import datasets

    ds = datasets.Dataset.from_dict(
        {"text": ["good film", "bad film", "a plot"], "label": ["p", "n", "p"]}
    )
    ds.to_parquet(str(tmp_path / "t.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    for source in (tmp_path / "t.parquet", tmp_path / "saved"):
        data = load_task_data(task("classification", source, source), tokenizer, 16, 0)
        assert list(data.splits["train"]["target"]) == [1, 0, 1]


def test_json_array_and_wrong_type_value_is_caught(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "t.json"
    good.write_text('[{"text": "a", "y": 1.5}, {"text": "b", "y": 2}]')
    assert (
        len(
            load_task_data(
                task("regression", good, good, columns={"label": "y"}), tokenizer, 16, 0
            ).splits["train"]
        )
        == 2
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "y": 1.5}\n{"text": "b", "y": "many"}\n')
    with pytest.raises(
        DataError,
        match=r"bad\.jsonl, line 2, column 'y': regression target must be a number, got a string",
    ):
        load_task_data(task("regression", bad, bad, columns={"label": "y"}), tokenizer, 16, 0)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "y": 1.5}\n{"text": "b", "y": \n')
    with pytest.raises(
        DataError, match=r"broken\.jsonl, line 2, column 20: not valid JSON \(expecting value\)$"
    ):
        load_task_data(task("regression", broken, broken, columns={"label": "y"}), tokenizer, 16, 0)
    array = tmp_path / "array.json"  # one JSON array: the line and column within the file
    array.write_text('[{"text": "a", "y": 1.5},\n {"text": "b, "y": 2}]\n')
    with pytest.raises(
        DataError,
        match=r"array\.json, line 2, column 16: not valid JSON \(expecting ',' delimiter\)",
    ):
        load_task_data(task("regression", array, array, columns={"label": "y"}), tokenizer, 16, 0)
    not_object = tmp_path / "list.jsonl"
    not_object.write_text('{"text": "a", "y": 1.5}\n\n["b", 2]\n')
    with pytest.raises(DataError, match=r"list\.jsonl, line 3: a record must be a JSON object"):
        load_task_data(
            task("regression", not_object, not_object, columns={"label": "y"}), tokenizer, 16, 0
        )


def test_ragged_csv_and_tag_count_name_the_file(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\ngood film,pos\nbad,film,neg\n")
    with pytest.raises(DataError, match=r"ragged\.csv, row 2: cannot read as csv: 3 cells"):
        load_task_data(task("classification", ragged, ragged), tokenizer, 16, 0)
    tags = tmp_path / "tags.jsonl"
    tags.write_text(
        '{"tokens": ["alice", "visited"], "tags": ["B-per", "O"]}\n'
        '{"tokens": ["bob", "visited", "paris"], "tags": ["B-per", "O"]}\n'
    )
    cfg = task("tagging", tags, tags, columns={"text": "tokens", "label": "tags"})
    with pytest.raises(DataError, match=r"tags\.jsonl, line 2, column 'tags': 2 tags for 3 words"):
        load_task_data(cfg, tokenizer, 16, 0)
