"""Task affinity (TAG lookahead): the sign on a conflicting and an identical pair of tasks,
the grouping search, exact parameters after the lookaheads, and the CLI."""

from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from polytask.autograd.engine import PerTaskGradients
from polytask.cli.main import main
from polytask.config.run import config_from_dict
from polytask.data.batching import TaskStream, collate
from polytask.diagnostics.affinity import (
    affinity_run,
    best_grouping,
    check_steps,
    group_score,
    grouping_sizes,
    measure,
    set_partitions,
)
from polytask.errors import ConfigError
from polytask.train import Setup, build, train
from tests.conftest import base_config, sentiment_rows, write_jsonl

PAIR_STEPS = 3
PAIR_ROWS = 32


def binary_rows(n: int, seed: int, negate: bool) -> list[dict[str, Any]]:
    """Sentiment texts labelled pos/neg; ``negate`` swaps every label."""
    rows = []
    for r in sentiment_rows(n, seed):
        positive = (r["label"] == "pos") != negate
        rows.append({"text": r["text"], "label": "pos" if positive else "neg"})
    return rows


def pair_config(tmp_path: Path, encoder: Path, negate: bool) -> dict[str, Any]:
    """Two binary classification tasks on the SAME texts, b's labels the negation of a's (or
    a's own). One batch holds all 32 training rows, so both tasks see the same texts at
    every step and the sign is not at the mercy of which 8 rows each task drew."""
    files: dict[str, dict[str, str]] = {"a": {}, "b": {}}
    for split, n, seed in [("train", PAIR_ROWS, 3), ("validation", 16, 4)]:
        for name, flip in [("a", False), ("b", negate)]:
            path = tmp_path / name / f"{split}.jsonl"
            files[name][split] = str(write_jsonl(path, binary_rows(n, seed, flip)))
    return {
        "seed": 7,
        "encoder": {"name": str(encoder), "max_length": 32},
        "tasks": [{"name": n, "type": "classification", "data": files[n]} for n in ("a", "b")],
        "sampler": {"tasks_per_step": "all"},
        "train": {"batch_size": PAIR_ROWS, "max_steps": PAIR_STEPS, "lr": 1e-3, "patience": None},
    }


def tie_heads(setup: Setup) -> None:
    """b's head becomes a copy of a's, and both are frozen: the two tasks map the encoder's
    output through the same fixed function, so only the shared encoder can serve them."""
    heads = setup.model.heads
    assert isinstance(heads, torch.nn.ModuleDict)
    heads["b"].load_state_dict(heads["a"].state_dict())
    for p in itertools.chain(heads["a"].parameters(), heads["b"].parameters()):
        p.requires_grad_(False)


def pair_affinity(tmp_path: Path, encoder: Path, negate: bool) -> torch.Tensor:
    setup = build(config_from_dict(pair_config(tmp_path, encoder, negate)))
    tie_heads(setup)
    matrix, measured = affinity_run(setup, PAIR_STEPS)
    assert measured == PAIR_STEPS
    return matrix


def test_negated_labels_interfere_both_ways(tmp_path: Path, tiny_encoder: Path) -> None:
    """b's labels are a's negated. The heads must be tied and frozen: with two independent
    trainable heads, b's head simply learns a's weights with the classes swapped (the flip
    costs the head nothing) and the encoder sees two compatible tasks — no conflict at all.
    With one fixed head the encoder must move every text's logits towards a's label for a
    and towards the other label for b, so a step on either raises the other's loss.

    Binary classification rather than negated regression targets: at initialisation the
    frozen head's output is offset from the targets' mean, and reducing that offset is a
    direction both regression tasks share; with skewed targets it can outweigh the
    conflict. Cross-entropy's shared part is (p − ½), small while the logits are near
    equal."""
    z = pair_affinity(tmp_path, tiny_encoder, negate=True)
    assert z[0, 1] < 0 and z[1, 0] < 0
    assert z[0, 0] > 0 and z[1, 1] > 0  # a step on a task's own loss lowers it


def test_identical_tasks_help_both_ways(tmp_path: Path, tiny_encoder: Path) -> None:
    """Same texts in the same batch and one frozen head: a step on either copy is a step on
    both, so all four entries are the same positive number."""
    z = pair_affinity(tmp_path, tiny_encoder, negate=False)
    assert z[0, 1] > 0 and z[1, 0] > 0
    assert torch.allclose(z, z[0, 0].expand(2, 2), rtol=1e-4)


def test_set_partitions_are_every_partition_once() -> None:
    for n, k, stirling in [(4, 2, 7), (5, 3, 25), (6, 1, 1), (6, 6, 1), (7, 4, 350)]:
        found = list(set_partitions(n, k))
        assert len(found) == stirling
        canonical = {tuple(tuple(g) for g in p) for p in found}
        assert len(canonical) == stirling
        for partition in found:
            assert sorted(i for g in partition for i in g) == list(range(n))
            assert all(g for g in partition) and len(partition) == k
    assert list(set_partitions(3, 4)) == []


