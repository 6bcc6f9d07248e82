"""Malformed input, fed to the CLI as a user runs it (a process per case).

Every case must end with exit code 2, exactly one line on stderr that names the problem
and where it is (file, line, key or option), no traceback anywhere, and nothing written:
the case's whole folder (its config, data, any run directory it starts from) hashes the
same before and after, and an output directory that did not exist still does not.

Each case is a fork of one interpreter that has imported torch and transformers once
(``tests/forked_cli.py``: its own process, argv, cwd, env and stdin, ``polytask.cli.main``
run fresh as ``__main__``); the cases run concurrently, and a tiny run is trained once
per session and copied into each case that needs one. Only the selected cases run
(``-k truncated`` runs the truncated ones).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import forked_cli
from tests.conftest import base_config, regression_rows, sentiment_rows, tagging_rows, write_jsonl

SRC = Path(__file__).resolve().parents[1] / "src"
TIMEOUT = 240  # seconds per subprocess; a case that starts serving would otherwise hang
MAKERS = {"sent": sentiment_rows, "tags": tagging_rows, "reg": regression_rows}
SPLITS = ("train", "validation", "test")


def polytask(
    *args: str, cwd: Path, cache: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``polytask ARGS`` in a fresh interpreter, importing this worktree's ``src``."""
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "POLYTASK_CACHE": str(cache)}
    # a fork of an interpreter that has imported torch once (see tests/forked_cli.py)
    return forked_cli.run(list(args), cwd=cwd, env=env, stdin=stdin, timeout=TIMEOUT)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> sha256 of the bytes (or 'dir')."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def set_key(data: Any, dotted: str, value: Any) -> None:
    """``tasks.0.data.train`` -> data['tasks'][0]['data']['train'] = value."""
    *parents, last = dotted.split(".")
    for part in parents:
        data = data[int(part)] if isinstance(data, list) else data[part]
    if isinstance(data, list):
        data[int(last)] = value
    else:
        data[last] = value


def good_config(encoder: Path, data: Path) -> dict[str, Any]:
    """The config of the session's trained run: three steps, the best model after step 2
    and a checkpoint at step 2 to resume from. Every config case edits a copy of it."""
    files = {t: {s: data / t / f"{s}.jsonl" for s in SPLITS} for t in MAKERS}
    return base_config(encoder, files, max_steps=3, eval_every=2, checkpoint_every=2, batch_size=4)


@dataclass
class Inputs:
    """The good inputs every case starts from: tiny encoder, data, and the trained run."""

    encoder: Path
    data: Path
    cache: Path
    run: Future[Path]


class Workspace:
    """One case's folder: its own copies of the inputs it breaks."""

    def __init__(self, root: Path, inputs: Inputs) -> None:
        self.root, self.inputs = root, inputs
        self.out = root / "out"  # where train writes; must not exist afterwards
        shutil.copytree(inputs.data, root / "data")

    def data(self, task: str, split: str) -> Path:
        return self.root / "data" / task / f"{split}.jsonl"

    def good(self) -> dict[str, Any]:
        return good_config(self.inputs.encoder, self.root / "data")

    def config(self, edits: dict[str, Any] | None = None, name: str = "run.yaml") -> str:
        """The good config with ``{dotted.key: value}`` edits, written to ``name``."""
        data = self.good()
        for key, value in (edits or {}).items():
            set_key(data, key, value)
        return self.write(name, yaml.safe_dump(data, sort_keys=False))

    def write(self, name: str, content: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, "utf-8")
        return str(path)

    def train(self, *args: str) -> list[str]:
        return ["train", *args, "-o", str(self.out), "--quiet"]

    def run(self) -> Path:
        """A private copy of the session's trained run (waits for the training)."""
        target = self.root / "run"
        shutil.copytree(self.inputs.run.result(), target)
        return target

    def interrupted_run(self) -> Path:
        """A copy of the trained run as a crash after its step-2 checkpoint leaves it (no
        final_metrics.json): what --resume continues (a finished run has nothing to do)."""
        run = self.run()
        (run / "final_metrics.json").unlink()
        return run

    def rows(self, task: str, split: str) -> list[dict[str, Any]]:
        lines = self.data(task, split).read_text("utf-8").splitlines()
        return [json.loads(line) for line in lines]

    def write_rows(self, path: Path, rows: list[dict[str, Any]]) -> None:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to ``keep`` of its size, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def edit_json(path: Path, edit: Callable[[Any], None]) -> None:
    data = json.loads(path.read_text("utf-8"))
    edit(data)
    path.write_text(json.dumps(data, indent=2), "utf-8")


