"""Task-conditioned hard sharing: ``task_embedding`` and ``film``.

Identity at initialisation, conditioning applied row by row, exact per-task gradients on the
engine's one-backward path, parameter accounting by hand, save → reload → same predictions,
the bundled demo trains with every sampler and with equal / uncertainty / pcgrad, and a bad
argument is one CLI error line.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel

import polytask.train as training
from polytask import checkpoint as ckpt
from polytask.autograd.engine import PerTaskGradients
from polytask.config.run import ARCHITECTURE_SUPPLIED as SUPPLIED
from polytask.errors import ConfigError
from polytask.models import ARCHITECTURES
from polytask.models.hard import HardSharing
from polytask.predict.predictor import Predictor
from polytask.registry import bind
from polytask.samplers import SAMPLERS
from polytask.segments import Segment
from polytask.tasks import TaskSpec
from polytask.training.params import count_parameters
from tests.conftest import base_config
from tests.unit.test_arch_moe_trains import falls
from tests.unit.test_autograd import VOCAB, assert_matches, make_batch, run_engine
from tests.unit.test_cli import assert_user_error, polytask, write_config
from tests.unit.test_every_method_trains import STEPS, assert_trains, demo_run

# the demo splits parsed once per worker; tiny models on one torch thread
pytestmark = pytest.mark.usefixtures("cached_tables", "one_thread")

ARCHS = ["task_embedding", "film"]
HIDDEN, LAYERS, INTER = 32, 2, 64


def bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=INTER,
        max_position_embeddings=64,
    )
    return BertModel(config)


def specs(n: int) -> list[TaskSpec]:
    return [TaskSpec(name=f"t{i}", type="classification", labels=["a", "b", "c"]) for i in range(n)]


def conditioning(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [
        (n, p) for n, p in model.named_parameters() if n.startswith(("task_embedding.", "film."))
    ]


def perturb(model: nn.Module, seed: int = 0, scale: float = 0.5) -> None:
    """Move the conditioning parameters away from their identity initialisation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in conditioning(model):
            p.add_(scale * torch.randn(p.shape, generator=gen))


def build(name: str, n_tasks: int = 2, seed: int = 0, **kwargs: Any) -> Any:
    model = ARCHITECTURES.get(name)(bert(seed), specs(n_tasks), **kwargs)
    return model


@pytest.mark.parametrize("name", ARCHS)
def test_starts_as_hard_sharing_and_conditions_each_row_by_its_task(name: str) -> None:
    model = build(name, 3).eval()
    hard = HardSharing(bert(1), specs(3)).eval()
    missing, unexpected = hard.load_state_dict(model.state_dict(), strict=False)
    assert not missing and {k.split(".")[0] for k in unexpected} == {name}
    ids, mask, segments, _ = make_batch(3, seed=2)
    with torch.no_grad():
        at_init, plain = model(ids, mask, None, segments), hard(ids, mask, None, segments)
        assert all(torch.equal(at_init[t], plain[t]) for t in plain)  # identity at start
        perturb(model)
        moved = model(ids, mask, None, segments)
        assert all(not torch.allclose(moved[t], plain[t], atol=1e-3) for t in plain)
        # only t1's rows see t1's parameters: changing them leaves t0 and t2 exactly alone
        for n, p in conditioning(model):
            if ".t1" in n:
                p.mul_(2.0).add_(0.3)
        again = model(ids, mask, None, segments)
    assert torch.equal(again["t0"], moved["t0"]) and torch.equal(again["t2"], moved["t2"])
    assert not torch.allclose(again["t1"], moved["t1"], atol=1e-3)


