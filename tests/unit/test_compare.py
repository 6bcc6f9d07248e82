"""``compare``: the summary maths on hand-made numbers (Δ%, Δm% with lower-is-better metrics,
statuses, verdict with one and several seeds, critical tasks), the baseline configs, one run
end to end through the CLI (tiny encoder, matched budget) and bad inputs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from polytask.config.run import RunConfig, config_from_dict, load_config
from polytask.errors import ConfigError, PolytaskError
from polytask.experiments.compare import baseline_config, compare, matched_eval_every
from polytask.experiments.summary import (
    margin_sigmas,
    markdown,
    relative_change,
    seed_stats,
    status,
    summarize,
)
from polytask.tasks import task_type
from tests.conftest import base_config

PRIMARY = {"classification": "accuracy", "regression": "pearson", "tagging": "f1"}


def final(metrics: dict[str, dict[str, float]], types: dict[str, str], **extra: Any) -> Any:
    """A ``final_metrics`` dict holding only what the summary reads (test split)."""
    return {
        "tasks": {t: {"validation": m, "test": m} for t, m in metrics.items()},
        "primary_metric": {t: PRIMARY[types[t]] for t in metrics},
        "params": {"total": extra.get("params", 1000)},
        "train_seconds": extra.get("seconds", 10.0),
    }


TYPES = {"a": "classification", "r": "regression", "sent": "classification", "reg": "regression"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread


def test_task_types_declare_lower_is_better_metrics() -> None:
    assert not task_type("regression").higher_is_better("rmse")
    assert task_type("regression").higher_is_better("pearson")
    assert not task_type("classification").higher_is_better("loss")
    assert task_type("classification").higher_is_better("macro_f1")
    assert not task_type("lm").higher_is_better("perplexity")
    assert task_type("tagging").higher_is_better("f1")


def test_relative_change_and_seed_stats() -> None:
    assert relative_change(0.8, 0.75, True) == pytest.approx(100 * 0.05 / 0.75)
    assert relative_change(2.0, 2.5, False) == pytest.approx(20.0)  # lower rmse: better
    assert relative_change(-0.2, -0.4, True) == pytest.approx(50.0)  # |single| in the divisor
    assert relative_change(0.3, 0.0, True) is None
    assert seed_stats([0.7]) == {"mean": 0.7, "std": None, "values": [0.7]}
    two = seed_stats([0.7, 0.9])
    assert two["mean"] == pytest.approx(0.8) and two["std"] == pytest.approx(
        math.sqrt(0.02), abs=1e-6
    )


def test_delta_m_with_lower_is_better_metrics() -> None:
    multi = final(
        {
            "a": {"accuracy": 0.8, "macro_f1": 0.6, "loss": 0.5},
            "r": {"pearson": 0.5, "spearman": 0.0, "rmse": 2.0, "loss": 0.8},
        },
        TYPES,
        params=1500,
        seconds=30.0,
    )
    single = {
        "a": [final({"a": {"accuracy": 0.75, "macro_f1": 0.6, "loss": 0.4}}, TYPES, params=900)],
        "r": [final({"r": {"pearson": 0.4, "spearman": 0.0, "rmse": 2.5, "loss": 1.0}}, TYPES)],
    }
    summary = summarize([multi], single, TYPES, ["a", "r"])
    a, r = summary["tasks"]["a"], summary["tasks"]["r"]
    # a: accuracy +6.667, macro_f1 0, loss 0.4 -> 0.5 is -25 (lower is better)
    assert a["metric_deltas_pct"] == {"accuracy": 6.6667, "macro_f1": 0.0, "loss": -25.0}
    assert a["delta_pct"] == pytest.approx(6.6667)
    # Δ_t averages the task metrics; the evaluation loss is listed but left out
    assert a["delta_m_pct"] == pytest.approx((100 * 0.05 / 0.75 + 0) / 2, abs=1e-4)
    # r: pearson +25, rmse +20 (lower is better), loss +20 (left out); spearman's baseline
    # is 0: left out, not infinite
    assert r["metric_deltas_pct"]["spearman"] is None and r["metric_deltas_pct"]["loss"] == 20
    assert r["delta_m_pct"] == pytest.approx((25 + 20) / 2, abs=1e-4)
    assert summary["delta_m_pct"] == pytest.approx(
        (a["delta_m_pct"] + r["delta_m_pct"]) / 2, abs=1e-4
    )
    assert a["status"] == r["status"] == "better" and a["split"] == "test"
    assert summary["params"] == {
        "multi": 1500,
        "single": {"a": 900, "r": 1000},
        "single_total": 1900,
    }
    assert summary["seconds"]["multi"] == 30.0 and summary["seconds"]["single_total"] == 20.0
    assert summary["verdict"]["deploy_multitask"] is True
    assert summary["verdict"]["hurt"] == []


def _pair(multi: list[float], single: list[float], critical: list[str]) -> Any:
    """Task ``a`` at the given accuracies per seed; task ``r`` always better with multi-task."""
    multis = [final({"a": {"accuracy": m}, "r": {"pearson": 0.9}}, TYPES) for m in multi]
    return summarize(
        multis,
        {
            "a": [final({"a": {"accuracy": s}}, TYPES) for s in single],
            "r": [final({"r": {"pearson": 0.5}}, TYPES) for _ in single],
        },
        TYPES,
        critical,
    )


def test_verdict_with_one_seed() -> None:
    worse = _pair([0.74], [0.75], ["a", "r"])
    assert worse["tasks"]["a"]["status"] == "worse"
    assert worse["verdict"]["deploy_multitask"] is False and worse["verdict"]["hurt"] == ["a"]
    text = worse["verdict"]["text"]
    assert text.startswith("keep the single-task models: multi-task hurts a (accuracy -1.33%)")
    assert "1 seed, so no noise estimate" in text
    same = _pair([0.75], [0.75], ["a", "r"])
    assert same["tasks"]["a"]["status"] == "matches"  # with one seed, matches means >=
    assert same["verdict"]["deploy_multitask"] is True
    assert same["verdict"]["text"].startswith("deploy multi-task")
    # a task that is not critical may get worse: the verdict names it but still deploys
    other = _pair([0.74], [0.75], ["r"])
    assert other["verdict"]["deploy_multitask"] is True and other["verdict"]["hurt"] == []
    assert "worse on non-critical a (accuracy -1.33%)" in other["verdict"]["text"]
    budget = {"text": "x", "multi": {"steps": [4]}, "single": {"a": {"steps": [2]}}}
    table = markdown({**other, "seeds": [3], "budget": budget, "auxiliary": ["mlm"]})
    assert "| a | accuracy (test) | 0.7500 | 0.7400 | -1.33 | worse |" in table
    assert (
        "steps per seed: multi-task 4; a 2" in table
        and "(in the multi-task run only): mlm" in table
    )


def test_verdict_within_seed_noise() -> None:
    # diff -0.02, noise sqrt(0.0141² + 0.0283²) = 0.0316: matches
    noisy = _pair([0.74, 0.76], [0.75, 0.79], ["a"])
    assert noisy["tasks"]["a"]["multi"]["std"] == pytest.approx(0.014142, abs=1e-6)
    assert noisy["tasks"]["a"]["status"] == "matches"
    assert noisy["verdict"]["deploy_multitask"] is True
    assert "2 seeds; 'matches' = within sqrt(std_multi² + std_single²)" in noisy["verdict"]["text"]
    # diff -0.05, noise 0.02: worse
    assert _pair([0.74, 0.76], [0.79, 0.81], ["a"])["verdict"]["hurt"] == ["a"]
    # diff +0.05, noise 0.02: better
    assert _pair([0.79, 0.81], [0.74, 0.76], ["a"])["tasks"]["a"]["status"] == "better"
    low = {"mean": 2.0, "std": 0.1}
    assert status(low, {"mean": 2.5, "std": 0.1}, higher_is_better=False) == "better"


def _critical(*flags: bool | None) -> RunConfig:
    tasks = []
    for i, flag in enumerate(flags):
        entry = {"name": f"t{i}", "type": "classification", "data": {"bundled": "x"}}
        if flag is not None:
            entry["critical"] = flag
        tasks.append(entry)
    tasks.append({"name": "mlm", "type": "lm", "data": {"from_tasks": ["t0"]}})
    return config_from_dict({"tasks": tasks})


def test_critical_tasks_resolved_at_load() -> None:
    def critical(config: RunConfig) -> list[str]:
        return [t.name for t in config.tasks if t.critical]

    assert critical(_critical(None, None, None)) == ["t0", "t1", "t2"]  # auxiliary never
    assert critical(_critical(None, True, None)) == ["t1"]  # any true: exactly those
    assert critical(_critical(False, None, None)) == ["t1", "t2"]
    assert critical(_critical(False, False, False)) == []
    with pytest.raises(ConfigError, match=r"tasks\.mlm: an auxiliary task cannot be critical"):
        aux = {"name": "mlm", "type": "lm", "data": {"from_tasks": ["t0"]}, "critical": True}
        config_from_dict({"tasks": [_critical(None).model_dump()["tasks"][0], aux]})


def test_baseline_config(tiny_encoder: Path, task_files: Any) -> None:
    data = base_config(tiny_encoder, task_files, head_lr=3e-3)
    data["architecture"] = {"name": "soft", "head_hidden": 16, "head_dropout": 0.2}
    data["weighting"] = {"name": "uncertainty"}
    data["tasks"][1]["weight"] = 2.0
    data["tasks"][1]["max_length"] = 24
    multi = config_from_dict(data)
    single = baseline_config(multi, "tags", 8, 5, 2)
    assert [t.name for t in single.tasks] == ["tags"] and single.primary == "tags"
    assert single.seed == 8 and single.train.max_steps == 5 and single.train.eval_every == 2
    arch = single.architecture
    assert (arch.name, arch.head_hidden, arch.head_dropout) == ("hard", 16, 0.2)
    assert (single.weighting.name, single.aggregator.name) == ("equal", "sum")
    task = single.tasks[0]
    assert task.weight == 1.0 and task.max_length == 24 and task.critical is True
    assert task.data == multi.task("tags").data and task.columns == multi.task("tags").columns
    assert single.encoder == multi.encoder
    assert (single.train.lr, single.train.head_lr, single.train.batch_size) == (1e-3, 3e-3, 8)
    assert matched_eval_every(200, 100, 300) == 67
    assert matched_eval_every(3, 1, 12) == 1


def _two_tasks(tmp_path: Path, encoder: Path, files: Any, **train: Any) -> Path:
    data = base_config(encoder, files, **{"max_steps": 6, "eval_every": 3, **train})
    data["tasks"] = [t for t in data["tasks"] if t["name"] in ("sent", "reg")]
    data["tasks"][0]["critical"] = True
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """``polytask ARGS`` in this process (no interpreter start-up): exit code, stdout, stderr."""
    from polytask.cli.main import main

    monkeypatch.setattr(sys, "argv", ["polytask", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_compare_end_to_end(
    tmp_path: Path,
    tiny_encoder: Path,
    task_files: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _two_tasks(tmp_path, tiny_encoder, task_files)
    out = tmp_path / "cmp"
    (out / "single-old").mkdir(parents=True)  # an earlier comparison's run: --overwrite drops it
    (out / "check.json").write_text("{}")  # not compare's: kept
    # temperature sampling, one task per step: the tasks get different update counts per seed
    args = ("compare", str(config), "sampler.name=temperature", "-o", str(out), "--seeds", "2")
    code, stdout, stderr = cli(monkeypatch, capsys, *args, "--overwrite", "--quiet")
    assert code == 0, stderr
    summary = json.loads((out / "compare.json").read_text())
    assert summary["config"] == str(config) and summary["seeds"] == [7, 8]
    assert summary["runs"] == {
        "multi": ["multi/seed-7", "multi/seed-8"],
        "single": {t: [f"single-{t}/seed-7", f"single-{t}/seed-8"] for t in ("sent", "reg")},
    }
    assert sorted(p.name for p in out.iterdir()) == [
        "check.json", "compare.json", "compare.md", "multi", "single-reg", "single-sent"
    ]  # fmt: skip
    runs = [
        *summary["runs"]["multi"],
        *(r for rs in summary["runs"]["single"].values() for r in rs),
    ]
    for run in runs:  # a finished run keeps its best model, not its resumable checkpoint
        assert (out / run / "model").is_dir() and (out / run / "final_metrics.json").is_file()
        assert not (out / run / "checkpoint").exists(), run
    budget = summary["budget"]
    assert budget["mode"] == "matched"
    multis = [
        json.loads((out / run / "final_metrics.json").read_text())
        for run in summary["runs"]["multi"]
    ]
    assert [m["steps"] for m in multis] == [6, 6]
    assert {(m["updates"]["sent"], m["updates"]["reg"]) for m in multis} != {(3, 3)}
    for task in ("sent", "reg"):
        updates = [m["updates"][task] for m in multis]
        assert budget["multi"]["updates"][task] == updates
        assert budget["single"][task]["max_steps"] == updates  # the matched budget
        assert budget["single"][task]["eval_every"] == [
            matched_eval_every(3, u, 6) for u in updates
        ]
        row = summary["tasks"][task]
        for i, run in enumerate(summary["runs"]["single"][task]):
            single = json.loads((out / run / "final_metrics.json").read_text())
            assert single["steps"] == updates[i]
            assert single["examples_seen"][task] == multis[i]["examples_seen"][task]
            saved = load_config(out / run / "config.yaml")
            assert [t.name for t in saved.tasks] == [task] and saved.seed == 7 + i
            assert row["single"]["values"][i] == single["tasks"][task]["test"][row["metric"]]
            assert row["multi"]["values"][i] == multis[i]["tasks"][task]["test"][row["metric"]]
        assert row["multi"]["std"] is not None and row["single"]["std"] is not None
        assert summary["params"]["single"][task] == single["params"]["total"]
    assert summary["tasks"]["sent"]["critical"] and not summary["tasks"]["reg"]["critical"]
    assert summary["params"]["multi"] == multis[0]["params"]["total"]
    assert set(summary["verdict"]) == {"deploy_multitask", "text", "hurt"}
    assert "2 seeds" in summary["verdict"]["text"]
    table = (out / "compare.md").read_text()
    assert table == markdown(summary)
    assert "| sent (critical) | accuracy (test) |" in table and "| reg | pearson (test) |" in table
    assert summary["verdict"]["text"] in stdout and "Δm%" in stdout


def fake_train(runs: list[RunConfig], updates: dict[str, int]) -> Any:
    """A stand-in for ``train.train`` that records each config and returns made-up metrics."""

    def train(config: RunConfig, output: Path, **_: Any) -> dict[str, Any]:
        runs.append(config)
        output.mkdir(parents=True)
        names = [t.name for t in config.tasks]
        steps = config.train.max_steps
        done = {t: updates[t] for t in names} if len(names) > 1 else {names[0]: steps}
        return {
            **final({t: {"accuracy": 0.5, "pearson": 0.5} for t in names}, TYPES),
            "steps": steps,
            "updates": done,
            "examples_seen": {t: n * config.train.batch_size for t, n in done.items()},
        }

    return train


def test_compare_budget_steps(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(_two_tasks(tmp_path, tiny_encoder, task_files, max_steps=40))
    runs: list[RunConfig] = []
    monkeypatch.setattr("polytask.train.train", fake_train(runs, {"sent": 30, "reg": 10}))
    summary = compare(config, tmp_path / "cmp", budget="steps", show_progress=False)
    shapes = [(len(r.tasks), r.train.max_steps, r.train.eval_every) for r in runs]
    assert shapes == [(2, 40, 3), (1, 40, 3), (1, 40, 3)]
    assert summary["budget"]["mode"] == "steps" and "max_steps 40" in summary["budget"]["text"]
    # the same fake runs under the matched budget: 30 and 10 steps, eval_every 3 * 30/40, 3 * 10/40
    runs.clear()
    compare(config, tmp_path / "cmp2", show_progress=False)
    assert [(r.train.max_steps, r.train.eval_every) for r in runs[1:]] == [(30, 2), (10, 1)]
    # a task the multi-task run never updated: nothing to match
    monkeypatch.setattr("polytask.train.train", fake_train(runs, {"sent": 40, "reg": 0}))
    with pytest.raises(PolytaskError, match="task 'reg' got no updates in the multi-task run"):
        compare(config, tmp_path / "cmp3", show_progress=False)
    assert not (tmp_path / "cmp3" / "compare.json").exists()


def test_compare_bad_inputs(tmp_path: Path, tiny_encoder: Path, task_files: Any) -> None:
    config = load_config(_two_tasks(tmp_path, tiny_encoder, task_files))
    out = tmp_path / "cmp"
    for kwargs, message in [
        ({"seeds": 0}, "--seeds must be >= 1, not 0"),
        ({"budget": "epochs"}, "--budget must be one of matched, steps, not 'epochs'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            compare(config, out, show_progress=False, **kwargs)
    one = config.model_dump(mode="json")
    one["tasks"] = one["tasks"][:1]
    one["sampler"] = {"tasks_per_step": 1}  # one task: no sampler to name
    with pytest.raises(ConfigError, match="single task 'sent'"):
        compare(config_from_dict(one), out, show_progress=False)
    none = config.model_dump(mode="json")
    for task in none["tasks"]:
        task["critical"] = False
    with pytest.raises(ConfigError, match="mark at least one critical: true"):
        compare(config_from_dict(none), out, show_progress=False)
    assert not out.exists()


def test_cli_refuses_a_non_empty_directory(
    tmp_path: Path,
    tiny_encoder: Path,
    task_files: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _two_tasks(tmp_path, tiny_encoder, task_files)
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, stderr = cli(monkeypatch, capsys, "compare", str(config), "-o", str(out))
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, stderr
    assert "already exists and is not empty; pass --resume to reuse its finished runs" in lines[0]
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # nothing trained
    code, _, stderr = cli(
        monkeypatch, capsys, "compare", str(config), "-o", str(out), "--seeds", "0"
    )
    assert code == 2 and "--seeds must be >= 1, not 0" in stderr


def spy_on_training(monkeypatch: pytest.MonkeyPatch, out: Path) -> list[str]:
    """Let ``polytask.train.train`` run, recording each run folder (relative to ``out``)."""
    import polytask.train

    trained: list[str] = []
    real = polytask.train.train

    def spy(cfg: RunConfig, output: Path, **kwargs: Any) -> dict[str, Any]:
        trained.append(str(Path(output).relative_to(out)))
        return real(cfg, output, **kwargs)

    monkeypatch.setattr(polytask.train, "train", spy)
    return trained


def test_resume_reuses_finished_runs_and_trains_the_rest(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupted comparison (a baseline without final_metrics.json) goes on with
    --resume: only that run trains again; a run finished with another config is retrained."""
    config = load_config(_two_tasks(tmp_path, tiny_encoder, task_files))
    out = tmp_path / "cmp"
    first = compare(config, out, show_progress=False)
    (out / "single-reg/seed-7/final_metrics.json").unlink()  # killed before it finished
    trained = spy_on_training(monkeypatch, out)
    lines: list[str] = []
    again = compare(config, out, show_progress=False, resume=True, log=lines.append)
    assert trained == ["single-reg/seed-7"]
    assert sum("reused (finished with this config)" in line for line in lines) == 2
    assert again["tasks"]["sent"] == first["tasks"]["sent"]  # the reused runs' numbers
    assert (out / "single-reg/seed-7/final_metrics.json").is_file()
    # another config (a different lr): every run is trained again, replacing the old ones
    trained.clear()
    other = config.model_copy(update={"train": config.train.model_copy(update={"lr": 5e-4})})
    compare(other, out, show_progress=False, resume=True)
    assert sorted(trained) == ["multi/seed-7", "single-reg/seed-7", "single-sent/seed-7"]
    with pytest.raises(PolytaskError, match="--overwrite and --resume exclude each other"):
        compare(config, out, show_progress=False, resume=True, overwrite=True)
    with pytest.raises(PolytaskError, match="pass --resume to reuse its finished runs"):
        compare(config, out, show_progress=False)


def test_margin_in_noise_units_is_oriented() -> None:
    """(multi − single) / sqrt(std_m² + std_s²), + when multi-task is better; None without
    a std (one seed)."""
    multi, single = {"mean": 0.8, "std": 0.03}, {"mean": 0.7, "std": 0.04}
    assert margin_sigmas(multi, single, True) == 2.0
    assert margin_sigmas(multi, single, False) == -2.0  # e.g. an RMSE that grew
    assert margin_sigmas({"mean": 0.8, "std": None}, {"mean": 0.7, "std": None}, True) is None