@dataclass(frozen=True)
class Case:
    """A malformed input: ``make`` breaks the workspace and returns the CLI arguments;
    the one error line must contain every string of ``expect``."""

    id: str
    make: Callable[[Workspace], list[str]]
    expect: tuple[str, ...]
    stdin: str | None = None


CASES: list[Case] = []


def case(id: str, *expect: str, stdin: str | None = None) -> Callable[[Any], Any]:
    def register(make: Callable[[Workspace], list[str]]) -> Callable[[Workspace], list[str]]:
        CASES.append(Case(id, make, expect, stdin))
        return make

    return register


def config_case(id: str, edits: dict[str, Any], *expect: str) -> None:
    """A config that breaks by editing keys of the good one."""
    CASES.append(Case(id, lambda ws: ws.train(ws.config(edits)), expect))


# ---------------------------------------------------------------- config files


@case("config-not-found", "config file not found", "nope.yaml")
def _(ws: Workspace) -> list[str]:
    return ws.train(str(ws.root / "nope.yaml"))


@case("config-yaml-syntax-error", "bad.yaml: line 3 is not valid YAML", "cannot start any token")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.write("bad.yaml", "seed: 7\ntrain:\n\tlr: 1e-3\n"))


@case("config-yaml-is-a-list", "list.yaml", "top level must be a mapping")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.write("list.yaml", "- seed: 7\n- tasks: []\n"))


@case("config-empty-file", "empty.yaml", "top level must be a mapping")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.write("empty.yaml", ""))


@case("config-not-utf8", "latin1.yaml", "cannot read config")
def _(ws: Workspace) -> list[str]:
    text = yaml.safe_dump(ws.good()).replace("seed: 7", "seed: 7  # café")
    return ws.train(ws.write("latin1.yaml", text.encode("latin-1")))


@case("config-path-with-brackets", "config file not found", "run[v2].yaml")
def _(ws: Workspace) -> list[str]:
    return ws.train(str(ws.root / "run[v2].yaml"))


config_case(
    "config-unknown-key",
    {"train.max_stepz": 3},
    "run.yaml",
    "train: unknown key 'max_stepz' (did you mean 'max_steps'?)",
)
config_case(
    "config-negative-batch-size",
    {"train.batch_size": -4},
    "train.batch_size",
    "greater than 0",
)
config_case("config-max-steps-zero", {"train.max_steps": 0}, "train.max_steps", "greater than 0")
config_case(
    "config-duplicate-task-names",
    {"tasks.2.name": "sent"},
    "run.yaml",
    "task names must be unique; repeated: sent",
)
config_case(
    "config-wrong-type-is-not-coerced",
    {"train.lr": True},  # accepted as lr 1.0 before
    "train.lr",
    "Input should be a valid number, got true",
)
config_case(
    "config-unknown-task-type",
    {"tasks.0.type": "clasification"},
    "tasks.sent:",  # named by the task's name, not its index
    "unknown task type 'clasification' (did you mean 'classification'?)",
)
config_case(
    "config-unknown-task-type-second-task",
    {"tasks.1.type": "tagingg"},  # issue 22 item 8: was named 'tasks.1'
    "run.yaml: tasks.tags: unknown task type 'tagingg' (did you mean 'tagging'?)",
)
config_case(
    "config-unknown-architecture",
    {"architecture": {"name": "hardd"}},
    "architecture",
    "'hardd'",
    "did you mean 'hard'?",
)
config_case(
    "config-unknown-weighting",
    {"weighting": {"name": "uncertainity"}},
    "weighting",
    "'uncertainity'",
    "did you mean 'uncertainty'?",
)
config_case(
    "config-unknown-aggregator",
    {"aggregator": {"name": "pcgard"}},
    "aggregator",
    "'pcgard'",
    "did you mean 'pcgrad'?",
)

