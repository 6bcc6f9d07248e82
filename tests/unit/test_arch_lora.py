"""LoRA per task (architecture ``lora``): each task's rows run PEFT's LoRA with its own adapter
(and the shared one), checked against weights merged by hand; trainable parameters; PEFT
adapter files that plain PEFT loads; save/reload; serving two tasks' adapters from one
process; the bundled demo with every sampler and the gradient engine's exact path."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from peft.tuners.lora import LoraLayer
from transformers import AutoModel, AutoTokenizer, BertModel

from polytask import checkpoint as ckpt
from polytask.data import bundled
from polytask.errors import ConfigError
from polytask.models.lora import ADAPTER_WEIGHTS, ADAPTERS, LoraPerTask
from polytask.predict.predictor import Job, Predictor
from polytask.samplers import SAMPLERS
from polytask.segments import Segment
from polytask.serve import Limits
from polytask.serve.app import create_app
from polytask.tasks import TaskSpec
from polytask.training.params import count_parameters
from tests.conftest import base_config
from tests.unit.test_arch_moe_trains import falls
from tests.unit.test_cli import assert_user_error, polytask, write_config
from tests.unit.test_conditioned import LAYERS, bert, compare, conditioned_demo
from tests.unit.test_every_method_trains import STEPS, assert_trains

pytestmark = pytest.mark.usefixtures("one_thread")
demo_ready = pytest.mark.skipif(
    not all((bundled.dataset_dir(n) / "manifest.json").is_file() for n in bundled.BUNDLED),
    reason="bundled data not prepared (`polytask data prepare`)",
)
SPECS = [
    TaskSpec("a", "classification", ["x", "y", "z"]),
    TaskSpec("b", "tagging", ["O", "B-loc"]),
]
HIDDEN = 32


def lora_params(model: LoraPerTask, name: str) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.adapters[name]}


def perturb(model: LoraPerTask, seed: int = 0, scale: float = 0.3) -> None:
    """Move every adapter off its init (B = 0 makes an adapter a no-op)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for params in model.adapters.values():
            for _, p in params:
                p.add_(scale * torch.randn(p.shape, generator=gen))


def merged(base: BertModel, model: LoraPerTask, names: list[str]) -> BertModel:
    """``base`` with ``W + (alpha / r) B A`` of each named adapter written into each targeted
    linear layer by hand (Hu et al. 2022, eq. 3): the reference for a task's rows."""
    ref = copy.deepcopy(base)
    scale = model.alpha / model.r
    with torch.no_grad():
        for i, layer in enumerate(ref.encoder.layer):
            for target in model.target_modules:
                linear = getattr(layer.attention.self, target)
                stem = f"encoder.encoder.layer.{i}.attention.self.{target}"
                for name in names:
                    a = lora_params(model, name)[f"{stem}.lora_A.{name}.weight"]
                    b = lora_params(model, name)[f"{stem}.lora_B.{name}.weight"]
                    linear.weight += scale * (b @ a)
    return ref.eval()


def encoder_calls(model: LoraPerTask, *args: Any) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hook = model.encoder.register_forward_hook(lambda *a: seen.append(a[2].last_hidden_state))
    with torch.no_grad():
        model(*args)
    hook.remove()
    return seen


