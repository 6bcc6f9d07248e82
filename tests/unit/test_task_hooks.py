"""Task types own what is theirs: a new type flows through loading, evaluation and serving
by its hooks on :class:`~polytask.tasks.TaskType` alone, with no change outside its class."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from polytask.checkpoint import save_model_folder
from polytask.config.run import TaskConfig
from polytask.data.loading import LOADERS, load_task_data
from polytask.errors import DataError, InputError, PolytaskError
from polytask.evaluate import evaluate, predict_split
from polytask.models import ARCHITECTURES
from polytask.predict.predictor import Predictor
from polytask.tasks import IGNORE_INDEX, TASK_TYPES, TaskSpec, TaskType, task_type
from polytask.tasks.base import _INSTANCES, InputForm, TaskOptions, Where

SRC = Path(__file__).resolve().parents[2] / "src" / "polytask"
CALLS: list[str] = []  # the toy's hooks, in the order they were called
SIZES = ["short", "long"]


class Toy(TaskType):
    """Is a text short or long? Words in, one of two labels out; every hook overridden."""

    extra_columns: ClassVar[tuple[str, ...]] = ("n_pieces",)

    def fit_spec(self, config: TaskOptions, train_values: Sequence[Any], where: Where) -> TaskSpec:
        return TaskSpec(name=config.name, type="toy", labels=list(SIZES))

    def encode(self, spec: TaskSpec, value: Any, row: int, where: Where) -> Any:
        if value in (None, ""):
            return None
        if value not in SIZES:
            raise DataError(f"{where(row)}: size {value!r} is neither short nor long")
        return SIZES.index(value)

    def check_targets(self, texts: Sequence[Any], targets: Sequence[Any], where: Where) -> None:
        CALLS.append("check_targets")
        for i, (text, y) in enumerate(zip(texts, targets, strict=True)):
            if y == 1 and len(text.split()) < 3:
                raise DataError(f"{where(i)}: a long text has three words or more")

    def input_form(self, spec: TaskSpec) -> InputForm:
        return "words"

    def encode_inputs(
        self,
        tokenizer: PreTrainedTokenizerBase,
        texts: list[Any],
        pairs: list[Any] | None,
        max_length: int,
    ) -> BatchEncoding:
        CALLS.append("encode_inputs")
        words = [t.split() if isinstance(t, str) else list(t) for t in texts]
        return tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)

    def target_columns(
        self, encoding: BatchEncoding, texts: list[Any], targets: list[Any]
    ) -> dict[str, list[Any]]:
        CALLS.append("target_columns")
        return {"target": targets, "n_pieces": [len(ids) for ids in encoding["input_ids"]]}

    def num_outputs(self, spec: TaskSpec) -> int:
        return len(SIZES)

    def collate(self, spec: TaskSpec, labels: list[Any]) -> torch.Tensor:
        return torch.tensor([IGNORE_INDEX if y is None else y for y in labels])

    def loss(self, spec: TaskSpec, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels.to(logits.device), ignore_index=IGNORE_INDEX)

    def eval_predictions(
        self, spec: TaskSpec, logits: torch.Tensor, rows: dict[str, list[Any]]
    ) -> tuple[list[Any], list[Any]]:
        CALLS.append("eval_predictions")
        assert len(rows["n_pieces"]) == len(logits)  # its own column reaches it
        return self.predict_indices(spec, logits), rows["target"]

    def metrics(
        self, spec: TaskSpec, predictions: list[Any], references: list[Any]
    ) -> dict[str, float]:
        pairs = [(p, r) for p, r in zip(predictions, references, strict=True) if r is not None]
        return {"accuracy": sum(p == r for p, r in pairs) / max(1, len(pairs))}

    def baseline_metrics(self, spec: TaskSpec, references: list[Any]) -> dict[str, float]:
        labelled = [r for r in references if r is not None]
        return {"always_short": labelled.count(0) / max(1, len(labelled))}

    def decode(self, spec: TaskSpec, logits: torch.Tensor) -> list[Any]:
        return [{"size": SIZES[i]} for i in self.predict_indices(spec, logits)]

    def decode_inputs(
        self, spec: TaskSpec, logits: torch.Tensor, encoding: BatchEncoding, inputs: list[Any]
    ) -> list[dict[str, Any]]:
        CALLS.append("decode_inputs")
        words = [x.split() if isinstance(x, str) else list(x) for x in inputs]
        return [{**d, "words": w} for d, w in zip(self.decode(spec, logits), words, strict=True)]


@pytest.fixture()
def toy() -> Iterator[type[Toy]]:
    """``toy`` registered for the test (the one registry line a new type adds), then gone."""
    TASK_TYPES.register("toy")(Toy)
    CALLS.clear()
    try:
        yield Toy
    finally:
        del TASK_TYPES._items["toy"]
        _INSTANCES.pop("toy", None)


TRAIN = [
    ("good film", "short"),
    ("the plot was very bad", "long"),
    ("awful", "short"),
    ("alice visited paris and london", "long"),
    ("a film", ""),
]
VALIDATION = [("bad plot", "short"), ("bob likes the movie a lot", "long"), ("great", "short")]


def write(path: Path, rows: list[tuple[str, str]]) -> str:
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    return str(path)


def toy_config(tmp_path: Path, train: list[tuple[str, str]] = TRAIN) -> TaskConfig:
    data = {"train": write(tmp_path / "train.jsonl", train)}
    data["validation"] = write(tmp_path / "validation.jsonl", VALIDATION)
    return TaskConfig.model_validate({"name": "size", "type": "toy", "data": data})


def test_a_new_task_type_loads_evaluates_and_serves_through_its_hooks(
    toy: type[Toy], tiny_encoder: Path, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    data = load_task_data(toy_config(tmp_path), tokenizer, 16, 0)
    assert data.spec.type == "toy" and data.spec.labels == SIZES
    train = data.splits["train"]
    assert list(train["target"]) == [0, 1, 0, 1, None]
    assert list(train["n_pieces"]) == list(train["length"])
    words = [t.split() for t, _ in TRAIN]
    assert list(train["input_ids"]) == tokenizer(words, is_split_into_words=True)["input_ids"]
    assert {"check_targets", "encode_inputs", "target_columns"} <= set(CALLS)

    torch.manual_seed(0)
    model = ARCHITECTURES.get("hard")(AutoModel.from_pretrained(str(tiny_encoder)), [data.spec])
    model.eval()
    splits, specs = {"size": data.splits["validation"]}, {"size": data.spec}
    CALLS.clear()
    pad = int(tokenizer.pad_token_id)
    metrics = evaluate(model, splits, specs, 8, pad, torch.device("cpu"), with_majority=True)
    assert set(metrics["size"]) == {"accuracy", "loss", "always_short"}
    assert metrics["size"]["always_short"] == pytest.approx(2 / 3, abs=1e-6)
    assert CALLS == ["eval_predictions"]
    preds, _, _ = predict_split(model, data.spec, splits["size"], 8, pad, torch.device("cpu"))

    meta = {"config": {"encoder": {"max_length": 16}, "tasks": []}}
    save_model_folder(tmp_path / "model", model, tokenizer, meta)
    predictor = Predictor(tmp_path / "model")
    assert predictor.tasks == ["size"] and predictor.form("size") == "words"
    CALLS.clear()
    texts = [t for t, _ in VALIDATION]
    served = predictor.predict("size", texts)
    assert CALLS == ["encode_inputs", "decode_inputs"]
    assert [p["size"] for p in served] == [SIZES[i] for i in preds]
    assert [p["words"] for p in served] == [t.split() for t in texts]
    assert predictor.predict("size", [["bad", "plot"]]) == served[:1]  # a list of words
    assert predictor.predict("*", texts[:1]) == [{"size": served[0]}]
    with pytest.raises(InputError, match=r"inputs\[0\]: empty list of words"):
        predictor.check("size", [[]])


def test_a_new_task_type_checks_its_own_rows(
    toy: type[Toy], tiny_encoder: Path, tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    bad = [*TRAIN, ("too short", "long")]
    with pytest.raises(DataError, match=r"line 6.*a long text has three words or more"):
        load_task_data(toy_config(tmp_path, bad), tokenizer, 16, 0)
    with pytest.raises(DataError, match="neither short nor long"):
        load_task_data(toy_config(tmp_path, [*TRAIN, ("a b c", "tall")]), tokenizer, 16, 0)


def test_a_reader_that_is_no_loader_is_named(
    toy: type[Toy], tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Toy, "reader", "scrolls")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    with pytest.raises(PolytaskError, match="task type 'toy' is read by 'scrolls'"):
        load_task_data(toy_config(tmp_path), tokenizer, 16, 0)


def test_every_registered_type_names_a_loader_and_a_form() -> None:
    for name in TASK_TYPES:
        ttype = task_type(name)
        assert ttype.reader in LOADERS, name
        assert set(ttype.extra_columns).isdisjoint({"input_ids", "target", "length"}), name
        plain, pair = TaskSpec(name="t", type=name), TaskSpec(name="t", type=name, pair=True)
        assert {ttype.input_form(plain), ttype.input_form(pair)} <= {"text", "pair", "words"}


def test_built_in_types_declare_their_inputs(tiny_encoder: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    spec = TaskSpec(name="t", type="classification", pair=True)
    assert task_type("classification").input_form(spec) == "pair"
    assert task_type("tagging").input_form(spec) == "words"
    texts, pairs = ["good film", "bad plot"], ["a movie", "the plot"]
    got = task_type("classification").encode_inputs(tokenizer, texts, pairs, 16)
    assert got["input_ids"] == tokenizer(texts, pairs, truncation=True)["input_ids"]
    words = task_type("tagging").encode_inputs(tokenizer, ["alice visited", ["bob"]], None, 16)
    split = tokenizer([["alice", "visited"], ["bob"]], is_split_into_words=True)
    assert words["input_ids"] == split["input_ids"] and words.word_ids(0) == split.word_ids(0)
    assert task_type("instruction").generates and not task_type("tagging").generates
    assert task_type("classification").baseline_metrics(spec, [0, 1, 1]) == {
        "majority_accuracy": pytest.approx(2 / 3)
    }
    assert task_type("regression").baseline_metrics(spec, [1.0]) == {
        "mean_rmse": 1.0,  # the training mean (0 standardised) against a target 1 std away
        "mean_pearson": None,
        "mean_spearman": None,
    }


CONCRETE = {"classification", "instruction", "lm", "regression", "tagging"}


def _special_cases(path: Path) -> list[str]:
    """Imports of a concrete task type's module and comparisons of a ``.type`` with a name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[:2] == ["polytask", "tasks"] and len(parts) > 2 and parts[2] in CONCRETE:
                found.append(f"{path.name}:{node.lineno} imports {node.module}")
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            typed = any(isinstance(s, ast.Attribute) and s.attr == "type" for s in sides)
            named = any(isinstance(s, ast.Constant) and s.value in CONCRETE for s in sides)
            if typed and named:
                found.append(f"{path.name}:{node.lineno} compares a type with its name")
    return found


def test_loading_evaluation_and_prediction_never_name_a_task_type() -> None:
    files = [*(SRC / "data").glob("*.py"), SRC / "evaluate.py", *(SRC / "predict").glob("*.py")]
    assert [hit for path in sorted(files) for hit in _special_cases(path)] == []