config_case(  # a constructor's own check (needs torch): after load, before anything is built
    "config-static-weights-per-task",
    {"weighting": {"name": "static", "weights": [1.0, 2.0]}},
    "run.yaml: weighting: static",
    "expected 3 values, got 2",
)


@case("encoder-missing-tokenizer", "encoder.name", "no tokenizer files")
def _(ws: Workspace) -> list[str]:
    encoder = ws.root / "encoder"
    shutil.copytree(ws.inputs.encoder, encoder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (encoder / name).unlink(missing_ok=True)
    return ws.train(ws.config({"encoder.name": str(encoder)}))


@case("encoder-truncated-weights", "encoder.name", "safetensors weights are unreadable")
def _(ws: Workspace) -> list[str]:
    encoder = ws.root / "encoder"
    shutil.copytree(ws.inputs.encoder, encoder)
    truncate(encoder / "model.safetensors")
    return ws.train(ws.config({"encoder.name": str(encoder)}))


# ---------------------------------------------------------------- command-line arguments


@case("override-not-key-value", "override '=3' is not of the form key=value")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.config(), "=3")


@case("override-unknown-task", "override 'tasks.nope.weight'", "no list item 'nope'")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.config(), "tasks.nope.weight=2")


@case("override-negative-temperature", "sampler.alpha", "greater than 0")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.config(), "sampler.name=temperature", "sampler.alpha=-1")


@case("aggregator-needs-every-task", "aggregator 'pcgrad'", "tasks_per_step is 1 of 3")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.config(), "aggregator.name=pcgrad")


@case("weighting-needs-every-task", "weighting 'dwa'", "weighs every task's loss together")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.config(), "weighting.name=dwa")


@case("aggregator-without-shared-parameters", "'soft': it trains no shared parameters", "upgrad")
def _(ws: Workspace) -> list[str]:
    every = ("sampler.tasks_per_step=all", "sampler.name=null")
    return ws.train(ws.config(), "architecture.name=soft", *every, "aggregator.name=upgrad")


@case("resolve-every-fixed-coefficients", "resolve_every is 3", "'sum' has fixed coefficients")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.config(), "aggregator.name=sum", "aggregator.resolve_every=3")


@case("resolve-every-grad-norms", "resolve_every is 3", "'gradnorm' needs the per-task gradient")
def _(ws: Workspace) -> list[str]:
    every = ("sampler.tasks_per_step=all", "sampler.name=null", "weighting.name=gradnorm")
    return ws.train(ws.config(), *every, "aggregator.name=upgrad", "aggregator.resolve_every=3")


@case("sampler-without-effect", "sampler.name: no effect with every task in every step")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.config(), "sampler.tasks_per_step=all")


@case("sampler-foreign-argument", "'round_robin' has no hyperparameter 'alpha'")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.config(), "sampler.alpha=0.5")


@case("monitor-that-cannot-fire", "train.monitor_every", "no step holds every task")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.config(), "train.monitor_every=5")


@case("override-into-a-value", "override 'train.lr.value'", "'lr' is not a section")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.config(), "train.lr.value=1")


@case("two-configs", "unexpected argument", "b.yaml")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.config(name="a.yaml"), ws.config(name="b.yaml"))


@case("unknown-command", "No such command 'trian'")
def _(ws: Workspace) -> list[str]:
    return ["trian", ws.config()]


@case("unknown-option", "No such option", "--max-steps")
def _(ws: Workspace) -> list[str]:
    return ws.train(ws.config(), "--max-steps", "3")


@case("eval-bad-split", "--split must be train, validation or test", "'dev'")
def _(ws: Workspace) -> list[str]:
    return ["eval", str(ws.root), "--split", "dev"]


@case("serve-port-out-of-range", "--port must be between 0", "70000")
def _(ws: Workspace) -> list[str]:
    return ["serve", str(ws.root), "--port", "70000"]


@case("serve-port-not-a-number", "Invalid value for '--port'", "valid integer")
def _(ws: Workspace) -> list[str]:
    return ["serve", str(ws.root), "--port", "abc"]


@case("serve-threads-zero", "--threads must be >= 1, got 0")
def _(ws: Workspace) -> list[str]:
    return ["serve", str(ws.root), "--port", "0", "--threads", "0"]


