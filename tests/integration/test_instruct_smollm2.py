"""The bundled SmolLM2-135M-Instruct with LoRA: a short instruction-tuning run, then reload.

Short on purpose (< 90 s on a 2-core CPU): two tasks, a handful of examples, two steps. The
bounded run that measures accuracy gains is ``benchmarks/instruct_smollm2.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from polytask.config.run import config_from_dict, load_config
from polytask.data import bundled
from polytask.models.decoder import converted_dir

pytestmark = pytest.mark.integration


def _ready() -> bool:
    prepared = (converted_dir("smollm2-135m-instruct") / "config.json").is_file()
    return (
        prepared
        and importlib.util.find_spec("peft") is not None
        and all((bundled.dataset_dir(n) / "manifest.json").is_file() for n in bundled.BUNDLED)
    )


@pytest.mark.skipif(not _ready(), reason="run `make install` (bundled decoder, data, peft)")
def test_lora_instruction_run_saves_and_reloads(tmp_path: Path) -> None:
    from polytask.checkpoint import load_model_folder
    from polytask.predict.predictor import Predictor
    from polytask.train import train

    raw = load_config("instruct").model_dump(mode="json")
    sentiment = next(t for t in raw["tasks"] if t["name"] == "sentiment")
    held = {
        **sentiment,
        "name": "tweet_is_negative",
        "held_out": True,
        "critical": False,
        "data": dict(sentiment["data"]),
        "instruction": {
            **sentiment["instruction"],
            "template": "Is this tweet negative? Answer yes or no.\nTweet: {text}",
            "answers": {"negative": "yes", "neutral": "no", "positive": "no"},
        },
    }
    raw["tasks"] = [sentiment, held]
    raw["sampler"] = {"tasks_per_step": 1}  # one trained task: no sampler to name
    for task in raw["tasks"]:
        task["data"] |= {"max_train_examples": 8, "max_validation_examples": 4}
        task["data"]["max_test_examples"] = 2
    raw["encoder"]["max_length"] = 48
    raw["train"] |= {"max_steps": 2, "eval_every": 2, "batch_size": 2, "warmup_ratio": 0.0}
    config = config_from_dict(raw)
    final = train(config, tmp_path / "run", show_progress=False)
    assert set(final["tasks"]) == {"sentiment", "tweet_is_negative"}
    assert final["updates"] == {"sentiment": 2}
    # LoRA only: r=8 on every linear layer is 2,442,240 of 136,957,248 parameters (1.8 %)
    assert 0 < final["params"]["trainable"] < final["params"]["total"] / 40
    adapter = tmp_path / "run" / "model" / "adapter" / "adapter_model.safetensors"
    assert adapter.is_file() and adapter.stat().st_size < 10_000_000  # not the 135M weights

    # the saved adapter, reloaded twice on the base model, gives the same outputs, and it is
    # not the identity (LoRA's B starts at zero: two steps moved it)
    reloaded, tokenizer, _ = load_model_folder(tmp_path / "run" / "model")
    predictor = Predictor(tmp_path / "run")
    ids = torch.tensor([tokenizer("What is the sentiment of this tweet?")["input_ids"]])
    with torch.no_grad():
        a = reloaded.decoder(input_ids=ids).logits
        b = predictor.model.decoder(input_ids=ids).logits  # type: ignore[attr-defined]
    assert float((a - b).abs().max()) < 1e-5
    lora_b = [p for n, p in reloaded.named_parameters() if "lora_B" in n]
    assert lora_b and max(float(p.abs().max()) for p in lora_b) > 0
    answers = predictor.predict("sentiment", ["what a lovely day"])
    assert isinstance(answers[0]["text"], str) and answers[0]["text"]
