"""``cgc``, ``ple``, ``dselect_k`` and ``cross_stitch`` through the config and the CLI: 20 steps
of the bundled three-task demo (tiny random encoder, bundled data subsets) with pcgrad lower
the loss on the one-backward segment split, write the run's report (routing, or the stitches),
and the saved run reloads to the same predictions; a bad argument fails at load or is one CLI
line; ``polytask eval`` shows the routing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import polytask.train
from polytask.config.run import config_from_dict
from polytask.data.batching import collate
from polytask.errors import ConfigError
from polytask.predict.predictor import Predictor
from tests.conftest import base_config
from tests.unit import test_every_method_trains as every
from tests.unit.test_cli import assert_user_error, write_config
from tests.unit.test_cli import polytask as cli

# bundled data prepared, demo tables parsed once; tiny models: one torch thread
pytestmark = [*every.pytestmark, pytest.mark.usefixtures("one_thread")]

ARCHS: dict[str, dict[str, Any]] = {
    "cgc": {"shared_experts": 2, "task_experts": 1},
    "ple": {"levels": 2},
    "dselect_k": {"experts": 3, "k": 2, "entropy": 0.01},
    "cross_stitch": {},
}
STEPS = 20
TASKS = ("sentiment", "movies", "ner")


def report_ok(run: Path, name: str) -> None:
    report = json.loads((run / "report.json").read_text())
    if name == "cross_stitch":
        stitches = report["cross_stitch"]
        assert stitches["columns"] == list(TASKS) and len(stitches["stitches"]) == 1
        alpha = stitches["stitches"]["layer 0 → 1"]
        assert alpha != [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]]  # trained
        return
    routing = report["routing"]
    assert routing["architecture"] == name and set(routing["tasks"]) == set(TASKS)
    for entry in routing["tasks"].values():
        assert entry["count"] > 0
        assert len(entry["shares"]) == (2 if name == "ple" else 1)
        for shares in entry["shares"].values():
            assert len(shares) == routing["experts"]
            assert sum(shares) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", list(ARCHS))
def test_trains_through_the_config_and_writes_its_report(
    tmp_path: Path, tiny_encoder: Path, monkeypatch: Any, name: str
) -> None:
    """The summed loss falls over 20 steps (its last quarter below its first), and so does
    the token task's: the tiny random encoder barely moves the two sentiment tasks off ln 3
    in 20 steps, while the tagging loss falls by far more than their noise."""
    built: list[Any] = []
    real_build = polytask.train.build
    monkeypatch.setattr(polytask.train, "build", lambda c: built.append(real_build(c)) or built[0])
    own = [f"architecture.{k}={v}" for k, v in ARCHS[name].items()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = every.demo_run(
            tmp_path,
            tiny_encoder,
            f"architecture.name={name}",
            *own,
            f"train.max_steps={STEPS}",
            f"train.eval_every={STEPS}",
            "sampler.tasks_per_step=all",
            "aggregator.name=pcgrad",
        )
    assert not [w for w in caught if "per-task passes" in str(w.message)]  # no fallback
    assert len(records) == STEPS and {r["grad_method"] for r in records} == {"segments"}
    quarter = STEPS // 4
    for losses in ([sum(r["loss"].values()) for r in records], [r["loss"]["ner"] for r in records]):
        assert sum(losses[-quarter:]) < sum(losses[:quarter]), losses
    if name == "dselect_k":
        terms = [r["regularization"] for r in records]
        assert all(set(t) == {"gate_entropy", "gate_reachability"} for t in terms)
        assert all(t["gate_reachability"] >= 3 * 2 for t in terms)  # its floor: k per task
    else:
        assert all("regularization" not in r for r in records)
    out = tmp_path / "run"
    report_ok(out, name)
    # the saved run rebuilds the same model: same predictions as the one in memory
    setup = built[0]
    memory, saved = setup.model.eval(), Predictor(out).model
    assert type(saved) is type(memory) and saved.describe() == memory.describe()
    pad = int(setup.tokenizer.pad_token_id or 0)
    with torch.no_grad():
        for task, data in setup.data.items():
            batch = collate([(setup.specs[task], data.splits["test"][:8])], pad)
            args = (batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.segments)
            torch.testing.assert_close(memory(*args)[task], saved(*args)[task], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({"name": "cgc", "shared_expert": 2}, "'cgc' has no hyperparameter 'shared_expert' (did"),
        ({"name": "dselect_k", "k": "two"}, "architecture.k: Input should be a valid integer"),
        ({"name": "ple", "levels": 3.5}, "architecture.levels: Input should be a valid integer"),
    ],
)
def test_bad_values_fail_at_load(
    tiny_encoder: Path, task_files: Any, arch: dict[str, Any], message: str
) -> None:
    data = {**base_config(tiny_encoder, task_files), "architecture": arch}
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert any(message in line for line in err.value.lines), err.value.lines


def test_a_bad_argument_is_one_cli_line(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    data = base_config(tiny_encoder, task_files, max_steps=2, eval_every=2)
    data["architecture"] = {"name": "dselect_k", "experts": 4, "k": 5}
    result = cli("train", str(write_config(tmp_path, data)), "-o", str(tmp_path / "run"))
    assert_user_error(result, "architecture: dselect_k: k must be in 1..experts (4), got 5")
    assert not (tmp_path / "run").exists()


def test_eval_shows_the_cgc_routing(tmp_path: Path, tiny_encoder: Path, task_files: Any) -> None:
    data = base_config(tiny_encoder, task_files, max_steps=2, eval_every=2)
    data["architecture"] = {"name": "cgc", "shared_experts": 2, "task_experts": 1}
    run = tmp_path / "run"
    result = cli("train", str(write_config(tmp_path, data)), "-o", str(run), "--quiet")
    assert result.returncode == 0, result.stderr
    result = cli("eval", str(run), "--split", "validation")
    assert result.returncode == 0, result.stderr
    assert "routing on validation (cgc: mean gate weight per expert" in result.stdout
    rows = [
        line for line in result.stdout.splitlines() if line.startswith("│") and " gate " in line
    ]
    assert len(rows) == 3  # one per task
    for row in rows:
        shares = [float(v) for v in row.replace("│", " ").split()[-3:]]
        assert abs(sum(shares) - 1.0) < 2e-3, row  # printed with 3 decimals