@case("serve-max-inputs-zero", "--max-inputs must be >= 1")
def _(ws: Workspace) -> list[str]:
    return ["serve", str(ws.root), "--port", "0", "--max-inputs", "0"]


@case("predict-batch-size-zero", "'--batch-size'", "greater than or equal to 1")
def _(ws: Workspace) -> list[str]:
    return ["predict", str(ws.root), "-t", "sent", "-i", "-", "--batch-size", "0"]


@case("predict-without-task", "Missing option", "--task")
def _(ws: Workspace) -> list[str]:
    return ["predict", str(ws.root), "-i", "-"]


# ---------------------------------------------------------------- data files


def data_case(id: str, *expect: str) -> Callable[[Any], Any]:
    """A data case: ``make`` breaks the workspace's data; train on the good config."""

    def register(make: Callable[[Workspace], Any]) -> Callable[[Workspace], Any]:
        def args(ws: Workspace) -> list[str]:
            edits = make(ws) or {}
            return ws.train(ws.config(edits))

        CASES.append(Case(id, args, expect))
        return make

    return register


@data_case("data-file-missing", "data file not found", "data/sent/nope.jsonl")
def _(ws: Workspace) -> dict[str, Any]:
    return {"tasks.0.data.train": str(ws.root / "data" / "sent" / "nope.jsonl")}


@data_case("data-file-empty", "sent/train.jsonl", "the train split is empty")
def _(ws: Workspace) -> None:
    ws.data("sent", "train").write_text("")


@data_case("data-jsonl-line-not-json", "sent/train.jsonl, line 3", "not valid JSON")
def _(ws: Workspace) -> None:
    lines = ws.data("sent", "train").read_text().splitlines()
    lines[2] = lines[2][:-5]
    ws.data("sent", "train").write_text("\n".join(lines) + "\n")


@data_case("data-jsonl-line-not-object", "reg/validation.jsonl, line 2", "JSON object")
def _(ws: Workspace) -> None:
    lines = ws.data("reg", "validation").read_text().splitlines()
    lines[1] = '["very good", 13.0]'
    ws.data("reg", "validation").write_text("\n".join(lines) + "\n")


@data_case("data-missing-label-column", "reg/train.jsonl", "missing column 'rating'")
def _(ws: Workspace) -> dict[str, Any]:
    return {"tasks.2.columns.label": "rating"}


@data_case(
    "data-label-not-in-label-set",
    "sent/validation.jsonl, line 5, column 'label'",
    "label 'maybe' is not in the label set",
)
def _(ws: Workspace) -> None:
    rows = ws.rows("sent", "validation")
    rows[4]["label"] = "maybe"
    ws.write_rows(ws.data("sent", "validation"), rows)


@data_case("data-csv-latin1", "train.csv", "cannot decode as utf-8", "data.encoding")
def _(ws: Workspace) -> dict[str, Any]:
    rows = ws.rows("sent", "train")
    rows[3]["text"] += " café"
    csv = "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows)
    return {"tasks.0.data.train": ws.write("data/sent/train.csv", csv.encode("latin-1"))}


@data_case("data-jsonl-utf16", "tags/train.jsonl", "cannot decode as utf-8", "data.encoding")
def _(ws: Workspace) -> None:
    path = ws.data("tags", "train")
    path.write_bytes(path.read_text("utf-8").encode("utf-16"))


def set_cell(ws: Workspace, task: str, split: str, row: int, column: str, value: Any) -> None:
    """Replace one cell of a good data file (``row`` counts from 0)."""
    rows = ws.rows(task, split)
    rows[row][column] = value
    ws.write_rows(ws.data(task, split), rows)


@data_case("data-label-is-a-list", "sent/train.jsonl, line 3, column 'label'", "a list")
def _(ws: Workspace) -> None:
    set_cell(ws, "sent", "train", 2, "label", ["pos"])


@data_case("data-label-is-a-dict", "sent/validation.jsonl, line 2, column 'label'", "a dict")
def _(ws: Workspace) -> None:
    set_cell(ws, "sent", "validation", 1, "label", {"name": "pos"})


@data_case("data-label-is-a-bool", "sent/train.jsonl, line 4, column 'label'", "a bool true")
def _(ws: Workspace) -> None:
    set_cell(ws, "sent", "train", 3, "label", True)


