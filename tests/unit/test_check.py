"""``polytask check``: cosines against a direct per-task autograd computation, the synthetic
conflicting / identical task pairs and their recommendations, the other four parts, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from polytask.config.run import config_from_dict
from polytask.diagnostics import HEAD_WARMUP
from polytask.diagnostics.check import (
    check_batches,
    check_setup,
    gradient_cosines,
    label,
    run_check,
)
from polytask.errors import ConfigError
from polytask.train import Setup, build, task_losses
from tests.conftest import base_config, regression_rows, write_jsonl
from tests.unit.test_cli import assert_user_error, polytask


def test_label_thresholds() -> None:
    assert label(0.5) == "positive transfer"
    assert label(0.1) == "neutral" and label(-0.1) == "neutral" and label(0.0) == "neutral"
    assert label(-0.11) == "interference"


def direct_cosines(setup: Setup, batch: Any) -> torch.Tensor:
    """One forward, then one ``torch.autograd.grad`` per task over the shared parameters."""
    model, tasks = setup.model, list(setup.specs)
    shared = [p for _, p in model.shared_parameters() if p.requires_grad]
    model.eval()
    losses = task_losses(model, batch, setup.specs)
    flat = []
    for t in tasks:
        grads = torch.autograd.grad(losses[t], shared, retain_graph=True, allow_unused=True)
        flat.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).flatten().double()
                    for g, p in zip(grads, shared, strict=True)
                ]
            )
        )
    g = torch.stack(flat)
    unit = g / g.norm(dim=1, keepdim=True)
    return unit @ unit.T


def test_cosines_equal_a_direct_computation(tiny_encoder: Path, task_files: Any) -> None:
    setup = build(config_from_dict(base_config(tiny_encoder, task_files)))
    batches = check_batches(setup, 3)
    cosines, losses = gradient_cosines(setup, batches)
    assert cosines.shape == (3, 3, 3) and losses.shape == (3, 3)
    for n, batch in enumerate(batches):
        direct = direct_cosines(setup, batch)
        assert torch.allclose(cosines[n], direct, atol=1e-4), (cosines[n], direct)
    off_diagonal = cosines[:, ~torch.eye(3, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.999  # distinct tasks: not trivially parallel
    assert all(p.grad is None for p in setup.model.parameters())  # measuring leaves no grads


def pair_setup(tmp_path: Path, encoder: Path, negate: bool) -> Setup:
    """Two regression tasks on the same texts, the second's targets negated (or equal), with
    identical heads: a negated target cannot be absorbed by a head that equals the first
    task's, so the two tasks pull the encoder in opposite directions."""
    rows = regression_rows(64, 3)
    first = write_jsonl(tmp_path / "a.jsonl", rows)
    second = write_jsonl(
        tmp_path / "b.jsonl",
        [{**r, "score": -r["score"] if negate else r["score"]} for r in rows],
    )
    task = {"type": "regression", "columns": {"label": "score"}}
    config = config_from_dict(
        {
            "seed": 3,
            "encoder": {"name": str(encoder), "max_length": 32},
            "tasks": [
                {"name": "a", **task, "data": {"train": str(first), "validation": str(first)}},
                {"name": "b", **task, "data": {"train": str(second), "validation": str(second)}},
            ],
            "train": {"batch_size": 16},
        }
    )
    setup = build(config)
    heads = setup.model.heads  # type: ignore[union-attr]
    heads["b"].load_state_dict(heads["a"].state_dict())
    return setup


@pytest.mark.parametrize("negate", [True, False])
def test_synthetic_pairs(tmp_path: Path, tiny_encoder: Path, negate: bool) -> None:
    result = check_setup(pair_setup(tmp_path, tiny_encoder, negate), batches=4)
    (pair,) = result["cosine"]["pairs"]
    advice = " | ".join(r["advice"] for r in result["recommendations"])
    if negate:
        # measured (8 batches): mean -0.80, every batch between -1.00 and -0.22
        assert pair["mean"] < -0.5 and pair["max"] < -0.1, pair
        assert pair["label"] == "interference"
        assert "strong interference" in advice and "pcgrad" in advice
    else:
        assert pair["min"] > 0.9999 and pair["label"] == "positive transfer", pair
        assert "hard sharing" in advice and "interference" not in advice
    assert result["datasets"] == {"sizes": {"a": 64, "b": 64}, "imbalance": 1.0}


