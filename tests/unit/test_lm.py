"""The ``lm`` task type: masking, the tied / pretrained MLM head, config, training as an
auxiliary task, never served."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from polytask.config.run import config_from_dict
from polytask.config.tasks import AUXILIARY_WEIGHT
from polytask.data.batching import TaskStream, collate
from polytask.errors import ConfigError, PolytaskError
from polytask.models.heads import build_head
from polytask.models.lm_head import MaskedLMHead
from polytask.predict.predictor import Predictor
from polytask.segments import Segment
from polytask.tasks import IGNORE_INDEX, TaskSpec, task_type
from polytask.tasks.lm import mask_tokens
from polytask.train import build, train
from polytask.training.params import count_parameters
from tests.conftest import base_config

MASK, VOCAB = 4, 1000


def _lm_config(encoder: Path, files: Any, **train_kw: Any) -> dict[str, Any]:
    data = base_config(encoder, files, **train_kw)
    data["tasks"].append({"name": "mlm", "type": "lm", "data": {"from_tasks": ["sent", "tags"]}})
    data["sampler"] = {"tasks_per_step": "all"}
    return data


# --- masking -------------------------------------------------------------------------


def _sample(n_texts: int = 400, length: int = 60, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(10, VOCAB, (n_texts, length))
    special = np.zeros_like(ids)
    special[:, 0] = special[:, -1] = 1  # [CLS] ... [SEP]
    ids[:, 0], ids[:, -1] = 2, 3
    inputs, targets = [], []
    for i in range(n_texts):
        x, y = mask_tokens(
            ids[i].tolist(), special[i].tolist(), MASK, VOCAB, np.random.default_rng([7, i])
        )
        inputs.append(x)
        targets.append(y)
    return ids, special, np.array(inputs), np.array(targets)


def test_mask_share_and_80_10_10() -> None:
    ids, special, inputs, targets = _sample()
    picked = targets != IGNORE_INDEX
    share = picked.sum() / (special == 0).sum()
    assert 0.14 < share < 0.16, share  # 23,200 candidates: 3 sigma ≈ 0.007
    assert (targets[picked] == ids[picked]).all()  # targets are the original tokens
    assert (inputs[~picked] == ids[~picked]).all()  # unpicked tokens unchanged
    masked = (inputs[picked] == MASK).mean()
    kept = (inputs[picked] == ids[picked]).mean()
    randomized = 1 - masked - kept
    assert 0.77 < masked < 0.83, masked
    assert 0.08 < kept < 0.12 and 0.08 < randomized < 0.12, (kept, randomized)


def test_special_tokens_never_masked() -> None:
    ids, special, inputs, targets = _sample()
    assert (targets[special == 1] == IGNORE_INDEX).all()
    assert (inputs[special == 1] == ids[special == 1]).all()


def test_masks_are_deterministic_per_key() -> None:
    ids = list(range(10, 70))
    special = [0] * 60
    a = mask_tokens(ids, special, MASK, VOCAB, np.random.default_rng([1, 0, 5]))
    b = mask_tokens(ids, special, MASK, VOCAB, np.random.default_rng([1, 0, 5]))
    c = mask_tokens(ids, special, MASK, VOCAB, np.random.default_rng([1, 1, 5]))
    assert a == b
    assert a != c  # another epoch, other masks


def test_padding_never_a_target(tiny_encoder: Path, task_files: Any) -> None:
    config = config_from_dict(_lm_config(tiny_encoder, task_files))
    setup = build(config)
    spec, split = setup.data["mlm"].spec, setup.data["mlm"].splits["train"]
    ttype = task_type("lm")
    rows = ttype.prepare(spec, split[list(range(16))], (7, 0))
    batch = collate([(spec, rows)], 0)
    labels = batch.labels["mlm"]
    assert (labels[batch.attention_mask == 0] == IGNORE_INDEX).all()
    assert (labels != IGNORE_INDEX).any()
    # the same rows in evaluation get the same fixed masks every time, other than training's
    again = ttype.prepare(spec, split[list(range(16))], None)
    assert again == ttype.prepare(spec, split[list(range(16))], None)
    assert again["input_ids"] != rows["input_ids"]


def test_stream_masks_replay_after_resume(tiny_encoder: Path, task_files: Any) -> None:
    config = config_from_dict(_lm_config(tiny_encoder, task_files))
    setup = build(config)
    spec, split = setup.data["mlm"].spec, setup.data["mlm"].splits["train"]
    stream = TaskStream(split, 8, 2, 11, spec)
    for _ in range(30):  # past the first epoch (192 texts / 8)
        stream.next_rows()
    state = stream.state_dict()
    expected = [stream.next_rows() for _ in range(3)]
    resumed = TaskStream(split, 8, 2, 11, spec)
    resumed.load_state_dict(state)
    assert [resumed.next_rows() for _ in range(3)] == expected
    assert state["epoch"] >= 1


# --- head ----------------------------------------------------------------------------


def test_tied_head_shares_the_embedding_and_counts_it_once(
    tiny_encoder: Path, task_files: Any
) -> None:
    setup = build(config_from_dict(_lm_config(tiny_encoder, task_files)))
    model = setup.model
    head = model.heads["mlm"]
    assert isinstance(head, MaskedLMHead) and not head.pretrained
    embedding = model.encoder.get_input_embeddings().weight
    assert head.decoder.weight is embedding
    counts = count_parameters(model)
    hidden, vocab = model.encoder.config.hidden_size, model.encoder.config.vocab_size
    encoder_params = sum(p.numel() for p in model.encoder.parameters())
    own = hidden * hidden + hidden + 2 * hidden + vocab  # dense, LayerNorm, output bias
    assert counts["per_task"]["mlm"] == own
    assert counts["shared"] == encoder_params
    others = sum(counts["per_task"][t] for t in ("sent", "tags", "reg"))
    assert counts["total"] == encoder_params + own + others  # the decoder matrix once
    names = [n for n, _ in model.task_parameters("mlm")]
    assert not any("decoder" in n for n in names)


def test_pretrained_mlm_head_is_loaded(tmp_path: Path) -> None:
    from transformers import AutoModel, BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )  # fmt: skip
    mlm = BertForMaskedLM(config)
    with torch.no_grad():
        mlm.cls.predictions.bias.normal_()
    mlm.save_pretrained(str(tmp_path / "mlm"))
    encoder = AutoModel.from_pretrained(str(tmp_path / "mlm"))
    head = build_head(TaskSpec("mlm", "lm", options={"vocab_size": 50}), encoder)
    assert isinstance(head, MaskedLMHead) and head.pretrained
    assert torch.equal(head.bias, mlm.cls.predictions.bias)
    assert torch.equal(head.dense.weight, mlm.cls.predictions.transform.dense.weight)
    assert head.decoder.weight is encoder.get_input_embeddings().weight
    hidden = torch.randn(2, 5, 16)
    encoder.eval()
    expected = mlm.cls(hidden)
    assert torch.allclose(head(hidden), expected, atol=1e-5)


def test_decoder_models_get_a_clear_error() -> None:
    from transformers import GPT2Config, GPT2Model

    gpt = GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    gpt.config.architectures = ["GPT2LMHeadModel"]
    with pytest.raises(ConfigError, match=r"causal LM trains with instruction tasks"):
        MaskedLMHead.for_encoder(gpt)


# --- config --------------------------------------------------------------------------


def test_auxiliary_weight_defaults(tiny_encoder: Path, task_files: Any) -> None:
    data = _lm_config(tiny_encoder, task_files)
    data["tasks"][2]["auxiliary"] = True
    config = config_from_dict(data)
    assert config.task("mlm").auxiliary and config.task("mlm").weight == AUXILIARY_WEIGHT
    assert config.task("reg").weight == AUXILIARY_WEIGHT
    assert config.task("sent").weight == 1.0
    data["tasks"][2]["weight"] = 0.5  # an explicit weight wins
    assert config_from_dict(data).task("reg").weight == 0.5
    # early stopping never follows an auxiliary task: the default primary skips them
    data["tasks"][0]["auxiliary"] = True
    assert config_from_dict(data).primary == "tags"


BAD = [
    ({"train.primary_task": "mlm"}, "train.primary_task 'mlm' is auxiliary"),
    ({"tasks.3.auxiliary": False}, "lm tasks are auxiliary"),
    ({"tasks.3.data.from_tasks": ["sentt"]}, "'sentt' is not a task (did you mean 'sent'?)"),
    ({"tasks.3.data.from_tasks": ["mlm"]}, "'mlm' is an lm task"),
    ({"tasks.3.data.from_tasks": []}, "'from_tasks' is empty"),
    ({"tasks.0.data.from_tasks": ["tags"]}, "'data.from_tasks' only applies to lm tasks"),
]


@pytest.mark.parametrize(("edits", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_lm_configs(
    tiny_encoder: Path, task_files: Any, edits: dict[str, Any], message: str
) -> None:
    data = copy.deepcopy(_lm_config(tiny_encoder, task_files))
    for dotted, value in edits.items():
        node: Any = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[parts[-1]] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(data)


def test_every_task_auxiliary_is_an_error(tiny_encoder: Path, task_files: Any) -> None:
    data = _lm_config(tiny_encoder, task_files)
    for task in data["tasks"]:
        task["auxiliary"] = True
    with pytest.raises(ConfigError, match="every task is auxiliary"):
        config_from_dict(data)


# --- training, saving, serving -------------------------------------------------------


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> tuple[Path, Any]:
    from tests.conftest import regression_rows, sentiment_rows, tagging_rows, write_jsonl

    tmp = tmp_path_factory.mktemp("lm-run")
    makers = {"sent": sentiment_rows, "tags": tagging_rows, "reg": regression_rows}
    splits = ("train", "validation", "test")
    files = {
        t: {s: write_jsonl(tmp / t / f"{s}.jsonl", m(48, i)) for i, s in enumerate(splits)}
        for t, m in makers.items()
    }
    config = config_from_dict(_lm_config(tiny_encoder, files, max_steps=4, eval_every=4))
    final = train(config, tmp / "run", show_progress=False)
    return tmp / "run", final


def test_lm_metrics_and_params_in_final(lm_run: tuple[Path, Any]) -> None:
    _, final = lm_run
    mlm = final["tasks"]["mlm"]
    for split in ("validation", "test"):
        assert mlm[split]["perplexity"] == pytest.approx(np.exp(mlm[split]["loss"]), rel=1e-4)
    assert final["primary_task"] == "sent"
    assert final["params"]["per_task"]["mlm"] > 0


def test_saved_tied_model_reloads_and_predicts_identically(
    tiny_encoder: Path, task_files: Any, tmp_path: Path
) -> None:
    from safetensors import safe_open

    from polytask.checkpoint import load_model_folder, save_model_folder

    config = config_from_dict(_lm_config(tiny_encoder, task_files))
    setup = build(config)
    model = setup.model
    torch.manual_seed(0)
    with torch.no_grad():  # weights unlike any fresh initialisation, the tied matrix included
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_model_folder(tmp_path / "model", model, setup.tokenizer, {"config": {}})
    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert sum("word_embeddings" in k or "decoder" in k for k in keys) == 1  # stored once
    loaded, _, _ = load_model_folder(tmp_path / "model")
    head = loaded.heads["mlm"]
    assert head.decoder.weight is loaded.encoder.get_input_embeddings().weight  # tie survives
    model.eval()
    ids = torch.tensor([[2, 10, 11, 4, 12, 3], [2, 13, 4, 14, 3, 0], [2, 15, 16, 3, 0, 0]])
    mask = (ids != 0).long()
    segs = [Segment("mlm", 0, 2), Segment("sent", 2, 3)]
    with torch.no_grad():
        a = model(ids, mask, None, segs)
        b = loaded(ids, mask, None, segs)
    assert a["mlm"].shape == (2, 6, model.encoder.config.vocab_size)
    for task in ("mlm", "sent"):
        assert float((a[task] - b[task]).abs().max()) < 1e-5


def test_auxiliary_tasks_are_not_served(lm_run: tuple[Path, Any]) -> None:
    run, _ = lm_run
    predictor = Predictor(run)
    assert "mlm" not in predictor.tasks and "sent" in predictor.tasks
    with pytest.raises(PolytaskError, match="unknown task 'mlm'"):
        predictor.predict("mlm", ["good movie"])


def test_cli_predict_refuses_an_auxiliary_task(lm_run: tuple[Path, Any]) -> None:
    from tests.unit.test_cli import assert_user_error, polytask

    run, _ = lm_run
    result = polytask("predict", str(run), "--task", "mlm", "--input", "-", stdin="good\n")
    assert_user_error(result, "unknown task 'mlm'")


def test_lm_task_with_pcgrad(tiny_encoder: Path, task_files: Any, tmp_path: Path) -> None:
    """Gradient surgery sees the lm task like any other (the tied decoder is shared)."""
    data = _lm_config(tiny_encoder, task_files, max_steps=3, eval_every=3)
    data["aggregator"] = {"name": "pcgrad"}
    with pytest.warns(RuntimeWarning):
        final = train(config_from_dict(data), tmp_path / "run", show_progress=False)
    assert np.isfinite(final["tasks"]["mlm"]["validation"]["loss"])


def test_resume_with_an_lm_task_is_bit_identical(
    tiny_encoder: Path, task_files: Any, tmp_path: Path
) -> None:
    """Resuming from the mid-run checkpoint replays the same masks: same final weights."""
    from safetensors.torch import load_file

    data = _lm_config(tiny_encoder, task_files, max_steps=6, eval_every=6, checkpoint_every=3)
    config = config_from_dict(data)
    out = tmp_path / "run"
    train(config, out, show_progress=False)  # leaves checkpoint/ at step 3
    expected = load_file(str(out / "model" / "model.safetensors"))
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["state"]["step"] == 3
    (out / "final_metrics.json").unlink()  # stopped after its checkpoint (finished: no-op)
    train(config, out, resume=True, show_progress=False)  # steps 4-6 again, from the checkpoint
    again = load_file(str(out / "model" / "model.safetensors"))
    assert expected.keys() == again.keys()
    assert all(torch.equal(expected[k], again[k]) for k in expected)