@data_case(
    "data-label-number-among-strings",
    "sent/train.jsonl, line 5, column 'label'",
    "is an integer id but line 1 has a string",
)
def _(ws: Workspace) -> None:
    set_cell(ws, "sent", "train", 4, "label", 1)


@data_case(
    "data-label-whitespace-variant",
    "sent/train.jsonl, line 6, column 'label'",
    "differs from",
    "only in whitespace",
)
def _(ws: Workspace) -> None:
    rows = ws.rows("sent", "train")
    first = rows[0]["label"]
    later = next(i for i, r in enumerate(rows) if i > 4 and r["label"] == first)
    rows[later]["label"] = first + " "
    ws.write_rows(ws.data("sent", "train"), rows)
    assert later == 5, later  # the expected line above


@data_case(
    "data-tokens-string-among-lists",
    "tags/train.jsonl, line 2, column 'tokens'",
    "words are a string here but a list on line 1",
)
def _(ws: Workspace) -> None:
    rows = ws.rows("tags", "train")
    set_cell(ws, "tags", "train", 1, "tokens", " ".join(rows[1]["tokens"]))


@data_case(
    "data-validation-labels-all-null",
    "reg/validation.jsonl",
    "column 'score' has no label in any row",
)
def _(ws: Workspace) -> None:
    rows = ws.rows("reg", "validation")
    ws.write_rows(ws.data("reg", "validation"), [{**r, "score": None} for r in rows])


@data_case(
    "data-regression-bool-column",
    "reg/train.jsonl, line 1, column 'score'",
    "regression target must be a number, got a bool",
)
def _(ws: Workspace) -> None:
    rows = ws.rows("reg", "train")
    ws.write_rows(ws.data("reg", "train"), [{**r, "score": i % 2 == 0} for i, r in enumerate(rows)])


# ---------------------------------------------------------------- run directories


@case("eval-truncated-weights", "run/model/model.safetensors", "cannot load weights")
def _(ws: Workspace) -> list[str]:
    run = ws.run()
    truncate(run / "model" / "model.safetensors")
    return ["eval", str(run)]


@case("predict-truncated-weights", "run/model/model.safetensors", "cannot load weights")
def _(ws: Workspace) -> list[str]:
    run = ws.run()
    truncate(run / "model" / "model.safetensors", 0.9)
    return ["predict", str(run), "-t", "sent", "-i", ws.write("in.txt", "good film\n")]


@case("serve-truncated-weights", "run/model/model.safetensors", "cannot load weights")
def _(ws: Workspace) -> list[str]:
    run = ws.run()
    truncate(run / "model" / "model.safetensors", 0.99)
    return ["serve", str(run), "--port", "0"]


@case("resume-truncated-checkpoint-weights", "run/checkpoint/model.safetensors")
def _(ws: Workspace) -> list[str]:
    run = ws.interrupted_run()
    truncate(run / "checkpoint" / "model.safetensors")
    return ["train", "-o", str(run), "--resume", "--quiet"]


@case("resume-truncated-best-model", "run/model/model.safetensors", "cannot load weights")
def _(ws: Workspace) -> list[str]:
    run = ws.interrupted_run()
    truncate(run / "model" / "model.safetensors")
    return ["train", "-o", str(run), "--resume", "--quiet"]


@case("eval-missing-tokenizer-files", "run/model/tokenizer", "cannot load the tokenizer")
def _(ws: Workspace) -> list[str]:
    run = ws.run()
    for file in (run / "model" / "tokenizer").iterdir():
        file.unlink()
    return ["eval", str(run)]


@case("eval-encoder-config-wrong-type", "run/model/encoder", "hidden_size")
def _(ws: Workspace) -> list[str]:
    run = ws.run()
    edit_json(run / "model" / "encoder" / "config.json", lambda c: c.update(hidden_size="big"))
    return ["eval", str(run)]


@case("eval-saved-config-wrong-type", "run/model/polytask.json", "train.eval_batch_size")
def _(ws: Workspace) -> list[str]:
    run = ws.run()
    edit_json(
        run / "model" / "polytask.json",
        lambda m: m["config"]["train"].update(eval_batch_size="many"),
    )
    return ["eval", str(run)]


