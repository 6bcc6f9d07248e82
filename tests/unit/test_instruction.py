"""Instruction tasks on a tiny random Llama: prompt masking, answers, training, PEFT save/reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from polytask.checkpoint import load_model_folder, save_model_folder
from polytask.config.run import config_from_dict
from polytask.errors import ConfigError
from polytask.evaluate import predict_split
from polytask.segments import Segment
from polytask.tasks import IGNORE_INDEX, task_type
from polytask.tasks.prompts import InstructionConfig, answer_ids, make_answer
from polytask.train import build
from tests.conftest import sentiment_rows, tagging_rows, write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread


@pytest.fixture()
def instruction_files(tmp_path: Path) -> dict[str, dict[str, Path]]:
    makers = {"sent": sentiment_rows, "tags": tagging_rows}
    sizes = {"train": 64, "validation": 16}
    return {
        task: {
            split: write_jsonl(tmp_path / task / f"{split}.jsonl", make(n, len(split) + len(task)))
            for split, n in sizes.items()
        }
        for task, make in makers.items()
    }


def instruct_config(
    decoder: Path, files: dict[str, dict[str, Path]], adapter: str = "lora", **train: Any
) -> dict[str, Any]:
    def data(task: str) -> dict[str, str]:
        return {s: str(p) for s, p in files[task].items()}

    words = {"text": "tokens", "label": "tags"}
    return {
        "seed": 3,
        "encoder": {"name": str(decoder), "max_length": 40},
        "architecture": {
            "name": "causal_lm",
            "adapter": adapter,
            "r": 4,
            "alpha": 8.0,
            "dropout": 0.0,
            "prefix_length": 4,
        },
        "tasks": [
            {
                "name": "sent",
                "type": "instruction",
                "data": data("sent"),
                "instruction": {"template": "sentiment ? {text}"},
            },
            {
                "name": "ents",
                "type": "instruction",
                "data": data("tags"),
                "columns": words,
                "instruction": {
                    "template": "per loc ? {text}",
                    "answer": "entities",
                    "max_new_tokens": 8,
                },
            },
            {
                "name": "where",
                "type": "instruction",
                "data": data("tags"),
                "columns": words,
                "held_out": True,
                "instruction": {
                    "template": "loc ? {text}",
                    "answer": "mentions",
                    "entity_types": ["loc"],
                },
            },
        ],
        "sampler": {"tasks_per_step": "all"},
        "train": {
            "batch_size": 8,
            "eval_batch_size": 16,
            "max_steps": 4,
            "eval_every": 4,
            "lr": 1e-2,
            "warmup_ratio": 0.0,
            "patience": None,
            "monitor_every": None,
            **train,
        },
    }


def test_answers_from_labels_and_bio_tags() -> None:
    label = InstructionConfig(template="{text}", answers={"pos": "positive"})
    assert make_answer(label, "good", "pos") == "positive"
    assert make_answer(label, "good", "") is None
    ents = InstructionConfig(template="{text}", answer="entities")
    words, tags = ["alice", "visited", "new", "york"], ["B-per", "O", "B-loc", "I-loc"]
    assert make_answer(ents, words, tags) == "per: alice; loc: new york"
    assert make_answer(ents, ["the", "film"], ["O", "O"]) == "none"
    renamed = InstructionConfig(
        template="{text}", answer="entities", entity_types=["per", "loc"], answers={"loc": "place"}
    )
    assert make_answer(renamed, words, tags) == "per: alice; place: new york"
    where = InstructionConfig(template="{text}", answer="mentions", entity_types=["loc"])
    assert make_answer(where, words, tags) == "yes"
    assert make_answer(where, ["alice"], ["B-per"]) == "no"
    with pytest.raises(ValidationError, match="org not in entity_types"):
        InstructionConfig(
            template="{text}", answer="entities", entity_types=["loc"], answers={"org": "company"}
        )
    with pytest.raises(ValidationError, match="renames 'yes' and 'no', not maybe"):
        InstructionConfig(
            template="{text}", answer="mentions", entity_types=["loc"], answers={"maybe": "?"}
        )


def test_prompt_tokens_are_masked(tiny_decoder: Path, instruction_files: Any) -> None:
    setup = build(config_from_dict(instruct_config(tiny_decoder, instruction_files)))
    tok = setup.tokenizer
    for name in ("sent", "ents"):
        ds = setup.data[name].splits["train"]
        for ids, target, n, answer in zip(
            ds["input_ids"], ds["target"], ds["prompt_length"], ds["answer"], strict=True
        ):
            assert target[:n] == [IGNORE_INDEX] * n  # no loss on the prompt
            assert target[n:] == ids[n:] == answer_ids(tok, answer)  # answer + end of turn
            # (the word-level test tokenizer decodes with a space between all tokens)
            assert tok.decode(ids[n:]).replace(" ", "") == answer.replace(" ", "") + "<|im_end|>"
            prompt = tok.decode(ids[:n])
            assert prompt.startswith("<|im_start|> user") and prompt.endswith("assistant")
    assert setup.data["sent"].spec.labels == ["neg", "neu", "pos"]


def test_config_errors(tiny_decoder: Path, instruction_files: Any) -> None:
    raw = instruct_config(tiny_decoder, instruction_files)
    raw["tasks"][0].pop("instruction")
    with pytest.raises(ConfigError, match="'instruction' is required by"):
        config_from_dict(raw)
    raw = instruct_config(tiny_decoder, instruction_files)
    raw["tasks"][0]["type"] = "classification"
    raw["tasks"][0].pop("instruction")
    with pytest.raises(ConfigError, match="every task must be an instruction task"):
        build(config_from_dict(raw))
    raw = instruct_config(tiny_decoder, instruction_files)
    raw["train"]["primary_task"] = "where"
    with pytest.raises(ConfigError, match="held out"):
        config_from_dict(raw)


def test_max_none_share_caps_none_answers_in_training_only(
    tiny_decoder: Path, instruction_files: Any
) -> None:
    raw = instruct_config(tiny_decoder, instruction_files)
    natural = build(config_from_dict(raw)).data["ents"]
    raw["tasks"][1]["instruction"]["max_none_share"] = 0.25
    capped = build(config_from_dict(raw)).data["ents"]

    def counts(ds: Any) -> tuple[int, int]:
        answers = list(ds["answer"])
        return sum(a == "none" for a in answers), sum(a != "none" for a in answers)

    none, some = counts(natural.splits["train"])
    assert none > some // 3 > 0  # the fixture has more 'none' rows than the cap allows
    kept_none, kept_some = counts(capped.splits["train"])
    assert kept_some == some  # every text with an entity stays
    assert kept_none == int(0.25 * some / 0.75)
    assert counts(capped.splits["validation"]) == counts(natural.splits["validation"])
    # entity answers are ranked by entity F1 (exact match rewards answering 'none')
    assert task_type("instruction").primary(capped.spec) == "entity_f1"
    assert task_type("instruction").primary(build(config_from_dict(raw)).data["sent"].spec) == (
        "accuracy"
    )
    raw["tasks"][0]["instruction"]["max_none_share"] = 0.5
    with pytest.raises(ConfigError, match="max_none_share only applies"):
        config_from_dict(raw)


def _mean_losses(run: Path, task: str) -> tuple[float, float]:
    """Mean training loss of ``task`` over the first and the last five steps."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    steps = [r["loss"][task] for r in records if r["event"] == "train"]
    return sum(steps[:5]) / 5, sum(steps[-5:]) / 5


