"""Two-batch aggregators (``needs_two_batches``: MoDo, SDMGrad) in the engine and the loop.

* the engine's two-batch step against plain autograd on two separate forwards: the matrix
  the aggregator sees is ``G₁ G₂ᵀ``, ``.grad`` is ``Σ_t c_t (g₁_t + g₂_t) / 2``, heads get the
  mean of both batches' gradients;
* training draws a second batch every step (counted at the streams) and counts its rows;
  NTKMTL (one batch) draws one;
* the config refuses the settings that cannot supply the second batch's gradients.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from polytask.autograd.engine import PerTaskGradients
from polytask.autograd.two_batch import SecondBatch, two_batch_backward
from polytask.config.manifest import listing
from polytask.config.rule import two_batch_refusal
from polytask.config.run import config_from_dict
from polytask.data import bundled
from polytask.data.batching import TaskStream
from polytask.errors import ConfigError
from tests.unit.test_autograd import losses_of, make_batch, reference, tiny_bert_model
from tests.unit.test_shared_inputs import shared_config, shared_files

pytestmark = pytest.mark.usefixtures("one_thread")
ATOL = 1e-6


def flat(grads: Any, shared: list[Any]) -> Tensor:
    """One task's shared gradients as a float64 vector (zeros where none flows)."""
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for g, p in zip(grads, shared, strict=True)
        ]
    ).double()