@pytest.mark.parametrize("name", ARCHS)
def test_same_rows_for_several_tasks_run_once_per_task(name: str) -> None:
    """A single-input batch (segments overlap): each task sees the rows under its own
    conditioning, exactly as if the rows came in that task's own segment."""
    model = build(name, 2).eval()
    perturb(model)
    ids, mask, _, _ = make_batch(2, seed=3)
    rows = slice(0, 3)
    with torch.no_grad():
        both = model(ids[rows], mask[rows], None, [Segment("t0", 0, 3), Segment("t1", 0, 3)])
        for task in ("t0", "t1"):
            alone = model(ids[rows], mask[rows], None, [Segment(task, 0, 3)])[task]
            assert torch.allclose(both[task], alone, rtol=0, atol=1e-6)
    assert not torch.allclose(both["t0"], both["t1"], atol=1e-3)  # two different tasks


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("dropout", [False, True])
def test_engine_one_backward_is_exact(name: str, dropout: bool) -> None:
    """pcgrad's engine: ``segments`` path (no fallback, no warning), every shared and task
    gradient equal to plain autograd of ``w_t L_t`` on the same graph."""
    model = build(name, 3, seed=4)
    perturb(model, seed=5)
    model.train(dropout)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine = PerTaskGradients(model)
        c = torch.tensor([0.7, -0.4, 1.3])
        weights = {"t0": 1.0, "t1": 0.5, "t2": 2.0}
        stats, ref = run_engine(model, engine, make_batch(3, seed=6), c, weights)
    assert stats.method == "segments"
    worst = assert_matches(model, stats, ref, c)
    for t in ("t0", "t1", "t2"):  # the conditioning parameters really get gradients
        grads = [p.grad for n, p in model.task_parameters(t) if n.startswith((name, "film"))]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    print(f"{name} dropout={dropout}: max abs diff {worst:.2e}")


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("dropout", [False, True])
def test_engine_single_input_is_exact(name: str, dropout: bool) -> None:
    """Overlapping segments: one encoder forward per task; the engine's hooked single-input
    passes stay exact (no fallback warning)."""
    model = build(name, 2, seed=7)
    perturb(model, seed=8)
    model.train(dropout)
    engine = PerTaskGradients(model)
    c = torch.tensor([1.0, 0.25])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats, ref = run_engine(
            model, engine, make_batch(2, seed=9, single_input=True), c, {"t0": 1.0, "t1": 1.5}
        )
    assert stats.method == "per-task"
    assert_matches(model, stats, ref, c)


@pytest.mark.parametrize("name", ARCHS)
def test_representation_mode_on_shared_rows_falls_back_exactly(name: str) -> None:
    """MGDA-UB style needs ONE encoder output read by every task; one forward per task is
    caught by the engine's graph check: a warning and exact per-task passes, never wrong."""
    model = build(name, 2, seed=12).eval()
    perturb(model, seed=13)
    engine = PerTaskGradients(model, single_input="representation")
    c = torch.tensor([0.5, 1.0])
    batch = make_batch(2, seed=14, single_input=True)
    with pytest.warns(RuntimeWarning, match="other than through the representation"):
        stats, ref = run_engine(model, engine, batch, c, {"t0": 1.0, "t1": 1.0})
    assert stats.method == "per-task"
    assert_matches(model, stats, ref, c)


