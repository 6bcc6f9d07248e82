"""Shared fixtures: a tiny random BERT encoder and small synthetic task files."""

from __future__ import annotations

import json
import os
import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

WORDS = [
    "good",
    "great",
    "bad",
    "awful",
    "movie",
    "plot",
    "film",
    "the",
    "a",
    "is",
    "was",
    "paris",
    "london",
    "alice",
    "bob",
    "visited",
    "likes",
    "and",
    "very",
    "not",
]
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers on the two cores: one torch thread each (and for
    # the polytask subprocesses they start), or four threads contend for two cores
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

POSITIVE, NEGATIVE = {"good", "great"}, {"bad", "awful"}
NAMES = {"paris": "B-loc", "london": "B-loc", "alice": "B-per", "bob": "B-per"}


def make_tiny_encoder(folder: Path) -> Path:
    """A 2-layer, 32-wide random BERT with a small word-piece vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *WORDS,
        *string.ascii_lowercase,
        *string.digits,
        *string.punctuation,
        *(f"##{c}" for c in string.ascii_lowercase),
    ]
    tokenizer = BertTokenizerFast(
        vocab={tok: i for i, tok in enumerate(dict.fromkeys(vocab))}, do_lower_case=True
    )
    tokenizer.save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    # seeded: the same weights whichever test first asks for the encoder
    with torch.random.fork_rng():
        torch.manual_seed(0)
        BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """One torch thread (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    models gain nothing from a second intra-op thread, and on a shared 2-core machine each
    of their many small matmuls waits for it, which makes tiny runs several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


def _sentence(rng: random.Random) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]


def sentiment_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = _sentence(rng)
        pos = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
        rows.append(
            {"text": " ".join(words), "label": "pos" if pos > 0 else "neg" if pos < 0 else "neu"}
        )
    return rows


def tagging_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"tokens": (w := _sentence(rng)), "tags": [NAMES.get(x, "O") for x in w]} for _ in range(n)
    ]


def regression_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"text": " ".join(w := _sentence(rng)), "score": float(10 * w.count("very") + 3)}
        for _ in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_task_files(tmp_path: Path) -> dict[str, dict[str, Path]]:
    """Three small synthetic tasks (classification, tagging, regression) as JSONL splits."""
    makers = {"sent": sentiment_rows, "tags": tagging_rows, "reg": regression_rows}
    sizes = {"train": 96, "validation": 32, "test": 32}
    return {
        task: {
            split: write_jsonl(
                tmp_path / "data" / task / f"{split}.jsonl", make(n, hash((task, split)) % 1000)
            )
            for split, n in sizes.items()
        }
        for task, make in makers.items()
    }


@pytest.fixture()
def task_files(tmp_path: Path) -> dict[str, dict[str, Path]]:
    """Three small synthetic tasks (classification, tagging, regression) as JSONL splits."""
    return write_task_files(tmp_path)


def base_config(encoder: Path, files: dict[str, dict[str, Path]], **train: Any) -> dict[str, Any]:
    """A plain-dict run config over the synthetic tasks, small enough for a unit test."""

    def data(task: str) -> dict[str, str]:
        return {s: str(p) for s, p in files[task].items()}

    return {
        "seed": 7,
        "encoder": {"name": str(encoder), "max_length": 32},
        "tasks": [
            {"name": "sent", "type": "classification", "data": data("sent")},
            {
                "name": "tags",
                "type": "tagging",
                "data": data("tags"),
                "columns": {"text": "tokens", "label": "tags"},
            },
            {
                "name": "reg",
                "type": "regression",
                "data": data("reg"),
                "columns": {"label": "score"},
            },
        ],
        "sampler": {"name": "round_robin", "tasks_per_step": 1},
        "train": {
            "batch_size": 8,
            "eval_batch_size": 16,
            "max_steps": 12,
            "eval_every": 6,
            "lr": 1e-3,
            "patience": None,
            **train,
        },
    }


_TABLES: dict[tuple[str, ...], Any] = {}


@pytest.fixture()
def cached_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each split file is parsed once per worker, not once per run: a bundled demo split is
    ~12k JSON lines that every run of the method matrix would read again, to train on 256
    rows. The cache keys on the task's config, the split and the file's size and mtime, so
    an edited file is read again; only the parse is shared (subsets, encoding and
    tokenising still run in every run), and reading itself is tested in test_loading."""
    from polytask.data import loading

    read = loading.read_task_table

    def cached(config: Any, split: str, path: tuple[Path, str, str]) -> Any:
        stat = path[0].stat() if path[0].is_file() else None
        if stat is None:
            return read(config, split, path)
        key = (config.model_dump_json(), split, *map(str, path), str(stat.st_size))
        key += (str(stat.st_mtime_ns),)
        if key not in _TABLES:
            _TABLES[key] = read(config, split, path)
        return _TABLES[key]

    monkeypatch.setattr(loading, "read_task_table", cached)


@pytest.fixture(scope="session")
def served_model(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved hard-sharing model with every kind of served task (see tests/unit/serve_model.py)."""
    from tests.unit.serve_model import make_model_folder

    return make_model_folder(tiny_encoder, tmp_path_factory.mktemp("served") / "model")


DECODER_WORDS = [*WORDS, "yes", "no", "pos", "neg", "neu", "none", "per", "loc", ":", ";", "?"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_decoder(folder: Path) -> Path:
    """A 2-layer, 32-wide random Llama with a word-level tokenizer and a ChatML template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    roles = ["system", "user", "assistant", "\n"]
    pieces = [*specials, *roles, *DECODER_WORDS, *string.ascii_lowercase, *string.punctuation]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(pieces))}
    model = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.Whitespace()]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(folder))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_decoder(tmp_path_factory.mktemp("tiny-llama"))


# `make test` runs `pytest -n 2`: two workers, each taking the next test when it is almost
# idle. Two things keep both busy to the end. The slow files go first (a 5-minute test
# started last is a 5-minute tail on one worker); and the files whose tests share one
# expensive session fixture run on one worker (each worker would build its own otherwise:
# test_bad_inputs starts every selected case, in each worker that runs any of them).
SLOW_FIRST = (  # the slowest first; every other test keeps its place after these
    "tests/integration/test_real_encoder.py",
    "tests/integration/",
    "tests/test_bad_inputs.py",
    "tests/unit/test_resume.py",
    "tests/unit/test_distributed.py",
    "tests/unit/test_every_method_trains.py",
)
ONE_WORKER = ("tests/test_bad_inputs.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next((i for i, p in enumerate(SLOW_FIRST) if path.startswith(p)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: the order within a file (and its fixtures' reuse) stays


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist load`` (the default of ``-n``), except that an ``ONE_WORKER`` file is one unit."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path in ONE_WORKER else nodeid

    return Scheduling(config, log)


# Under CI a skip is a failure: a test that skips because a tool or the bundled data is
# missing would otherwise hide that CI never ran it (.ci/run installs what the tests need).
def _fail_skips_in_ci(report: pytest.CollectReport | pytest.TestReport) -> None:
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true ({reason}): CI must install what this needs"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    _fail_skips_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    outcome = yield
    _fail_skips_in_ci(outcome.get_result())