@pytest.mark.parametrize("shared", [False, True])
def test_each_tasks_rows_run_its_adapter_as_merged_by_hand(shared: bool) -> None:
    base = bert(0).eval()
    model = LoraPerTask(bert(0), SPECS, r=4, alpha=8, shared_adapter=shared).eval()
    perturb(model)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 40, (5, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    calls = encoder_calls(model, ids, mask, None, [Segment("a", 0, 2), Segment("b", 2, 5)])
    assert [c.shape[0] for c in calls] == [2, 3]  # one forward per task, its rows only
    extra = ["shared"] if shared else []
    for task, rows, got in (("a", slice(0, 2), calls[0]), ("b", slice(2, 5), calls[1])):
        with torch.no_grad():
            want = merged(base, model, [task, *extra])(
                input_ids=ids[rows], attention_mask=mask[rows]
            )
            other = merged(base, model, ["b" if task == "a" else "a", *extra])(
                input_ids=ids[rows], attention_mask=mask[rows]
            )
        real = mask[rows].bool()
        assert (got - want.last_hidden_state)[real].abs().max() < 1e-5, task
        assert (got - other.last_hidden_state)[real].abs().max() > 1e-2, task  # adapters matter


@pytest.mark.parametrize("freeze", [True, False])
@pytest.mark.parametrize("shared", [False, True])
def test_trainable_parameters_are_the_adapters_and_heads(shared: bool, freeze: bool) -> None:
    model = LoraPerTask(bert(0), SPECS, r=4, shared_adapter=shared, freeze_encoder=freeze)
    encoder = sum(p.numel() for p in bert(0).parameters())
    # r·(in + out) per adapted linear: query and value (PEFT's BERT default) in every layer
    adapter = 2 * LAYERS * 4 * (HIDDEN + HIDDEN)
    inner = HIDDEN // 2
    head = {t: HIDDEN * inner + inner + inner * n + n for t, n in (("a", 3), ("b", 2))}
    counts = count_parameters(model)
    assert model.target_modules == ["query", "value"]
    assert counts["per_task"] == {t: adapter + head[t] for t in head}
    assert counts["shared"] == encoder + (adapter if shared else 0)
    trainable = sum(counts["per_task"].values()) + (adapter if shared else 0)
    assert counts["trainable"] == trainable + (0 if freeze else encoder)
    named = {n for n, p in model.named_parameters() if p.requires_grad}
    own = {n for t in ("a", "b") for n, _ in model.task_parameters(t)}
    shared_names = {n for n, p in model.shared_parameters() if p.requires_grad}
    assert named == own | shared_names and not own & shared_names
    assert LoraPerTask.trains_shared(model.describe()) == bool(shared_names)
    assert {n for n, _ in model.encoder_parameters()}.isdisjoint(
        n for ps in model.adapters.values() for n, _ in ps
    )  # adapters train at head_lr, the pretrained weights at lr
    assert "shared_adapter=" in repr(model) and "target_modules=" in repr(model)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, "r must be an integer >= 1"),
        ({"r": True}, "r must be an integer >= 1"),
        ({"alpha": 2.5}, "alpha must be an integer >= 1"),
        ({"dropout": 1.0}, "dropout must be a number in [0, 1)"),
        ({"target_modules": []}, "target_modules must be a non-empty list"),
        ({"shared_adapter": 1}, "shared_adapter must be true or false"),
        ({"target_modules": ["nowhere"]}, "nowhere"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        LoraPerTask(bert(0), SPECS, **kwargs)


def test_a_task_named_shared_is_refused_with_a_shared_adapter() -> None:
    specs = [TaskSpec("shared", "classification", ["x", "y"])]
    with pytest.raises(ValueError, match="a task is named 'shared'"):
        LoraPerTask(bert(0), specs, shared_adapter=True)
    LoraPerTask(bert(0), specs)  # no shared adapter: the name is free


def saved(tmp_path: Path, encoder: Path, **kwargs: Any) -> tuple[LoraPerTask, Path, Any]:
    tasks = [
        TaskSpec(name="sent", type="classification", labels=["neg", "pos"]),
        TaskSpec(name="tags", type="tagging", labels=["B-loc", "B-per", "O"]),
    ]
    torch.manual_seed(0)
    model = LoraPerTask(AutoModel.from_pretrained(str(encoder)), tasks, **kwargs).eval()
    perturb(model, seed=11)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder))
    folder = tmp_path / "model"
    ckpt.save_model_folder(folder, model, tokenizer, {})
    return model, folder, tokenizer


