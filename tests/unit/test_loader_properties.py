"""Property tests of the data readers: any JSON value in any column the task reads.

Each case writes a train and a validation file whose columns hold values of every JSON
type (null, bool, int, float, string with whitespace variants, list, dict, nested). The
loader must either load cleanly, every loaded text and label equal to what the file holds
(no value that was not in the file), or raise a one-line ``DataError`` naming the file and
(for a cell) its line. Any other exception fails the test, as does a coerced value.
Each outcome is recorded as a hypothesis event (``--hypothesis-show-statistics``).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from polytask.config.run import TaskConfig
from polytask.data.instructions import _checked
from polytask.data.loading import read_task
from polytask.data.read import SplitFile, read_table
from polytask.data.texts import _texts
from polytask.errors import DataError
from polytask.tasks import task_type
from polytask.tasks.prompts import make_answer

CASES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
#: errors about a whole column or file, naming the file but no line
FILE_LEVEL = (
    "has no label in any row",
    "needs at least 2 labels",
    "no tags found",
    "no labelled regression targets",
    "too large to standardise",
    "needs at least two answers",
)

WORDS = ["pos", "pos ", " pos", "neg", "neu", "p\u00a0os", "", " ", "B-PER", "O", "a b", "1"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.integers()
    | st.floats()
    | st.sampled_from([1.0, 0.0, 2.5])
    | st.sampled_from(WORDS)
    | st.text(max_size=6)
)
#: any JSON value, nested
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


LABELS = ("label", "tags", "score")
#: whole columns of one JSON type (an all-bool column must be refused as such)
ONE_TYPE = [
    st.booleans() | st.none(),
    st.integers() | st.none(),
    st.floats() | st.none(),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
]


def column(good: Any, label: bool) -> st.SearchStrategy[st.SearchStrategy[Any]]:
    """A column's cell strategy: all good cells (of one form, when ``good`` is a tuple of
    forms), good cells of every form mixed with any JSON value, or (a label column) cells
    of one other JSON type."""
    forms = list(good) if isinstance(good, tuple) else [good]
    return st.sampled_from(
        [*forms, *forms, st.one_of(*forms, anything), *(ONE_TYPE if label else [])]
    )


def write(root: Path, name: str, rows: list[dict[str, Any]]) -> Path:
    path = root / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path


@st.composite
def splits(draw: st.DrawFn, cells: dict[str, Any]) -> dict[str, list[Any]]:
    """Rows of a train and a validation split, each column drawn from its cell strategy."""
    strategies = {name: draw(column(good, name in LABELS)) for name, good in cells.items()}
    out = {}
    for split in ("train", "validation"):
        n = draw(st.integers(1, 5))
        out[split] = [{c: draw(s) for c, s in strategies.items()} for _ in range(n)]
    return out


def config(root: Path, type_: str, data: dict[str, Any], **kw: Any) -> TaskConfig:
    files = {split: str(write(root, split, rows)) for split, rows in data.items()}
    return TaskConfig.model_validate({"name": "t", "type": type_, "data": files, **kw})


def refused(error: DataError, root: Path) -> None:
    """A refusal: one line naming a file of the case, and a line unless file-level."""
    message = str(error)
    assert "\n" not in message, message
    assert str(root) in message, message
    assert re.search(r", line \d+(, column '\w+')?: ", message) or any(
        f in message for f in FILE_LEVEL
    ), message
    event("refused: " + re.sub(r".*?: ", "", message, count=1).split(",")[0][:40])


def class_name(value: Any) -> str:
    """What a class cell is named in the label set: a string as is, an int by its text."""
    assert isinstance(value, str) or type(value) is int, f"coerced {value!r}"
    return value if isinstance(value, str) else str(value)


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def loaded(cfg: TaskConfig) -> tuple[Any, dict[str, Any]] | None:
    try:
        spec, _, raw, _ = read_task(cfg, seed=0)
    except DataError as error:
        refused(error, Path(cfg.data.train or "").parent)
        return None
    event("clean load")
    return spec, raw


def check_texts(rows: list[dict[str, Any]], ds: Any, column: str, name: str) -> None:
    assert list(ds[name]) == [r[column] for r in rows]
    assert all(isinstance(r[column], str) for r in rows)


texts = st.sampled_from(["good film", "", " bad ", "x\u2028y"]) | st.text(max_size=8)


@CASES
@given(splits({"text": texts, "label": st.sampled_from(["pos", "neg", "neu", None, ""])}))
def test_classification_single_label(data: dict[str, list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = loaded(config(Path(tmp), "classification", data))
    if out is None:
        return
    spec, raw = out
    names = {class_name(r["label"]) for r in data["train"] if not missing(r["label"])}
    assert set(spec.labels) == names  # no label that is not in the training file
    for split, rows in data.items():
        check_texts(rows, raw[split], "text", "text")
        for row, y in zip(rows, raw[split]["target"], strict=True):
            assert (
                (y is None) if missing(row["label"]) else spec.labels[y] == class_name(row["label"])
            )


@CASES
@given(
    splits(
        {
            "text": texts,
            "pair": texts,
            "label": st.sampled_from([0, 1, 2, None]),
        }
    )
)
def test_sentence_pairs_with_integer_ids(data: dict[str, list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), "classification", data, columns={"text_pair": "pair"})
        out = loaded(cfg)
    if out is None:
        return
    spec, raw = out
    for split, rows in data.items():
        check_texts(rows, raw[split], "text", "text")
        check_texts(rows, raw[split], "pair", "text_pair")
        for row, y in zip(rows, raw[split]["target"], strict=True):
            assert (y is None) if row["label"] is None else spec.labels[y] == str(row["label"])


multi = (st.sampled_from(["a|b", "a", "b | c", "", None]), st.lists(st.sampled_from("abc")))


@CASES
@given(splits({"text": texts, "label": multi}))
def test_classification_multi_label(data: dict[str, list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = loaded(config(Path(tmp), "classification", data, multi_label=True))
    if out is None:
        return
    spec, raw = out
    for split, rows in data.items():
        check_texts(rows, raw[split], "text", "text")
        for row, y in zip(rows, raw[split]["target"], strict=True):
            value = row["label"]
            if missing(value):
                assert y is None
                continue
            if isinstance(value, list):  # listed labels as they are
                expected = [class_name(p) for p in value]
            else:  # separated parts, stripped
                expected = [p.strip() for p in value.split("|") if p.strip()]
            assert [spec.labels[i] for i in y] == expected


words = st.lists(st.sampled_from(["Ada", "met", "Bob", "New York", "["]), min_size=1, max_size=3)
tag_cells = st.lists(st.sampled_from(["O", "B-PER", "I-PER"]), min_size=1, max_size=3)


@CASES
@given(
    splits(
        {
            "tokens": (words, words.map(" ".join)),
            "tags": (tag_cells | st.none(), tag_cells.map(" ".join) | st.none()),
        }
    )
)
def test_tagging_tokens_and_tags(data: dict[str, list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), "tagging", data, columns={"text": "tokens", "label": "tags"})
        out = loaded(cfg)
    if out is None:
        return
    spec, raw = out
    seen = {t for r in data["train"] if not missing(r["tags"]) for t in seq(r["tags"])}
    assert set(spec.labels) == seen
    for split, rows in data.items():
        assert list(raw[split]["text"]) == [seq(r["tokens"]) for r in rows]
        for row, y in zip(rows, raw[split]["target"], strict=True):
            if missing(row["tags"]):
                assert y is None
            else:
                assert [spec.labels[i] for i in y] == seq(row["tags"])


def seq(value: Any) -> list[str]:
    """A word or tag cell as the file means it: a list of strings, or a string split."""
    if isinstance(value, str):
        return value.split()
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), value
    return value


targets = st.integers(-5, 5) | st.floats(-1e6, 1e6) | st.none()


@CASES
@given(splits({"text": texts, "score": targets}))
def test_regression(data: dict[str, list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = loaded(config(Path(tmp), "regression", data, columns={"label": "score"}))
    if out is None:
        return
    spec, raw = out
    for split, rows in data.items():
        check_texts(rows, raw[split], "text", "text")
        for row, y in zip(rows, raw[split]["target"], strict=True):
            value = row["score"]
            if value is None:
                assert y is None
                continue
            assert type(value) in (int, float) and math.isfinite(value), f"coerced {value!r}"
            back = y * spec.target_std + spec.target_mean
            scale = max(spec.target_std, abs(spec.target_mean), 1.0)  # float rounding only
            assert math.isclose(back, value, rel_tol=1e-6, abs_tol=1e-6 * scale)


csv_cells = st.sampled_from(["1.5", "2", " 3 ", "-1e3", "", "NaN", "inf", "1_0", "1,5", "abc"])


@CASES
@given(st.lists(csv_cells, min_size=1, max_size=5))
def test_regression_csv_cells_parse_strictly(cells: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        body = "".join(f'x,"{c}"\n' for c in cells)
        path.write_text("text,score\n" + body, "utf-8")
        cfg = TaskConfig.model_validate(
            {
                "name": "t",
                "type": "regression",
                "data": {"train": str(path), "validation": str(path)},
                "columns": {"label": "score"},
            }
        )
        try:
            spec, _, raw, _ = read_task(cfg, seed=0)
        except DataError as error:
            message = str(error)
            assert str(path) in message and "\n" not in message, message
            assert re.search(r", row \d+, column 'score': ", message) or any(
                f in message for f in FILE_LEVEL
            ), message
            event("refused")
            return
    event("clean load")
    for cell, y in zip(cells, raw["train"]["target"], strict=True):
        if not cell.strip():
            assert y is None
        else:
            assert re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", cell.strip()), cell
            back = y * spec.target_std + spec.target_mean
            assert math.isclose(back, float(cell), rel_tol=1e-6, abs_tol=1e-6)


@CASES
@given(splits({"text": texts, "label": st.sampled_from(["yes", "no", None])}))
def test_instruction_label_answers(data: dict[str, list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ins = {"template": "Q: {text}"}
        cfg = config(root, "instruction", data, instruction=ins, labels=["yes", "no"])
        try:
            for split in data:
                path = Path(getattr(cfg.data, split))
                source = SplitFile(path, "auto", "utf-8")
                table = read_table(source, ("text", "label"), ["text", "label"], split)
                columns = _checked(cfg, table)
                spec = task_type("instruction").fit_spec(
                    cfg, columns["label"], table.where("label")
                )
                assert columns["text"] == [r["text"] for r in data[split]]
                rows = zip(data[split], columns["label"], columns["text"], strict=True)
                for i, (row, value, text) in enumerate(rows):
                    assert value == (None if missing(row["label"]) else row["label"])
                    answer = make_answer(cfg.instruction, text, value)  # type: ignore[arg-type]
                    task_type("instruction").encode(spec, answer, i, table.where("label"))
                    assert answer is None or answer == class_name(value) in spec.labels
        except DataError as error:
            refused(error, root)
            return
    event("clean load")


@CASES
@given(splits({"text": texts | words}))
def test_lm_texts(data: dict[str, list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = config(root, "lm", data)
        try:
            read = _texts(cfg, "train", 0)
        except DataError as error:
            refused(error, root)
            return
    event("clean load")
    assert read is not None
    got, expected = read[0], []
    for row in data["train"]:
        value = row["text"]
        if isinstance(value, list):
            assert all(isinstance(w, str) for w in value), f"coerced {value!r}"
            value = " ".join(value)
        assert value is None or isinstance(value, str), f"coerced {value!r}"
        if value is not None and value.strip():
            expected.append(value)
    assert got == expected