def test_parameter_accounting_by_hand() -> None:
    T, H, V, P = 3, HIDDEN, VOCAB, 64
    layer = 4 * (H * H + H) + 2 * H + (H * INTER + INTER) + (INTER * H + H) + 2 * H
    encoder = (V + P + 2) * H + 2 * H + LAYERS * layer + (H * H + H)  # + pooler
    head = (H * (H // 2) + H // 2) + ((H // 2) * 3 + 3)
    expected = {
        "task_embedding": {"cond": H},
        "film": {"cond": 2 * H * LAYERS},
        "film_top1": {"cond": 2 * H * 1},
    }
    for key, want in expected.items():
        model = build("film", T, layers=1) if key == "film_top1" else build(key, T)
        counts = count_parameters(model)
        per_task = head + want["cond"]
        assert counts["shared"] == encoder, key
        assert counts["per_task"] == {f"t{i}": per_task for i in range(T)}, key
        assert counts["total"] == counts["trainable"] == encoder + T * per_task, key


def test_film_layers_picks_the_top_layers() -> None:
    model = build("film", 2, layers=1)
    assert sorted(model.film["t0"]) == ["1"]  # the top of two layers
    ids, mask, segments, _ = make_batch(2, seed=10)
    seen: list[int] = []
    for i, layer in enumerate(model.encoder.encoder.layer):
        layer.register_forward_hook(lambda m, a, out, i=i: seen.append(i))
    with torch.no_grad():
        base = model.eval()(ids, mask, None, segments)
        model.film["t0"]["1"].beta.fill_(1.0)
        shifted = model(ids, mask, None, segments)
    assert seen == [0, 1, 0, 1]
    assert not torch.allclose(base["t0"], shifted["t0"], atol=1e-3)
    assert torch.equal(base["t1"], shifted["t1"])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="layers must be between 1 and 2"):
        build("film", 2, layers=3)
    with pytest.raises(ValueError, match="layers must be between 1 and 2"):
        build("film", 2, layers=0)
    with pytest.raises(ConfigError, match=r"architecture\.mode"):
        bind(ARCHITECTURES, "task_embedding", {"mode": "prepend"}, "architecture", SUPPLIED)
    with pytest.raises(ConfigError, match=r"no hyperparameter 'layer'.*did you mean 'layers'"):
        bind(ARCHITECTURES, "film", {"layer": 2}, "architecture", SUPPLIED)


def test_bad_film_layers_is_one_cli_line(
    tmp_path: Path, tiny_encoder: Path, task_files: Any
) -> None:
    data = base_config(tiny_encoder, task_files, max_steps=2, eval_every=2)
    data["architecture"] = {"name": "film", "layers": 5}
    out = tmp_path / "out"
    result = polytask("train", str(write_config(tmp_path, data)), "-o", str(out), "--quiet")
    assert_user_error(result, "architecture: film: layers must be between 1 and 2")
    assert not out.exists()


@pytest.mark.parametrize("name", ARCHS)
def test_save_reload_predicts_identically(name: str, tmp_path: Path, tiny_encoder: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    tasks = [
        TaskSpec(name="sent", type="classification", labels=["neg", "pos"]),
        TaskSpec(name="tags", type="tagging", labels=["B-loc", "B-per", "O"]),
        TaskSpec(name="score", type="regression"),
    ]
    kwargs = {"layers": 1} if name == "film" else {}
    model = ARCHITECTURES.get(name)(AutoModel.from_pretrained(str(tiny_encoder)), tasks, **kwargs)
    model.eval()
    perturb(model, seed=11)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    folder = tmp_path / "model"
    ckpt.save_model_folder(folder, model, tokenizer, {})
    predictor = Predictor(folder)
    assert type(predictor.model) is type(model)
    assert predictor.model.describe() == model.describe()
    worst = compare(model, predictor, tokenizer)
    assert worst < 1e-5, worst
    # and the reloaded conditioning is not the fresh initialisation
    fresh = ARCHITECTURES.get(name)(AutoModel.from_pretrained(str(tiny_encoder)), tasks, **kwargs)
    assert compare(fresh.eval(), predictor, tokenizer) > 1e-3


def compare(model: Any, predictor: Predictor, tokenizer: Any) -> float:
    """Max |logits| difference over every task, each alone and all in one mixed batch."""
    texts = ["the movie was great", "alice visited paris", "a bad plot", "bob likes london"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask, types = enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")
    tasks = list(model.specs)
    layouts = [[Segment(t, 0, len(texts))] for t in tasks]
    n = len(texts) // 2
    layouts.append([Segment(tasks[0], 0, n), Segment(tasks[-1], n, len(texts))])
    worst = 0.0
    with torch.no_grad():
        for segments in layouts:
            a = model(ids, mask, types, segments)
            b = predictor.model(ids, mask, types, segments)
            worst = max(worst, *(float((a[t] - b[t]).abs().max()) for t in a))
    return worst


# --- the bundled three-task demo (tiny encoder) ---


def conditioned_demo(tmp_path: Path, encoder: Path, name: str, *overrides: str) -> Any:
    """A demo run that also hands back the in-memory model (the same object train() trains)."""
    built: list[Any] = []
    original = training.build

    def keep(config: Any) -> Any:
        built.append(original(config))
        return built[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "build", keep)
        records = demo_run(tmp_path, encoder, f"architecture.name={name}", *overrides)
    return records, built[0]


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_demo_trains_with_every_sampler(
    tmp_path: Path, tiny_encoder: Path, name: str, sampler: str
) -> None:
    records, _ = conditioned_demo(
        tmp_path, tiny_encoder, name, f"sampler.name={sampler}", "sampler.tasks_per_step=2"
    )
    # per-task falls are checked with every task in every step (test_demo_trains_and_reloads)
    falls(records, per_task=False)


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize(
    "method", ["weighting.name=equal", "weighting.name=uncertainty", "aggregator.name=pcgrad"]
)
def test_demo_trains_and_reloads(
    tmp_path: Path, tiny_encoder: Path, name: str, method: str
) -> None:
    """All tasks every step; pcgrad runs the engine's one-backward path without a fallback
    warning; the saved model (evaluated at the last step only) reloads and predicts like the
    trained in-memory model; the conditioning parameters moved away from their start."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="polytask: per-task gradients")
        records, setup = conditioned_demo(
            tmp_path, tiny_encoder, name, method, "sampler.tasks_per_step=all"
        )
    assert_trains(records)
    assert all(len(r["loss"]) == 3 for r in records)
    if "pcgrad" in method:
        assert {r["grad_method"] for r in records} == {"segments"}
    model = setup.model.eval()
    predictor = Predictor(tmp_path / "run")
    worst = compare(model, predictor, setup.tokenizer)
    assert worst < 1e-5, worst
    for n, p in conditioning(model):
        start = 1.0 if n.endswith("gamma") else 0.0
        assert float((p.detach() - start).abs().max()) > 1e-4, n
    meta = ckpt.read_meta(tmp_path / "run" / "model")
    assert meta["architecture"]["name"] == name and meta["step"] == STEPS
