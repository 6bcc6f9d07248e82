"""Experiment trackers (``train.report_to``): what TensorBoard's event files and MLflow's file
store hold, read back with their own readers, against ``metrics.jsonl`` and
``final_metrics.json``; a resumed run keeps logging to the same tracker run; a tracker whose
package is missing is refused at load in one line; no ``report_to``, no tracker output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from polytask.config.run import config_from_dict
from polytask.errors import ConfigError
from polytask.train import train
from polytask.training.runlog import read_records
from polytask.training.tracking import hyperparameters, record_scalars
from tests.conftest import base_config, write_task_files

pytestmark = pytest.mark.usefixtures("one_thread")
TASKS = ["sent", "tags", "reg"]


def _config(encoder: Path, files: Any, **train_changes: Any) -> dict[str, Any]:
    raw = base_config(encoder, files, max_steps=4, eval_every=2, checkpoint_every=2)
    raw["train"].update(train_changes)
    raw["sampler"] = {"tasks_per_step": "all"}  # every task each step: weights, c, cosines
    raw["weighting"] = {"name": "uncertainty"}
    raw["aggregator"] = {"name": "mgda"}
    return raw


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> dict[str, Path]:
    """One tracked run (to step 4, then resumed from its step-2 checkpoint) and one untracked
    run of the same config."""
    root = tmp_path_factory.mktemp("tracking")
    files = write_task_files(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        tracked = config_from_dict(
            _config(tiny_encoder, files, report_to=["tensorboard", "mlflow"])
        )
        train(tracked, root / "tracked", show_progress=False)
        first = read_records(root / "tracked" / "metrics.jsonl")
        (root / "tracked" / "final_metrics.json").unlink()  # stopped after its checkpoint
        train(tracked, root / "tracked", resume=True, show_progress=False)
        (root / "first.json").write_text(json.dumps(first))
        train(config_from_dict(_config(tiny_encoder, files)), root / "plain", show_progress=False)
    return {"tracked": root / "tracked", "plain": root / "plain", "first": root / "first.json"}


def _expected(run: Path) -> dict[tuple[str, int], float]:
    """The values a tracker must hold, written out from the run's own files by name."""
    out: dict[tuple[str, int], float] = {}
    for r in read_records(run / "metrics.jsonl"):
        step = r["step"]
        if r["event"] == "eval":
            for task, metrics in r["metrics"].items():
                out.update({(f"validation/{task}/{m}", step): v for m, v in metrics.items()})
            continue
        for key in ("loss", "weights", "combine", "grad_norm"):
            out.update({(f"train/{key}/{t}", step): v for t, v in r[key].items()})
        out[("train/lr", step)] = r["lr"]
        for i, j in ((0, 1), (0, 2), (1, 2)):
            out[(f"train/cosine/{TASKS[i]} vs {TASKS[j]}", step)] = r["cosine"][i][j]
    final = json.loads((run / "final_metrics.json").read_text())
    last = max(r["step"] for r in read_records(run / "metrics.jsonl"))
    for task, metrics in final["tasks"].items():
        out.update({(f"test/{task}/{m}", last): v for m, v in metrics["test"].items()})
    return out


def test_tensorboard_event_files_hold_every_logged_value(runs: dict[str, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs["tracked"] / "tracking" / "polytask"))
    events.Reload()
    expected = _expected(runs["tracked"])
    tags = set(events.Tags()["scalars"])
    assert {tag for tag, _ in expected} <= tags
    for tag in {tag for tag, _ in expected}:
        held = [(e.step, e.value) for e in events.Scalars(tag)]
        steps = [s for s, _ in held]
        assert len(steps) == len(set(steps)), f"{tag}: a step twice after the resume: {steps}"
        want = sorted((s, v) for (t, s), v in expected.items() if t == tag)
        assert [s for s, _ in held] == [s for s, _ in want], tag
        for (_, got), (_, value) in zip(held, want, strict=True):
            assert got == pytest.approx(value, rel=1e-6, abs=1e-7), tag  # stored as float32
    assert len(events.Scalars("train/loss/sent")) == 4  # steps 1-2, then 3-4 resumed