@pytest.mark.parametrize("single_input", [False, True])
def test_two_batch_step_equals_autograd_on_two_forwards(single_input: bool) -> None:
    """Exact (dropout off): per-task gradients of each batch by autograd, then the cross-
    Gramian, the written shared gradient and head gradients, and the logged Gramian of the
    applied ``(g₁ + g₂) / 2``. Scales ``w`` multiply the second batch's losses too."""
    T = 3
    model = tiny_bert_model(T).eval()
    first, second = make_batch(T, 1, single_input), make_batch(T, 2, single_input)
    w = {"t0": 1.0, "t1": 0.5, "t2": 2.0}
    scale = torch.tensor([w[f"t{i}"] for i in range(T)])
    refs = []
    for ids, mask, segments, labels in (first, second):
        refs.append(reference(model, losses_of(model, ids, mask, segments, labels), w))
    shared = [p for _, p in model.shared_parameters()]
    G1, G2 = (torch.stack([flat(r[f"t{i}"][0], shared) for i in range(T)]) for r in refs)
    seen: list[Tensor] = []
    c = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)

    def combine(matrix: Tensor) -> Tensor:
        seen.append(matrix)
        return c

    engine = PerTaskGradients(model)
    ids, mask, segments, labels = first
    with engine.capture(segments):
        losses = losses_of(model, ids, mask, segments, labels)
    weighted = {t: losses[t] * w[t] for t in losses}
    ids2, mask2, segments2, labels2 = second
    pair = SecondBatch(segments2, lambda: losses_of(model, ids2, mask2, segments2, labels2))
    stats = two_batch_backward(engine, weighted, pair, scale, combine)
    assert stats is not None and stats.method.endswith("two batches")
    (cross,) = seen
    torch.testing.assert_close(cross, G1 @ G2.T, rtol=1e-5, atol=1e-9)
    assert float((cross - cross.T).abs().max()) > 1e-6  # two batches: not a Gramian
    written = torch.cat(
        [(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in shared]
    ).double()
    torch.testing.assert_close(written, c @ (G1 + G2) / 2, rtol=0, atol=ATOL)
    applied = (G1 + G2) / 2
    torch.testing.assert_close(stats.gramian, applied @ applied.T, rtol=1e-5, atol=1e-10)
    for i in range(T):
        heads = list(model.task_parameters(f"t{i}"))
        for k, (name, p) in enumerate(heads):
            mean = (refs[0][f"t{i}"][1][k] + refs[1][f"t{i}"][1][k]) / 2
            torch.testing.assert_close(p.grad, mean, rtol=0, atol=ATOL, msg=name)


def test_non_finite_second_batch_writes_nothing_shared() -> None:
    model = tiny_bert_model(2).eval()
    engine = PerTaskGradients(model)
    ids, mask, segments, labels = make_batch(2, 1)
    with engine.capture(segments):
        losses = losses_of(model, ids, mask, segments, labels)
    pair = SecondBatch(make_batch(2, 2)[2], lambda: None)
    assert two_batch_backward(engine, losses, pair, torch.ones(2), lambda m: torch.ones(2)) is None
    shared = [p for _, p in model.shared_parameters()]
    assert all(p.grad is None or not p.grad.any() for p in shared)


# --- the training loop ---------------------------------------------------------------------

needs_demo = pytest.mark.skipif(
    not all((bundled.dataset_dir(n) / "manifest.json").is_file() for n in bundled.BUNDLED),
    reason="bundled data not prepared (`polytask data prepare`)",
)


@needs_demo
@pytest.mark.usefixtures("cached_tables")
@pytest.mark.parametrize(("name", "batches"), [("modo", 2), ("sdmgrad", 2), ("ntkmtl", 1)])
def test_training_draws_the_second_batch(
    tmp_path: Path, tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch, name: str, batches: int
) -> None:
    """The bundled demo (three tasks, batch 8), 4 steps: every step draws ``batches``
    batches of each task from its stream, the examples seen count them all, and the log
    names the two-batch step."""
    import tests.unit.test_every_method_trains as every

    drawn: dict[int, int] = {}
    next_draw = TaskStream.next_draw

    def counted(self: TaskStream) -> Any:
        drawn[id(self)] = drawn.get(id(self), 0) + 1
        return next_draw(self)

    monkeypatch.setattr(TaskStream, "next_draw", counted)
    monkeypatch.setattr(every, "STEPS", 4)
    records = every.demo_run(tmp_path, tiny_encoder, f"aggregator.name={name}")
    assert len(records) == 4 and sorted(drawn.values()) == [4 * batches] * 3, drawn
    assert records[-1]["examples"] == {t: 4 * batches * 8 for t in ("sentiment", "movies", "ner")}
    assert records[-1]["updates"] == {t: 4 for t in ("sentiment", "movies", "ner")}
    assert records[-1]["grad_method"].endswith("two batches") == (batches == 2)
    assert all(torch.isfinite(torch.tensor(list(r["loss"].values()))).all() for r in records)


# --- the config ----------------------------------------------------------------------------


def test_shared_rows_two_batch_trains_and_representation_is_refused(
    tiny_encoder: Path, tmp_path: Path
) -> None:
    """Two tasks on the same rows: ``single_input: exact`` trains MoDo on two batches (per-task
    passes); ``representation`` is refused at load with the fix."""
    from polytask.train import train
    from polytask.training.runlog import read_records

    files = shared_files(tmp_path)
    config = config_from_dict(shared_config(tiny_encoder, files, aggregator={"name": "modo"}))
    config.train.single_input = "exact"
    train(config, tmp_path / "run", show_progress=False)
    steps = [r for r in read_records(tmp_path / "run" / "metrics.jsonl") if r["event"] == "train"]
    assert steps[-1]["grad_method"] == "per-task, two batches"
    assert steps[-1]["examples"] == {"sent": 4 * 2 * 8, "size": 4 * 2 * 8}
    raw = shared_config(tiny_encoder, files, aggregator={"name": "sdmgrad"})
    raw["train"]["single_input"] = "representation"
    message = "aggregator 'sdmgrad' solves on the cross-Gramian of two batches' parameter"
    with pytest.raises(ConfigError, match=re.escape(message) + ".*set train.single_input: exact"):
        config_from_dict(raw)


def test_two_batch_rule_reads_the_manifest_flag() -> None:
    entries = listing("aggregators")
    assert entries.get("modo").needs_two_batches and entries.get("sdmgrad").needs_two_batches
    assert not entries.get("ntkmtl").needs_two_batches
    for name in ("modo", "sdmgrad"):
        entry = (name, entries.get(name))
        assert two_batch_refusal(entry, single_input="exact") is None
        assert "single_input is representation" in str(
            two_batch_refusal(entry, single_input="representation")
        )
        assert "aggregator.resolve_every is 5" in str(
            two_batch_refusal(entry, single_input=None, resolve_every=5)
        )
    for name in ("ntkmtl", "mgda"):
        assert two_batch_refusal((name, entries.get(name)), single_input="representation") is None