@pytest.mark.parametrize("shared", [False, True])
def test_save_reload_predicts_identically(tmp_path: Path, tiny_encoder: Path, shared: bool) -> None:
    model, folder, tokenizer = saved(tmp_path, tiny_encoder, r=4, shared_adapter=shared)
    names = ["sent", "tags", *(["shared"] if shared else [])]
    assert sorted(p.name for p in (folder / ADAPTERS).iterdir()) == sorted(names)
    for name in names:
        config = json.loads((folder / ADAPTERS / name / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["r"] == 4
        assert (folder / ADAPTERS / name / ADAPTER_WEIGHTS).is_file()
    predictor = Predictor(folder)
    assert predictor.model.describe() == model.describe()
    assert compare(model, predictor, tokenizer) < 1e-5
    torch.manual_seed(0)
    fresh = LoraPerTask(AutoModel.from_pretrained(str(tiny_encoder)), list(model.specs.values()))
    assert compare(fresh.eval(), predictor, tokenizer) > 1e-3


def test_a_tied_mlm_head_saves_once_and_reloads(tmp_path: Path, tiny_encoder: Path) -> None:
    """An ``lm`` task's decoder is the word-embedding matrix: saved once, tied again on load
    (the reload raised "missing heads.mlm.decoder.weight" before)."""
    encoder = AutoModel.from_pretrained(str(tiny_encoder))
    vocab = int(encoder.config.vocab_size)
    tasks = [
        TaskSpec(name="sent", type="classification", labels=["neg", "pos"]),
        TaskSpec(name="mlm", type="lm", options={"vocab_size": vocab}),
    ]
    torch.manual_seed(0)
    model = LoraPerTask(encoder, tasks, r=2, shared_adapter=True).eval()
    perturb(model, seed=3)
    folder = tmp_path / "model"
    folder.mkdir()
    model.save_weights(folder)
    torch.manual_seed(1)
    fresh = LoraPerTask(
        AutoModel.from_pretrained(str(tiny_encoder)), tasks, r=2, shared_adapter=True
    )
    fresh.load_weights(folder)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), fresh.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    decoder = fresh.heads["mlm"].decoder.weight
    assert decoder is fresh.encoder.get_input_embeddings().weight


def test_a_saved_adapter_loads_in_plain_peft(tmp_path: Path, tiny_encoder: Path) -> None:
    """``adapters/<task>`` is a PEFT adapter: PeftModel on the pretrained encoder gives the
    encoder states of that task's rows."""
    from peft import PeftModel

    model, folder, tokenizer = saved(tmp_path, tiny_encoder, r=4)
    enc = tokenizer(["alice visited paris", "a bad plot"], padding=True, return_tensors="pt")
    segments = [Segment("tags", 0, 2)]
    got = encoder_calls(model, enc["input_ids"], enc["attention_mask"], None, segments)[0]
    for task, close in (("tags", True), ("sent", False)):
        base = AutoModel.from_pretrained(str(tiny_encoder))
        peft = PeftModel.from_pretrained(base, str(folder / ADAPTERS / task)).eval()
        with torch.no_grad():
            want = peft(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        gap = float((got - want.last_hidden_state).abs().max())
        assert (gap < 1e-5) == close, (task, gap)


def test_a_damaged_adapter_is_one_clear_error(tmp_path: Path, tiny_encoder: Path) -> None:
    _, folder, _ = saved(tmp_path, tiny_encoder)
    (folder / ADAPTERS / "sent" / ADAPTER_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(Exception, match=f"{ADAPTER_WEIGHTS}: cannot load weights"):
        Predictor(folder)


def test_serves_two_tasks_adapters_from_one_process(tmp_path: Path, tiny_encoder: Path) -> None:
    """One server process answers both tasks, each with its own adapter (+ the shared one);
    jobs of both tasks batched together are one model forward of one encoder pass per
    adapter, over that task's rows, with the answers of each task alone."""
    _, folder, _ = saved(tmp_path, tiny_encoder, r=4, shared_adapter=True)
    predictor = Predictor(folder)
    limits = Limits(max_inputs=8, max_chars=200, max_body_bytes=20000)
    texts = ["what a great film", "so bad", "london and paris"]
    words = [t.split() for t in texts]
    alone = Predictor(folder)
    want = {"sent": alone.predict("sent", texts), "tags": alone.predict("tags", words)}
    with TestClient(create_app(predictor, limits, max_batch=8, max_wait_ms=2)) as client:
        assert client.get("/health").json()["architecture"] == "lora"
        for task, inputs in (("sent", texts), ("tags", words)):
            body = client.post("/predict", json={"task": task, "inputs": inputs}).json()
            assert body["predictions"] == json.loads(json.dumps(want[task])), task
    passes: list[tuple[list[str], int]] = []
    model = predictor.model
    assert isinstance(model, LoraPerTask)

    def seen(module: Any, args: Any, kwargs: dict[str, Any], out: Any) -> None:
        active = next(m for m in module.modules() if isinstance(m, LoraLayer))
        passes.append((sorted(active.active_adapters), int(kwargs["input_ids"].shape[0])))

    hook = model.encoder.register_forward_hook(seen, with_kwargs=True)
    before = predictor.forwards
    got = predictor.run([Job("sent", texts), Job("tags", words), Job("sent", texts[:1])])
    hook.remove()
    assert got == [want["sent"], want["tags"], want["sent"][:1]]
    assert passes == [(["sent", "shared"], 4), (["shared", "tags"], 3)]
    assert predictor.forwards - before <= 1


def test_config_refusals(tiny_encoder: Path, task_files: Any) -> None:
    """Frozen encoder, no shared adapter: nothing shared trains (pcgrad and GradNorm are
    refused); the shared adapter makes them apply; tasks reading shared rows are refused."""
    from polytask.config.run import config_from_dict

    raw = {
        **base_config(tiny_encoder, task_files, max_steps=2),
        "sampler": {"tasks_per_step": "all"},
    }
    for method in ({"aggregator": {"name": "pcgrad"}}, {"weighting": {"name": "gradnorm"}}):
        with pytest.raises(ConfigError, match="'lora': it trains no shared parameters"):
            config_from_dict({**raw, "architecture": {"name": "lora"}, **method})
        for arch in ({"shared_adapter": True}, {"freeze_encoder": False}):
            config_from_dict({**raw, "architecture": {"name": "lora", **arch}, **method})
    tasks = copy.deepcopy(raw["tasks"])
    tasks[1] = {**tasks[0], "name": "copy", "inputs": tasks[0]["name"]}
    with pytest.raises(ConfigError, match="architecture 'lora' runs its encoder once per task"):
        config_from_dict({**raw, "tasks": tasks, "architecture": {"name": "lora"}})


def test_bad_lora_config_is_one_line(tmp_path: Path, tiny_encoder: Path, task_files: Any) -> None:
    config = write_config(tmp_path, base_config(tiny_encoder, task_files, max_steps=2))
    out = tmp_path / "run"
    result = polytask(
        "train", str(config), "-o", str(out), "architecture.name=lora", "architecture.r=0"
    )
    assert_user_error(result, "architecture: lora: r must be an integer >= 1")
    assert not out.exists()


# --- the bundled three-task demo (tiny encoder) ---


@demo_ready
@pytest.mark.usefixtures("cached_tables")
@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_demo_trains_with_every_sampler(tmp_path: Path, tiny_encoder: Path, sampler: str) -> None:
    records, _ = conditioned_demo(
        tmp_path, tiny_encoder, "lora", f"sampler.name={sampler}", "sampler.tasks_per_step=2"
    )
    falls(records, per_task=False)


@demo_ready
@pytest.mark.usefixtures("cached_tables")
@pytest.mark.parametrize(
    "method",
    ["weighting.name=uncertainty", "aggregator.name=pcgrad", "weighting.name=gradnorm"],
)
def test_demo_trains_reloads_and_adapters_differ(
    tmp_path: Path, tiny_encoder: Path, method: str
) -> None:
    """All tasks every step with a shared adapter: gradient methods take the engine's
    one-backward path (no fallback warning); each task's adapter moved its own way; the
    frozen encoder is untouched; the saved run predicts like the in-memory model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="polytask: per-task gradients")
        records, setup = conditioned_demo(
            tmp_path, tiny_encoder, "lora", method,
            "architecture.shared_adapter=true", "sampler.tasks_per_step=all",
        )  # fmt: skip
    assert_trains(records)
    if "weighting.name=uncertainty" not in method:
        assert {r["grad_method"] for r in records} == {"segments"}
    model = setup.model.eval()
    b = {n.replace(".sentiment.", "."): p for n, p in lora_params(model, "sentiment").items()}
    for task in ("movies", "ner", "shared"):
        mine = {n.replace(f".{task}.", "."): p for n, p in lora_params(model, task).items()}
        assert mine.keys() == b.keys()
        assert max(float((mine[n] - b[n]).abs().max()) for n in b) > 1e-4, task
        ups = [p for n, p in mine.items() if ".lora_B." in n]  # B starts at 0
        assert max(float(p.abs().max()) for p in ups) > 1e-5, task
    pretrained = AutoModel.from_pretrained(str(tiny_encoder)).state_dict()
    live = model.encoder.state_dict()
    for name, value in pretrained.items():
        key = name if name in live else name.replace(".weight", ".base_layer.weight")
        key = key if key in live else key.replace(".bias", ".base_layer.bias")
        assert torch.equal(live[key], value), name
    assert compare(model, Predictor(tmp_path / "run"), setup.tokenizer) < 1e-5
    assert len(records) == STEPS