def test_tensorboard_holds_the_resolved_config_as_hyperparameters(runs: dict[str, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    sessions = []
    for folder in sorted((runs["tracked"] / "tracking" / "polytask").iterdir()):
        if not folder.is_dir():
            continue
        events = EventAccumulator(str(folder))
        events.Reload()
        try:
            content = events.PluginTagToContent("hparams")
        except KeyError:  # the scalars' own folder
            continue
        for blob in content.values():
            data = plugin_data_pb2.HParamsPluginData.FromString(blob)
            if data.HasField("session_start_info"):
                sessions.append(data.session_start_info.hparams)
    assert len(sessions) == 2  # the first session and the resumed one
    saved = hyperparameters(config_from_dict(_config(Path("x"), _files())).model_dump(mode="json"))
    hparams = sessions[0]
    assert hparams["train.lr"].number_value == pytest.approx(1e-3)
    assert hparams["tasks.tags.type"].string_value == "tagging"
    assert hparams["aggregator.name"].string_value == "mgda"
    assert hparams["train.patience"].string_value == "None"
    assert hparams["train.report_to"].string_value == '["tensorboard", "mlflow"]'
    assert len(hparams) == len(saved)


def _files() -> dict[str, dict[str, Path]]:
    splits = ("train", "validation", "test")
    return {t: {s: Path(f"/nowhere/{t}/{s}.jsonl") for s in splits} for t in TASKS}


def test_mlflow_file_store_holds_the_run_once_with_every_value(runs: dict[str, Path]) -> None:
    from mlflow.tracking import MlflowClient

    store = runs["tracked"] / "tracking" / "mlruns"
    client = MlflowClient(tracking_uri=f"file:{store}")
    (experiment,) = client.search_experiments(filter_string="name = 'polytask'")
    (run,) = client.search_runs([experiment.experiment_id])  # the resume reopened it
    ids = json.loads((runs["tracked"] / "tracking" / "runs.json").read_text())
    assert run.info.run_id == ids["mlflow"] and run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.001"
    assert run.data.params["tasks.sent.type"] == "classification"
    assert run.info.run_name == "tracked"
    for (tag, step), value in _expected(runs["tracked"]).items():
        history = [m for m in client.get_metric_history(run.info.run_id, tag) if m.step == step]
        assert history, (tag, step)
        # the resumed steps are logged again: the later value is the run's
        latest = max(history, key=lambda m: m.timestamp)
        assert latest.value == pytest.approx(value, rel=1e-9), (tag, step)


def test_report_to_changes_the_output_only(runs: dict[str, Path]) -> None:
    assert (runs["tracked"] / "tracking").is_dir()
    assert not (runs["plain"] / "tracking").exists()
    # the trackers do not touch the training: the same losses at every step
    first = json.loads(runs["first"].read_text())
    for records in (first, read_records(runs["tracked"] / "metrics.jsonl")):
        plain = read_records(runs["plain"] / "metrics.jsonl")
        train = [(r["step"], r["loss"]) for r in records if r["event"] == "train"]
        assert train == [(r["step"], r["loss"]) for r in plain if r["event"] == "train"]


def _wandb_records(path: Path) -> list[Any]:
    """The protobuf records of an offline W&B run file (a LevelDB-style log: a 7-byte
    header, 32 KiB blocks, each chunk a 4-byte CRC, 2-byte length, 1-byte type)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, chunk, out = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's zero-padded tail
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            out.append(wandb_internal_pb2.Record.FromString(chunk))
            chunk = b""
    return out


def test_wandb_offline_holds_the_logged_values_and_resumes_its_run(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = config_from_dict(_config(tiny_encoder, task_files, report_to=["wandb"]))
    out = tmp_path / "run"
    train(config, out, show_progress=False)
    (out / "final_metrics.json").unlink()
    train(config, out, resume=True, show_progress=False)  # from the step-2 checkpoint
    run_id = json.loads((out / "tracking" / "runs.json").read_text())["wandb"]
    files = sorted((out / "tracking" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2  # the first session and the resumed one, one W&B run id
    logged: dict[tuple[str, int], float] = {}
    config_keys: set[str] = set()
    for path in files:  # the resumed session's values override the replayed steps
        for record in _wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                items = record.history.item
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
                logged.update({(k, int(row["_step"])): v for k, v in row.items()})
            elif kind == "config":
                config_keys |= {i.key or "/".join(i.nested_key) for i in record.config.update}
    for (tag, step), value in _expected(out).items():
        assert logged[(tag, step)] == pytest.approx(value, rel=1e-9), (tag, step)
    assert {"train.lr", "tasks.tags.type", "aggregator.name"} <= config_keys


def test_scalars_are_named_after_the_record() -> None:
    record = {
        "event": "train",
        "step": 3,
        "tasks": ["a", "b"],
        "loss": {"a": 0.5, "b": "nan"},
        "lr": 0.1,
        "combine": {"a": 0.25, "b": 0.75},
        "cosine": [[1.0, -0.5], [-0.5, 1.0]],
        "grad_method": "segments",
        "skipped_steps": 1,
    }
    assert record_scalars(record, ["a", "b"]) == {
        "train/loss/a": 0.5,  # a non-finite loss is left out
        "train/lr": 0.1,
        "train/combine/a": 0.25,
        "train/combine/b": 0.75,
        "train/cosine/a vs b": -0.5,
        "train/skipped_steps": 1.0,
    }
    evaluated = {"event": "eval", "step": 4, "split": "validation", "primary": {"a": 0.9}}
    evaluated["metrics"] = {"a": {"accuracy": 0.9, "loss": 0.3}}
    assert record_scalars(evaluated, ["a"]) == {
        "validation/a/accuracy": 0.9,
        "validation/a/loss": 0.3,
    }


def test_hyperparameters_are_flat_values_tensorboard_accepts() -> None:
    flat = hyperparameters(
        {"seed": 1, "tasks": [{"name": "ner", "labels": ["O", "B"], "weight": None}], "x": {}}
    )
    assert flat == {"seed": 1, "tasks.ner.name": "ner", "tasks.ner.labels": '["O", "B"]'} | {
        "tasks.ner.weight": "None"
    }


@pytest.mark.parametrize(
    ("tracker", "hint"),
    [
        ("tensorboard", "pip install 'polytask[tensorboard]'"),
        ("mlflow", "pip install 'polytask[mlflow]'"),
        ("wandb", "pip install 'polytask[wandb]'"),
    ],
)
def test_a_missing_tracker_package_is_one_line_at_load(
    monkeypatch: pytest.MonkeyPatch, tracker: str, hint: str
) -> None:
    raw = _config(Path("enc"), _files(), report_to=[tracker])
    config_from_dict(raw)  # installed here
    monkeypatch.setitem(sys.modules, tracker, None)  # import tensorboard: ImportError
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw, "run.yaml")
    (line,) = str(err.value).splitlines()
    assert line == f"run.yaml: train.report_to: '{tracker}' needs the {tracker} package: {hint}"


# the CLI in a fresh interpreter where the package cannot be imported
MISSING = """
import sys
sys.modules["mlflow"] = None
from polytask.cli.main import main
sys.argv = ["polytask", *sys.argv[1:]]
main()
"""


def test_the_cli_refuses_a_missing_tracker_in_one_line(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, _files(), report_to=["mlflow"])))
    done = subprocess.run(
        [sys.executable, "-c", MISSING, "train", str(path), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'polytask[mlflow]'" in lines[0], done.stderr
    assert not (tmp_path / "out").exists()