def test_per_task_losses_fall_and_held_out_is_only_evaluated(
    tiny_decoder: Path, instruction_files: Any, tmp_path: Path
) -> None:
    from polytask.predict.predictor import Predictor
    from polytask.train import train

    raw = instruct_config(tiny_decoder, instruction_files, "none", max_steps=30, eval_every=30)
    final = train(config_from_dict(raw), tmp_path / "run", show_progress=False)
    for task in ("sent", "ents"):
        first, last = _mean_losses(tmp_path / "run", task)
        assert last < 0.5 * first, (task, first, last)
    assert "where" not in final["updates"]  # held out: never trained ...
    assert set(final["tasks"]["where"]["validation"]) >= {"accuracy", "loss"}  # ... evaluated
    assert set(final["tasks"]["ents"]["validation"]) >= {"accuracy", "entity_f1", "perplexity"}
    predictor = Predictor(tmp_path / "run")
    out = predictor.predict("sent", ["good movie", "bad plot"])
    assert [set(o) for o in out] == [{"text"}, {"text"}]
    assert {o["text"] for o in out} <= {"pos", "neg", "neu"}  # 30 steps teach the format
    star = predictor.predict("*", ["alice visited paris"])
    assert set(star[0]) == {"sent", "ents", "where"}
    from fastapi.testclient import TestClient

    from polytask.serve.app import create_app

    with TestClient(create_app(predictor, max_batch=4, max_wait_ms=1)) as client:
        body = client.post("/predict", json={"task": "sent", "inputs": ["good movie"]}).json()
        info = {t["name"]: t for t in client.get("/tasks").json()["tasks"]}
    assert body == {"task": "sent", "tasks": ["sent"], "predictions": [out[0]]}
    assert info["sent"]["labels"] == ["neg", "neu", "pos"] and info["sent"]["input"] == "text"