def test_grouping_finds_the_known_best_partition() -> None:
    """Tasks 0, 2 help each other, so do 1, 3, 4; every cross pair hurts."""
    z = torch.full((5, 5), -0.2)
    for group in ([0, 2], [1, 3, 4]):
        for i, j in itertools.permutations(group, 2):
            z[i, j] = 0.3
    z[4, 1] = 0.1  # asymmetric: 1 receives (0.3 + 0.1) / 2 from 3 and 4
    tasks = ["t0", "t1", "t2", "t3", "t4"]
    two = best_grouping(z, tasks, 2)
    assert two["groups"] == [["t0", "t2"], ["t1", "t3", "t4"]]
    assert two["score"] == pytest.approx(0.3 * 2 + 0.2 + 0.3 + 0.3)
    assert group_score(z, [1, 3, 4]) == pytest.approx(0.2 + 0.3 + 0.3)
    assert group_score(z, [3]) == 0.0
    # one group: everything together, the interference counts
    together = float((z.sum(0) - z.diagonal()).div(4).sum())
    assert best_grouping(z, tasks, 1) == {"groups": [tasks], "score": pytest.approx(together)}
    # three groups: {1, 3, 4} loses its weakest link (4 → 1 gives only 0.1); two ties
    three = best_grouping(z, tasks, 3)
    assert sorted(map(sorted, three["groups"])) in (
        [["t0", "t2"], ["t1", "t3"], ["t4"]],
        [["t0", "t2"], ["t1"], ["t3", "t4"]],
    )
    assert three["score"] == pytest.approx(0.6 + 0.6)


def test_lookahead_leaves_parameters_exact(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    """One measurement leaves every parameter bit-identical and no gradient behind; and a
    run measured at every step ends with exactly the model `polytask train` gives for the
    same config and steps (nothing leaks from the lookaheads into training)."""
    data = base_config(tiny_encoder, task_files, max_steps=3, eval_every=3)
    data["sampler"] = {"tasks_per_step": "all"}
    config = config_from_dict(data)
    setup = build(config)
    model, specs = setup.model, setup.specs
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = [
        (specs[n], TaskStream(setup.data[n].splits["train"], 8, 4, 1, specs[n]).next_rows())
        for n in specs
    ]
    lrs = {id(p): 0.5 for p in model.parameters()}
    z = measure(model, collate(rows, 0), specs, PerTaskGradients(model), lrs)
    assert z.shape == (3, 3) and bool(torch.isfinite(z).all()) and float(z.abs().max()) > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert model.training

    affinity_run(setup, steps=3, every=1)
    train(config, tmp_path / "run", show_progress=False)
    trained = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    mine = model.state_dict()
    assert set(trained) <= set(mine)
    assert all(torch.equal(trained[k], mine[k]) for k in trained)
    assert not all(torch.equal(before[k], mine[k]) for k in trained)  # it did train


def polytask(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI's entry point in this process (a subprocess would import torch again):
    exit code, stdout, stderr."""
    code = 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["polytask", *args])
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_affinity_json(
    tmp_path: Path, tiny_encoder: Path, task_files: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    data = base_config(tiny_encoder, task_files, max_steps=3)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out" / "affinity.json"
    args = ["affinity", str(path), "--steps", "2", "--groups", "2", "--quiet", "-o", str(out)]
    code, stdout, stderr = polytask(capsys, *args)
    assert code == 0, stderr
    assert "task affinity" in stdout and "suggested groupings" in stdout
    summary = json.loads(out.read_text())
    assert summary["tasks"] == ["sent", "tags", "reg"] and summary["steps"] == 2
    assert len(summary["matrix"]) == 3 and all(len(r) == 3 for r in summary["matrix"])
    assert list(summary["groups"]) == ["2"] and len(summary["groups"]["2"]["groups"]) == 2

    bad = tmp_path / "bad.json"
    code, stdout, stderr = polytask(capsys, "affinity", str(path), "--steps", "0", "-o", str(bad))
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in stderr and not bad.exists()
    assert len(lines) == 1 and "--steps must be >= 1, not 0" in lines[0], stderr


def test_bad_arguments() -> None:
    for call, message in [
        (lambda: check_steps(0, 1, 10), "--steps must be >= 1, not 0"),
        (lambda: check_steps(5, 0, 10), "--every must be >= 1, not 0"),
        (lambda: check_steps(11, 1, 10), "--steps 11 is more than train.max_steps 10"),
        (lambda: grouping_sizes(3, 4), "--groups must be between 1 and the 3 tasks, not 4"),
        (lambda: grouping_sizes(3, 0), "--groups must be between 1 and the 3 tasks, not 0"),
        (lambda: grouping_sizes(1, None), "at least 2 tasks"),
        (lambda: grouping_sizes(11, None), "at most 10 tasks, the config has 11"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            call()
    assert grouping_sizes(3, None) == [1, 2, 3]
    assert grouping_sizes(6, None) == [1, 2, 3, 4]
    assert grouping_sizes(6, 5) == [5]