def test_other_parts(tiny_encoder: Path, task_files: Any) -> None:
    raw = base_config(tiny_encoder, task_files)
    raw["sampler"] = {"name": "proportional", "tasks_per_step": 1}
    rows = [json.loads(line) for line in task_files["tags"]["train"].read_text().splitlines()]
    # three training rows that still carry every tag, so validation tags stay in the label set
    few = [next(r for r in rows if tag in r["tags"]) for tag in ("B-per", "B-loc")]
    few.append(next(r for r in rows if r not in few))
    raw["tasks"][1]["data"]["train"] = str(
        write_jsonl(task_files["tags"]["train"].with_name("few.jsonl"), few)
    )
    result = run_check(config_from_dict(raw), batches=2, source="cfg.yaml")
    assert result["config"] == "cfg.yaml" and result["batches"] == 2
    assert result["datasets"] == {"sizes": {"sent": 96, "tags": 3, "reg": 96}, "imbalance": 32.0}
    sampling = result["sampling"]
    assert sampling["configured"] == "proportional" and sampling["steps"] == 100
    assert set(sampling["plans"]) == {
        "proportional",
        "temperature",
        "uniform",
        "round_robin",
        "annealed",
    }
    for plan in sampling["plans"].values():
        assert sum(plan["counts"].values()) == 100
    # 3 of 195 examples: proportional sampling gives the tagging task ~1.5 % of updates
    assert sampling["plans"]["proportional"]["starved"] == ["tags"]
    assert sampling["plans"]["round_robin"]["counts"] == {"sent": 34, "tags": 33, "reg": 33}
    topics = {r["topic"]: r for r in result["recommendations"]}
    assert "tags" in topics["sampler"]["evidence"] and "round_robin" in topics["sampler"]["advice"]
    scales = result["loss_scale"]
    assert set(scales["tasks"]) == {"sent", "tags", "reg"}
    losses = [v["loss"] for v in scales["tasks"].values()]
    assert scales["ratio"] == pytest.approx(max(losses) / min(losses), rel=1e-3)
    assert scales["tasks"]["sent"]["loss"] == pytest.approx(1.0986, abs=0.3)  # ~ln 3 at init


def test_soft_sharing_is_measured_as_hard(tiny_encoder: Path, task_files: Any) -> None:
    raw = base_config(tiny_encoder, task_files)
    raw["architecture"] = {"name": "soft"}
    result = run_check(config_from_dict(raw), batches=1)
    assert "measured with hard sharing" in result["note"]
    assert len(result["cosine"]["pairs"]) == 3


def test_bad_input(tiny_encoder: Path, task_files: Any) -> None:
    config = config_from_dict(base_config(tiny_encoder, task_files))
    with pytest.raises(ConfigError, match="--batches must be at least 1"):
        run_check(config, batches=0)
    raw = base_config(tiny_encoder, task_files)
    raw["tasks"] = raw["tasks"][:1]
    raw["sampler"] = {"tasks_per_step": 1}  # one task: no sampler to name
    with pytest.raises(ConfigError, match="at least two tasks"):
        run_check(config_from_dict(raw), batches=1)


def test_cli(tmp_path: Path, tiny_encoder: Path, task_files: Any) -> None:
    import yaml

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(base_config(tiny_encoder, task_files)))
    out = tmp_path / "check.json"
    done = polytask("check", str(cfg), "--batches", "2", "-o", str(out))
    assert done.returncode == 0, done.stderr
    for part in (
        "1. gradient cosine",
        "2. raw loss",
        "3. updates per task",
        "4. training",
        "5. recommendations",
    ):
        assert part in done.stdout
    written = json.loads(out.read_text())
    assert written["batches"] == 2 and len(written["cosine"]["pairs"]) == 3
    # the heads are warmed up by default (issue 22 item 3); 0 says what random heads are worth
    assert written["head_warmup"] == HEAD_WARMUP == 40
    assert f"after {HEAD_WARMUP} head-only steps" in done.stdout
    cold = polytask("check", str(cfg), "--batches", "2", "--head-warmup", "0")
    assert cold.returncode == 0, cold.stderr
    assert "readings near 0 are uninformative" in " ".join(cold.stdout.split())
    from typer.testing import CliRunner

    from polytask.cli.main import app

    as_json = CliRunner().invoke(app, ["check", str(cfg), "--batches", "1", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["tasks"] == ["sent", "tags", "reg"]
    bad = CliRunner().invoke(app, ["check", str(cfg), "--batches", "0"])
    assert isinstance(bad.exception, ConfigError) and "--batches" in str(bad.exception)
    assert_user_error(
        polytask("check", str(cfg), "-o", str(tmp_path / "missing" / "c.json")), "does not exist"
    )
    assert not (tmp_path / "missing").exists()


def test_head_warmup(tiny_encoder: Path, task_files: Any) -> None:
    """Warm-up trains the heads only: shared weights untouched, heads moved, init losses kept."""
    setup = build(config_from_dict(base_config(tiny_encoder, task_files)))
    shared = {n: p.detach().clone() for n, p in setup.model.shared_parameters()}
    head = setup.model.heads["sent"]  # type: ignore[index]
    before = [p.detach().clone() for p in head.parameters()]
    cold = check_setup(build(setup.config), batches=2)
    warm = check_setup(setup, batches=2, head_warmup=5)
    assert warm["head_warmup"] == 5 and cold["head_warmup"] == 0
    assert warm["loss_scale"] == cold["loss_scale"]  # measured at initialisation either way
    assert warm["cosine"]["mean"] != cold["cosine"]["mean"]
    for n, p in setup.model.shared_parameters():
        assert torch.equal(p, shared[n]), n
        assert p.requires_grad
    assert any(not torch.equal(a, b) for a, b in zip(before, head.parameters(), strict=True))