def test_lora_losses_fall_backbone_frozen(
    tiny_decoder: Path, instruction_files: Any, tmp_path: Path
) -> None:
    """LoRA on every projection: losses fall (slowly: the random backbone stays frozen)."""
    from polytask.train import train

    raw = instruct_config(tiny_decoder, instruction_files, "lora", max_steps=20, eval_every=20)
    raw["architecture"] |= {"r": 4, "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"]}
    raw["train"]["lr"] = 3e-2
    final = train(config_from_dict(raw), tmp_path / "run", show_progress=False)
    for task in ("sent", "ents"):
        first, last = _mean_losses(tmp_path / "run", task)
        assert last < first - 0.1, (task, first, last)
    params = final["params"]
    assert 0 < params["trainable"] < params["total"] / 4
    assert (tmp_path / "run" / "model" / "adapter" / "adapter_model.safetensors").is_file()


def _perturb(model: torch.nn.Module) -> None:
    """Move the adapter off its identity initialisation (LoRA's B starts at zero)."""
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(5)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)


@pytest.mark.parametrize("adapter", ["lora", "prefix", "none"])
def test_save_and_reload_give_identical_outputs(
    adapter: str, tiny_decoder: Path, instruction_files: Any, tmp_path: Path
) -> None:
    config = config_from_dict(instruct_config(tiny_decoder, instruction_files, adapter))
    setup = build(config)
    model = setup.model
    _perturb(model)
    model.eval()
    meta = {"config": config.model_dump(mode="json")}
    save_model_folder(tmp_path / "model", model, setup.tokenizer, meta)
    saved = sorted(p.name for p in (tmp_path / "model").rglob("*.safetensors"))
    assert saved == (["model.safetensors"] if adapter == "none" else ["adapter_model.safetensors"])
    reloaded, _, _ = load_model_folder(tmp_path / "model")
    rows = setup.data["sent"].splits["validation"][:6]["input_ids"]
    ids = torch.tensor([r[:12] for r in rows if len(r) >= 12])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        before = model.decoder(input_ids=ids, attention_mask=mask).logits
        after = reloaded.decoder(input_ids=ids, attention_mask=mask).logits
    assert float((before - after).abs().max()) < 1e-5
    trained = [p for p in model.parameters() if p.requires_grad]
    total = sum(p.numel() for p in model.parameters())
    assert 0 < sum(p.numel() for p in trained) < (total + 1 if adapter == "none" else total / 2)


@pytest.mark.parametrize("adapter", ["lora", "prefix", "none"])
def test_answer_only_logits_give_the_full_forwards_loss_and_gradients(
    adapter: str, tiny_decoder: Path, instruction_files: Any
) -> None:
    """Training hands the labels to the model, which then runs its LM head only where an
    answer token is predicted (LoRA, full): same loss and gradients as the full logits."""
    setup = build(config_from_dict(instruct_config(tiny_decoder, instruction_files, adapter)))
    model, spec = setup.model, setup.data["ents"].spec
    _perturb(model)
    model.eval()  # no dropout: the two forwards must see the same function
    ds = setup.data["ents"].splits["train"][:5]
    width = max(map(len, ds["input_ids"]))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in ds["input_ids"]])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ds["input_ids"]])
    labels = {"ents": task_type("instruction").collate(spec, ds["target"])}
    segments = [Segment("ents", 0, len(ids))]
    trained = [p for p in model.parameters() if p.requires_grad]
    results = []
    for extra in ({}, {"labels": labels}):
        logits = model(ids, mask, None, segments, **extra)["ents"]
        loss = task_type("instruction").loss(spec, logits, labels["ents"])
        results.append((loss.detach(), torch.autograd.grad(loss, trained), logits.dim()))
    (full, full_grads, full_dim), (compact, compact_grads, compact_dim) = results
    assert full_dim == 3 and compact_dim == (3 if adapter == "prefix" else 2)
    assert float((full - compact).abs()) < 1e-5
    worst = max(float((a - b).abs().max()) for a, b in zip(full_grads, compact_grads, strict=True))
    assert worst < 1e-5


