import math

import pytest
import torch
import torch.nn.functional as F

from polytask.config.run import TaskConfig
from polytask.errors import DataError
from polytask.tasks import IGNORE_INDEX, task_type
from polytask.tasks.tagging import Tagging


def where(i: int) -> str:
    return f"f.csv, row {i + 1}, column 'label'"


def cfg(type_: str, **kw: object) -> TaskConfig:
    return TaskConfig.model_validate({"name": "t", "type": type_, "data": {"bundled": "x"}, **kw})


def test_classification_label_set_and_masked_loss() -> None:
    ct = task_type("classification")
    spec = ct.fit_spec(cfg("classification"), ["b", "a", "", None, "c"], where)
    assert spec.labels == ["a", "b", "c"]
    encoded = [ct.encode(spec, v, i, where) for i, v in enumerate(["c", "", "a"])]
    assert encoded == [2, None, 0]
    labels = ct.collate(spec, encoded)
    logits = torch.randn(3, 3)
    expected = F.cross_entropy(logits[[0, 2]], torch.tensor([2, 0]))
    assert torch.allclose(ct.loss(spec, logits, labels), expected)
    with pytest.raises(
        DataError, match=r"row 2, column 'label': label 'd' is not in the label set"
    ):
        ct.encode(spec, "d", 1, where)


def test_fully_unlabelled_batch_gives_zero_loss_not_nan() -> None:
    ct = task_type("classification")
    spec = ct.fit_spec(cfg("classification"), ["a", "b"], where)
    loss = ct.loss(spec, torch.randn(2, 2, requires_grad=True), ct.collate(spec, [None, None]))
    assert loss.item() == 0.0
    loss.backward()


def test_multi_label_classification() -> None:
    ct = task_type("classification")
    spec = ct.fit_spec(cfg("classification", multi_label=True), ["a|b", "c", "b"], where)
    assert spec.labels == ["a", "b", "c"]
    y = [ct.encode(spec, v, 0, where) for v in ["a|c", "b"]]
    target = ct.collate(spec, y)
    assert target.tolist() == [[1, 0, 1], [0, 1, 0]]
    metrics = ct.metrics(spec, [[0, 2], [2]], y)
    assert metrics["accuracy"] == 0.5


def test_classification_metrics() -> None:
    ct = task_type("classification")
    spec = ct.fit_spec(cfg("classification"), ["a", "b"], where)
    m = ct.metrics(spec, [0, 1, 1, 0], [0, 1, 0, None])
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_regression_standardises_and_reports_original_units() -> None:
    rt = task_type("regression")
    spec = rt.fit_spec(cfg("regression"), [10, 20, "", 30.0], where)
    assert spec.target_mean == pytest.approx(20.0)
    encoded = [rt.encode(spec, v, 0, where) for v in [10, 30, ""]]
    assert encoded[0] == pytest.approx(-encoded[1]) and encoded[2] is None
    decoded = rt.decode(spec, torch.tensor([[encoded[1]]]))
    assert decoded[0]["value"] == pytest.approx(30.0)
    labels = rt.collate(spec, encoded)
    assert math.isnan(labels[2].item())
    loss = rt.loss(spec, torch.tensor([[encoded[0]], [encoded[1]], [5.0]]), labels)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    m = rt.metrics(spec, [encoded[0], encoded[1] * 0.5], [encoded[0], encoded[1]])
    assert m["rmse"] == pytest.approx(math.sqrt(25 / 2))  # errors 0 and 5 in original units


@pytest.mark.parametrize("value", ["nan", float("inf"), "abc"])
def test_regression_rejects_nan_inf_and_text(value: object) -> None:
    rt = task_type("regression")
    spec = rt.fit_spec(cfg("regression"), [1.0, 2.0], where)
    with pytest.raises(DataError, match=r"row 4, column 'label': regression target"):
        rt.encode(spec, value, 3, where)


def test_tagging_aligns_labels_to_first_piece() -> None:
    assert Tagging.align([None, 0, 0, 1, None], [3, 5]) == [
        IGNORE_INDEX,
        3,
        IGNORE_INDEX,
        5,
        IGNORE_INDEX,
    ]
    assert Tagging.word_starts([None, 0, 0, 1, 2, 2, None]) == [1, 3, 4]


def test_tagging_metrics_and_truncated_words_count_as_outside() -> None:
    tt = task_type("tagging")
    spec = tt.fit_spec(cfg("tagging"), [["O", "B-per", "I-per"], ["B-loc"]], where)
    assert spec.labels[0] == "O"
    ref = [tt.encode(spec, ["B-per", "I-per", "O", "B-loc"], 0, where)]
    assert tt.metrics(spec, ref, ref)["f1"] == 1.0
    # the model only saw 2 of 4 words: the cut-off entity is a miss, never hidden
    logits = torch.full((1, 4, len(spec.labels)), -5.0)
    logits[0, 1, spec.labels.index("B-per")] = 5
    logits[0, 2, spec.labels.index("I-per")] = 5
    preds = tt.word_predictions(logits, [[1, 2]], [4])
    m = tt.metrics(spec, preds, ref)
    assert m["precision"] == 1.0 and m["recall"] == 0.5


def test_tagging_spans() -> None:
    tt = task_type("tagging")
    spec = tt.fit_spec(cfg("tagging"), [["O", "B-per", "I-per", "B-loc"]], where)
    out = tt.decode_words(
        spec,
        ["Ada", "Lovelace", "in", "London"],
        [spec.labels.index(t) for t in ["B-per", "I-per", "O", "B-loc"]],
    )
    assert out["entities"] == [
        {"type": "per", "start": 0, "end": 2, "text": "Ada Lovelace"},
        {"type": "loc", "start": 3, "end": 4, "text": "London"},
    ]


def test_tagging_piece_level_decode() -> None:
    tt = task_type("tagging")
    spec = tt.fit_spec(cfg("tagging"), [["O", "B-per"]], where)
    logits = torch.zeros(1, 3, len(spec.labels))
    logits[0, 1, spec.labels.index("B-per")] = 1.0
    assert tt.decode(spec, logits) == [{"piece_tags": ["O", "B-per", "O"]}]
