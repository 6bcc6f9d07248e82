"""A saved model folder with every kind of served task, built without training (fast).

Tasks: single-label classification, tagging, regression, a sentence-pair classification,
a multi-label classification, and an auxiliary masked-LM task (never served). Weights are
the tiny random encoder's plus seeded random heads and conditioning, so that every task's
head and every task's conditioning really differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from polytask import checkpoint as ckpt
from polytask.models import ARCHITECTURES
from polytask.tasks import TaskSpec

ARCH_ARGS: dict[str, dict[str, Any]] = {
    "hard": {},
    "soft": {},
    "film": {"layers": 1},
    "task_embedding": {},
    "prefix": {"prefix_length": 2},
    "mmoe": {"experts": 2},
    "switch": {"experts": 2, "layers": 1},
    "cgc": {"shared_experts": 1, "task_experts": 1},
    "ple": {"levels": 2, "shared_experts": 1, "task_experts": 1},
    "dselect_k": {"experts": 3, "k": 2},
    "cross_stitch": {},
}


def specs(vocab_size: int, mask_id: int) -> list[TaskSpec]:
    return [
        TaskSpec(name="sent", type="classification", labels=["neg", "neu", "pos"]),
        TaskSpec(name="tags", type="tagging", labels=["O", "B-loc", "B-per"]),
        TaskSpec(name="reg", type="regression", target_mean=10.0, target_std=4.0),
        TaskSpec(name="nli", type="classification", labels=["no", "yes"], pair=True),
        TaskSpec(name="topics", type="classification", labels=["a", "b", "c"], multi_label=True),
        TaskSpec(
            name="mlm",
            type="lm",
            auxiliary=True,
            critical=False,
            options={"mask_token_id": mask_id, "vocab_size": vocab_size},
        ),
    ]


def make_model_folder(encoder_dir: Path, out: Path, arch: str = "hard", seed: int = 0) -> Path:
    """Build ``arch`` on the tiny encoder, randomise what is task-specific, save to ``out``."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder = AutoModel.from_pretrained(str(encoder_dir))
        tasks = specs(len(tokenizer), int(tokenizer.mask_token_id))
        model = ARCHITECTURES.get(arch)(encoder, tasks, **ARCH_ARGS[arch])
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.startswith("encoder."):  # heads, gates, film, prefixes, copies
                    p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    meta = {
        "config": {"encoder": {"max_length": 24}, "tasks": [{"name": "tags", "max_length": 32}]}
    }
    ckpt.save_model_folder(out, model, tokenizer, meta)
    return out


def assert_same(a: Any, b: Any, tol: float = 1e-5, where: str = "") -> None:
    """Predictions equal: labels, tags and spans exactly; scores and values within ``tol``
    (a request batched with others is padded with them: float sums may round differently)."""
    if isinstance(a, float) or isinstance(b, float):
        assert abs(float(a) - float(b)) <= tol * max(1.0, abs(float(b))), (where, a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), (where, a, b)
        for key in a:
            assert_same(a[key], b[key], tol, f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, tol, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)