@case("resume-config-yaml-wrong-type", "run/config.yaml", "train.max_steps", "integer")
def _(ws: Workspace) -> list[str]:
    run = ws.run()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["train"]["max_steps"] = "ten"
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    return ["train", "-o", str(run), "--resume", "--quiet"]


@case("resume-trainer-state-missing-key", "run/checkpoint", "trainer_state.json", "optimizer")
def _(ws: Workspace) -> list[str]:
    run = ws.interrupted_run()
    edit_json(run / "checkpoint" / "trainer_state.json", lambda s: s.pop("optimizer"))
    return ["train", "-o", str(run), "--resume", "--quiet"]


@case(
    "resume-without-checkpoint",
    "--resume:",
    "/run has no complete checkpoint to resume from (the run stopped before its first one); "
    "pass --overwrite to start it again",
)
def _(ws: Workspace) -> list[str]:
    run = ws.interrupted_run()
    shutil.rmtree(run / "checkpoint")
    return ["train", "-o", str(run), "--resume", "--quiet"]


@case("resume-with-other-tasks", "run/checkpoint/model.safetensors", "do not match the model")
def _(ws: Workspace) -> list[str]:
    run = ws.interrupted_run()
    return ["train", ws.config({"tasks.0.name": "mood"}), "-o", str(run), "--resume", "--quiet"]


@case("eval-not-a-run-dir", "/data: no trained model")
def _(ws: Workspace) -> list[str]:
    return ["eval", str(ws.root / "data")]


@case(
    "serve-compare-folder",
    "/cmp: no trained model (model/polytask.json) in this directory, but 3 run folders below",
    ": multi/seed-1, multi/seed-2, single-sent/seed-1; give one of them, e.g. ",
    "/cmp/multi/seed-1",
)
def _(ws: Workspace) -> list[str]:
    run = ws.run()
    for seed in ("multi/seed-1", "multi/seed-2", "single-sent/seed-1"):  # compare's layout
        shutil.copytree(run, ws.root / "cmp" / seed)
    (ws.root / "cmp" / "compare.json").write_text("{}")
    return ["serve", str(ws.root / "cmp"), "--port", "0"]


@case("predict-unknown-task", "unknown task 'sentt' (did you mean 'sent'?)", stdin="good film\n")
def _(ws: Workspace) -> list[str]:
    return ["predict", str(ws.run()), "-t", "sentt", "-i", "-"]


@case(
    "predict-input-line-not-json",
    "in.jsonl, line 2, column 10: not valid JSON (unterminated string starting here)",
)
def _(ws: Workspace) -> list[str]:
    text = '{"text": "good film"}\n{"text": "bad plot\n'
    return ["predict", str(ws.run()), "-t", "sent", "-i", ws.write("in.jsonl", text)]


@case(
    "train-data-unterminated-string",
    "sent/train.jsonl, line 2, column 10: not valid JSON (unterminated string starting here)",
)
def _(ws: Workspace) -> list[str]:
    ws.data("sent", "train").write_text('{"text": "good", "label": "pos"}\n{"text": "bad\n')
    return ws.train(ws.config())


@case("train-output-is-a-file", "/out is not a directory")
def _(ws: Workspace) -> list[str]:
    ws.write("out", "a file where the run directory should go\n")
    return ws.train(ws.config())


@case(
    "train-overwrite-with-bad-data",
    "sent/train.jsonl, line 2, column 2: not valid JSON (expecting property name enclosed in",
)
def _(ws: Workspace) -> list[str]:
    ws.data("sent", "train").write_text('{"text": "good", "label": "pos"}\n{oops\n')
    return ["train", ws.config(), "-o", str(ws.run()), "--overwrite", "--quiet"]


# ---------------------------------------------------------------- controls

#: the same commands on unbroken inputs succeed (so each case fails for its own reason)
CONTROLS = [
    Case(
        "predict",
        lambda ws: ["predict", str(ws.run()), "-t", "tags", "-i", ws.write("in.txt", "bob\n")],
        ('"input": "bob", "tags": [',),
    ),
    Case(
        "resume",
        lambda ws: ["train", "-o", str(ws.interrupted_run()), "--resume", "--quiet"],
        ("of 3",),
    ),
    Case(  # a finished run: nothing to do, exit 0
        "resume-finished",
        lambda ws: ["train", "-o", str(ws.run()), "--resume", "--quiet"],
        ("the run is complete (trained to train.max_steps=3",),
    ),
]


