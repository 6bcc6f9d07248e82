"""The prediction code the server and ``polytask predict`` share: ``Predictor.run`` batches
several jobs, ``"*"`` equals asking each task (for every architecture, with the encoder
passes each one documents), inputs are checked with one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from transformers import PreTrainedModel

from polytask.data.batching import length_chunks
from polytask.errors import InputError, UnknownTaskError
from polytask.predict.predictor import Job, Predictor
from tests.unit.serve_model import ARCH_ARGS, assert_same, make_model_folder
from tests.unit.test_cli import assert_user_error, polytask

TEXTS = ["alice visited paris", "the film was very good", "bob likes london and the plot"]
PAIRS = [["a good film", "a great movie"], ["bad plot", "the plot was awful"]]
# encoder passes for '*' on texts (4 text tasks): one, or one per task where the encoder
# depends on the task (task-conditioned) or is the task's own (soft)
PASSES = {"hard": 1, "mmoe": 1, "switch": 1, "film": 4, "task_embedding": 4, "prefix": 4, "soft": 4}
# cgc, ple, dselect_k: one; cross_stitch: one pass of its first column, which runs every
# other column layer by layer inside it (T columns once for all the tasks reading the rows)
PASSES |= {"cgc": 1, "ple": 1, "dselect_k": 1, "cross_stitch": 1}


def count_encoder_passes(predictor: Predictor) -> list[int]:
    calls = [0]
    for module in predictor.model.modules():
        if isinstance(module, PreTrainedModel):
            module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.filterwarnings("ignore:polytask. soft sharing")
@pytest.mark.filterwarnings("ignore:polytask. cross_stitch keeps")
@pytest.mark.parametrize("arch", list(ARCH_ARGS))
def test_star_equals_each_task(arch: str, tiny_encoder: Path, tmp_path: Path) -> None:
    predictor = Predictor(make_model_folder(tiny_encoder, tmp_path / arch, arch))
    assert predictor.star_tasks("text") == ["sent", "tags", "reg", "topics"]
    assert predictor.star_tasks("pair") == ["nli"]
    passes = count_encoder_passes(predictor)
    star = predictor.predict("*", TEXTS)
    assert passes[0] == PASSES[arch]
    for task in predictor.star_tasks("text"):
        assert_same([row[task] for row in star], predictor.predict(task, TEXTS), 1e-6)
    pairs = predictor.predict("*", PAIRS)
    assert_same([row["nli"] for row in pairs], predictor.predict("nli", PAIRS), 1e-6)


def test_mixed_jobs_share_forwards(served_model: Path) -> None:
    predictor = Predictor(served_model)
    jobs = [
        Job("sent", TEXTS[:2]),
        Job("tags", [TEXTS[0], ["bob", "likes", "london"]]),
        Job("*", TEXTS[1:]),
        Job("nli", PAIRS[:1]),
        Job("sent", TEXTS[2:]),
        Job("*", PAIRS),
        Job("reg", TEXTS),
    ]
    alone = [predictor.run([job])[0] for job in jobs]
    predictor.forwards = 0
    together = predictor.run(jobs)
    # one forward for every single-task job, one for '*' on texts, one for '*' on pairs
    assert predictor.forwards == 3
    for job, a, b in zip(jobs, alone, together, strict=True):
        assert len(b) == len(job.inputs)
        assert_same(b, a, 1e-5, job.task)
    assert set(together[2][0]) == {"sent", "tags", "reg", "topics"}
    assert set(together[5][0]) == {"nli"}


def test_rows_are_chunked_by_length(served_model: Path) -> None:
    """Short and long inputs go to separate model calls (less padding), same answers."""
    predictor = Predictor(served_model)
    short, long = ["good film"] * 8, [" ".join(["very good plot and film"] * 4)] * 8
    inputs = [x for pair in zip(short, long, strict=True) for x in pair]
    alone = [predictor.predict("tags", [x])[0] for x in inputs]
    predictor.forwards = 0
    together = predictor.predict("tags", inputs)
    assert predictor.forwards == 2
    assert_same(together, alone, 1e-5)
    assert length_chunks([3] * 5 + [20] * 9) == [list(range(5)) + list(range(5, 14))]
    assert length_chunks([3] * 8 + [20] * 8) == [list(range(8)), list(range(8, 16))]


def test_prediction_kinds(served_model: Path) -> None:
    predictor = Predictor(served_model)
    sent, tags, reg, nli, topics = (
        predictor.predict(t, i)[0]
        for t, i in [
            ("sent", TEXTS),
            ("tags", TEXTS),
            ("reg", TEXTS),
            ("nli", PAIRS),
            ("topics", TEXTS),
        ]
    )
    assert sent["label"] in ("neg", "neu", "pos") and sum(sent["scores"].values()) == pytest.approx(
        1
    )
    assert len(tags["tags"]) == 3 and {"type", "start", "end", "text"} <= set(tags["entities"][0])
    assert isinstance(reg["value"], float)
    assert nli["label"] in ("no", "yes")
    assert topics["labels"] == [k for k, v in topics["scores"].items() if v >= 0.5]


def test_word_without_pieces_keeps_the_other_words_tags(served_model: Path) -> None:
    """BERT's tokenizer drops U+200B: the word gets 'O', the words after it keep their tags."""
    predictor = Predictor(served_model)
    plain = predictor.predict("tags", [["alice", "paris", "bob"]])[0]["tags"]
    gap = predictor.predict("tags", [["alice", "\u200b", "paris", "bob"]])[0]["tags"]
    assert gap == [plain[0], "O", *plain[1:]]