def test_evaluation_loss_of_generated_answers_runs_the_head_on_answers_only(
    tiny_decoder: Path, instruction_files: Any
) -> None:
    """A generated task's loss is a separate forward: it hands the labels to the model, so
    the LM head runs on the answer positions only, and the loss equals the full logits'."""
    setup = build(config_from_dict(instruct_config(tiny_decoder, instruction_files)))
    model, spec = setup.model, setup.data["ents"].spec
    _perturb(model)
    model.eval()
    ds = setup.data["ents"].splits["validation"]
    shapes: list[tuple[int, ...]] = []
    head = model.decoder.get_base_model().get_output_embeddings()
    hook = head.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    pad = int(setup.tokenizer.pad_token_id or 0)
    try:
        _, _, loss = predict_split(
            model, spec, ds, 16, pad, torch.device("cpu"), None, setup.tokenizer
        )
    finally:
        hook.remove()
    width = max(map(len, ds["input_ids"]))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in ds["input_ids"]])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ds["input_ids"]])
    labels = task_type("instruction").collate(spec, ds["target"])
    with torch.no_grad():
        logits = model(ids, mask, None, [Segment("ents", 0, len(ids))])["ents"]
        full = float(task_type("instruction").loss(spec, logits, labels))
    assert abs(loss - full) < 1e-5
    answer_tokens = int((labels[:, 1:] != IGNORE_INDEX).sum())
    assert sum(s[0] for s in shapes if len(s) == 2) == answer_tokens  # the loss forwards
    assert all(len(s) == 2 or s[1] == 1 for s in shapes)  # generation: last position only


@pytest.mark.parametrize("adapter", ["lora", "prefix"])
def test_scoring_and_generation_match_plain_forwards(
    adapter: str, tiny_decoder: Path, instruction_files: Any
) -> None:
    """The KV-cached paths equal scoring and decoding with whole forwards."""
    setup = build(config_from_dict(instruct_config(tiny_decoder, instruction_files, adapter)))
    model = setup.model
    _perturb(model)
    model.eval()
    ds = setup.data["sent"].splits["validation"]
    prompts = [ids[:n] for ids, n in zip(ds["input_ids"][:3], ds["prompt_length"][:3], strict=True)]
    choices = setup.data["sent"].spec.options["choice_ids"]
    with torch.no_grad():
        scores = model.score_choices(prompts, choices)
        generated = model.generate_greedy(prompts, 4, [-1])
        plain = torch.zeros_like(scores)
        for i, p in enumerate(prompts):
            for k, c in enumerate(choices):
                logits = model.decoder(input_ids=torch.tensor([p + c])).logits[0]
                logp = torch.log_softmax(logits[len(p) - 1 : -1], -1)
                plain[i, k] = logp.gather(1, torch.tensor(c)[:, None]).sum()
            row = list(p)
            for _ in range(4):
                row.append(int(model.decoder(input_ids=torch.tensor([row])).logits[0, -1].argmax()))
            assert generated[i] == row[len(p) :]
    assert torch.allclose(scores, plain, atol=1e-4)


def test_choice_scores_give_the_same_loss_as_the_loss_forward(
    tiny_decoder: Path, instruction_files: Any
) -> None:
    from polytask.data.batching import collate
    from polytask.evaluate import predict_split
    from polytask.tasks import task_type

    setup = build(config_from_dict(instruct_config(tiny_decoder, instruction_files)))
    model, spec = setup.model, setup.data["sent"].spec
    _perturb(model)
    model.eval()
    ds = setup.data["sent"].splits["validation"]
    preds, refs, loss = predict_split(model, spec, ds, 16, 0, torch.device("cpu"))
    batch = collate([(spec, ds[:])], int(setup.tokenizer.pad_token_id))
    with torch.no_grad():
        logits = model(batch.input_ids, batch.attention_mask, None, batch.segments)["sent"]
    expected = float(task_type("instruction").loss(spec, logits, batch.labels["sent"]))
    assert abs(loss - expected) < 1e-4
    assert refs == ds["answer"] and set(preds) <= set(spec.labels)


def test_diversity_pair_is_checked_and_tabled(
    tiny_decoder: Path, instruction_files: Any, tmp_path: Path
) -> None:
    from polytask.experiments.diversity import check_pair, markdown, run_diversity

    mixed_raw = instruct_config(tiny_decoder, instruction_files, "none", max_steps=2)
    single_raw = instruct_config(tiny_decoder, instruction_files, "none", max_steps=2)
    single_raw["tasks"] = [t for t in single_raw["tasks"] if t["name"] != "ents"]
    for raw in (mixed_raw, single_raw):
        raw["sampler"]["tasks_per_step"] = 1  # one task's batch per step: 8 examples
    single, mixed = config_from_dict(single_raw), config_from_dict(mixed_raw)
    assert check_pair(single, mixed) == ["where"]
    longer = config_from_dict({**single_raw, "train": {**single_raw["train"], "max_steps": 3}})
    with pytest.raises(ConfigError, match="the arms train 24 and 16 examples"):
        check_pair(longer, mixed)
    summary = run_diversity(single, mixed, tmp_path / "div", show_progress=False)
    assert summary["arms"]["single"]["trained_tasks"] == ["sent"]
    assert summary["arms"]["mixed"]["trained_tasks"] == ["sent", "ents"]
    table = markdown(summary)
    assert "| where | held out | accuracy |" in table
    assert (tmp_path / "div" / "diversity.md").read_text() == table