# ---------------------------------------------------------------- running the cases


@dataclass
class Outcome:
    result: subprocess.CompletedProcess[str] | None
    args: list[str]
    before: dict[str, str]
    after: dict[str, str]
    out_existed: bool
    out_exists: bool
    error: str | None = None  # the case could not run (timeout)

    def shown(self) -> str:
        if self.result is None:
            return f"args {self.args}: {self.error}"
        return f"args {self.args}\nstdout:\n{self.result.stdout}\nstderr:\n{self.result.stderr}"


def _run_case(c: Case, root: Path, inputs: Inputs) -> Outcome:
    ws = Workspace(root, inputs)
    args = c.make(ws)
    out_existed = ws.out.exists()
    before = tree_digest(root)
    try:
        result = polytask(*args, cwd=root, cache=inputs.cache, stdin=c.stdin)
        error = None
    except subprocess.TimeoutExpired:
        result, error = None, f"no exit within {TIMEOUT} s"
    return Outcome(result, args, before, tree_digest(root), out_existed, ws.out.exists(), error)


@pytest.fixture(scope="session")
def pool() -> Iterator[ThreadPoolExecutor]:
    # a case is one CPU-bound interpreter start; one more than the cores keeps them busy
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) + 1) as executor:
        yield executor


@pytest.fixture(scope="session")
def inputs(
    tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory, pool: ThreadPoolExecutor
) -> Inputs:
    """Good data, and the tiny run trained on it once (started now, in the background)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    for task, make in MAKERS.items():
        for i, split in enumerate(SPLITS):
            write_jsonl(root / "data" / task / f"{split}.jsonl", make(16, i))
    cache = root / "cache"

    def train() -> Path:
        work = root / "trained"
        work.mkdir()
        # the control of every config and data case: their good config trains
        config = good_config(tiny_encoder, root / "data")
        (work / "run.yaml").write_text(yaml.safe_dump(config))
        result = polytask("train", "run.yaml", "-o", "run", "--quiet", cwd=work, cache=cache)
        assert result.returncode == 0, result.stderr
        saved = json.loads((work / "run" / "checkpoint" / "trainer_state.json").read_text())
        assert saved["state"]["step"] == 2 and saved["state"]["best"] is not None, saved
        assert (work / "run" / "model" / "model.safetensors").is_file()
        return work / "run"

    return Inputs(tiny_encoder, root / "data", cache, pool.submit(train))


@pytest.fixture(scope="session")
def outcomes(
    request: pytest.FixtureRequest,
    inputs: Inputs,
    pool: ThreadPoolExecutor,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Future[Outcome]]:
    """Every selected case and control, started at once on the pool after the training.

    In the order written: the cases that need the trained run come last, so that the
    others run while it trains.
    """
    selected = set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        selected |= {params[k].id for k in ("bad", "good") if k in params}
    root = tmp_path_factory.mktemp("cases")
    return {
        c.id: pool.submit(_run_case, c, root / c.id, inputs)
        for c in [*CASES, *CONTROLS]
        if c.id in selected
    }


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in [*CASES, *CONTROLS]]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 30


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input(bad: Case, outcomes: dict[str, Future[Outcome]]) -> None:
    outcome = outcomes[bad.id].result()
    shown = outcome.shown()
    assert outcome.result is not None, shown
    result = outcome.result
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert result.returncode == 2, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown
    assert lines[0].startswith("error: "), shown
    for expected in bad.expect:
        assert expected in lines[0], f"{expected!r} not in the error line\n{shown}"
    assert outcome.after == outcome.before, f"files changed\n{shown}"
    assert outcome.out_exists == outcome.out_existed, f"output written\n{shown}"


@pytest.mark.parametrize("good", CONTROLS, ids=[c.id for c in CONTROLS])
def test_control(good: Case, outcomes: dict[str, Future[Outcome]]) -> None:
    outcome = outcomes[good.id].result()
    assert outcome.result is not None and outcome.result.returncode == 0, outcome.shown()
    for expected in good.expect:
        assert expected in outcome.result.stdout, outcome.shown()