BAD: list[tuple[str, Any, str]] = [
    ("sent", [], "inputs: empty list; give at least one input"),
    ("sent", "a text", "inputs: expected a list of inputs, got a string"),
    ("sent", [["a", "b"]], "inputs[0]: expected a text (a JSON string), got a list of 2 items"),
    ("sent", ["fine", " \n"], "inputs[1]: empty text"),
    ("sent", ["fine", 3], "inputs[1]: expected a text (a JSON string), got a number"),
    ("sent", ["\ud800"], "inputs[0]: not valid Unicode (lone surrogate)"),
    ("nli", ["a"], "inputs[0]: expected a sentence pair (a list of two strings), got a string"),
    ("nli", [["a"]], "inputs[0]: expected a sentence pair (a list of two strings), got a list"),
    ("nli", [["a", None]], "inputs[0][1]: expected a string, got null"),
    ("tags", [[]], "inputs[0]: empty list of words"),
    ("tags", [["alice", ""]], "inputs[0][1]: empty text"),
    ("tags", [{"text": "a"}], "inputs[0]: expected a text or a list of words (strings), got an"),
    ("*", ["a", ["a", "b"]], "inputs[1]: task '*' takes all texts or all sentence pairs"),
    ("*", [True], "inputs[0]: expected a text (a JSON string), got a boolean"),
    ("sent", ["a"] * 3, "inputs: 3 inputs; the limit is 2 per request"),
    ("nli", [["123456", "1234567"]], "inputs[0]: 13 characters; the limit is 12"),
]


@pytest.mark.parametrize(("task", "inputs", "message"), BAD, ids=[m for *_, m in BAD])
def test_bad_inputs(served_model: Path, task: str, inputs: Any, message: str) -> None:
    predictor = Predictor(served_model)
    with pytest.raises(InputError) as info:
        predictor.check(task, inputs, max_inputs=2, max_chars=12)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (
            "sentt",
            "unknown task 'sentt' (did you mean 'sent'?); tasks: sent, tags, reg, nli, topics",
        ),
        ("mlm", "unknown task 'mlm'"),
    ],
)
def test_unknown_and_auxiliary_tasks(served_model: Path, task: str, message: str) -> None:
    with pytest.raises(UnknownTaskError, match=re.escape(message)):
        Predictor(served_model).check(task, ["a"])


def test_cli_predict_every_task(served_model: Path) -> None:
    result = polytask(
        "predict", str(served_model), "--task", "*", "--input", "-", stdin="\n".join(TEXTS)
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["input"] for line in lines] == TEXTS
    assert_same(
        [line["predictions"] for line in lines], Predictor(served_model).predict("*", TEXTS)
    )
    bad = polytask(
        "predict", str(served_model), "-t", "sent", "-i", "-", stdin='good\n["a", "b"]\n'
    )
    assert_user_error(
        bad, "stdin, line 2: expected a text (a JSON string), got a list of 2 items; task 'sent'"
    )


def test_cli_predict_pair_task_on_plain_text_names_file_line_and_form(
    served_model: Path, tmp_path: Path
) -> None:
    """Issue 22 item 8: a plain text file for a sentence-pair task named neither the file
    nor the line, nor the JSON line to write instead; broken JSON gives its position."""
    plain = tmp_path / "texts.txt"
    plain.write_text("\na great film\nthe plot was thin\n")
    assert_user_error(
        polytask("predict", str(served_model), "--task", "nli", "-i", str(plain)),
        f"{plain}, line 2: expected a sentence pair (a list of two strings), got a string; "
        "task 'nli' takes one input per line, each a JSON line "
        '{"text": "...", "text_pair": "..."} (or ["...", "..."])',
    )
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"text": "a great film", "text_pair": "a good film"}\n["a", "b"]\n')
    done = polytask("predict", str(served_model), "--task", "nli", "-i", str(pairs))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["input"] for line in done.stdout.splitlines()] == [
        ["a great film", "a good film"],
        ["a", "b"],
    ]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('["a", "b"]\n{"text": "a great film\n')
    assert_user_error(
        polytask("predict", str(served_model), "--task", "nli", "-i", str(broken)),
        f"{broken}, line 2, column 10: not valid JSON (unterminated string starting here)",
    )
