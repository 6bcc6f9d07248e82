"""``polytask export``: each exported task loads in a fresh interpreter with transformers
alone (polytask never imported) and predicts as ``polytask predict`` does, within 1e-5,
on 100 inputs per task type (classification, sentence pairs, multi-label, regression,
tagging), for hard sharing and for lora with its adapters merged."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from polytask import checkpoint as ckpt
from polytask.models import ARCHITECTURES
from polytask.predict.export import load_without_polytask
from tests import forked_cli
from tests.conftest import WORDS
from tests.unit.serve_model import make_model_folder, specs

pytestmark = pytest.mark.usefixtures("one_thread")
TASKS = ("sent", "nli", "topics", "reg", "tags")
TOL = 1e-5


def inputs(task: str, n: int = 100, seed: int = 0) -> list[Any]:
    """``n`` inputs of ``task``'s form, of 1 to 30 words (some past the length limit)."""
    rng = random.Random(seed)

    def words() -> list[str]:
        return [rng.choice(WORDS) for _ in range(rng.randint(1, 30))]

    if task == "tags":
        return [words() for _ in range(n)]
    if task == "nli":
        return [[" ".join(words()), " ".join(words())] for _ in range(n)]
    return [" ".join(words()) for _ in range(n)]


def polytask_predict(model: Path, task: str, rows: list[Any], tmp: Path) -> list[dict[str, Any]]:
    file = tmp / f"{task}.jsonl"
    lines = [json.dumps({"tokens": r} if task == "tags" else r) for r in rows]
    file.write_text("\n".join(lines) + "\n")
    args = ["predict", str(model), "--task", task, "--input", str(file)]
    result = forked_cli.run(args, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def polytask_logits(model_dir: Path, task: str, rows: list[Any]) -> list[list[Any]]:
    """The saved model's own logits (tagging: at each word's first piece), for max |diff|."""
    from polytask.predict.predictor import Predictor
    from polytask.segments import Segment

    pred = Predictor(model_dir)
    length = pred.task_lengths.get(task, pred.max_length)
    tok = pred.tokenizer
    if task == "tags":
        enc = tok(
            rows,
            is_split_into_words=True,
            truncation=True,
            max_length=length,
            padding=True,
            return_tensors="pt",
        )
    elif task == "nli":
        enc = tok(
            [a for a, _ in rows],
            [b for _, b in rows],
            truncation=True,
            max_length=length,
            padding=True,
            return_tensors="pt",
        )
    else:
        enc = tok(rows, truncation=True, max_length=length, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = pred.model.forward_rows(
            enc["input_ids"],
            enc["attention_mask"],
            enc.get("token_type_ids"),
            [Segment(task, 0, len(rows))],
        )[task]
    if task == "reg":  # the model's logit is standardised: the export's is in target units
        spec = pred.spec(task)
        out = out.double() * float(spec.target_std or 1.0) + float(spec.target_mean or 0.0)
    if task != "tags":
        return [row.tolist() for row in out]
    result = []
    for i in range(len(rows)):
        first = sorted(
            {w: p for p, w in reversed(list(enumerate(enc.word_ids(i)))) if w is not None}.items()
        )
        result.append([out[i, p].tolist() for _, p in first])
    return result


def export_and_load(model: Path, tmp: Path) -> dict[str, Any]:
    jobs = {}
    for task in TASKS:
        folder = tmp / f"export-{task}"
        result = forked_cli.run(
            ["export", str(model), "--task", task, "-o", str(folder)],
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        remote = (folder / "modeling_polytask.py").is_file()
        assert ("trust_remote_code=True" in result.stdout) == remote
        level = "token" if task == "tags" else "sequence"
        jobs[task] = {"dir": str(folder), "inputs": inputs(task), "level": level}
    loaded: dict[str, Any] = load_without_polytask(jobs, tmp)
    return loaded


def max_diffs(model: Path, tmp: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Compare every exported task with ``polytask predict`` and the model's logits;
    returns the largest |logit diff| and the class each task loaded as."""
    loaded = export_and_load(model, tmp)
    diffs = {}
    for task in TASKS:
        rows = inputs(task)
        theirs = loaded[task]["rows"]
        ours = polytask_predict(model, task, rows, tmp)
        logits = polytask_logits(model, task, rows)
        diff = 0.0
        for mine, exported, row_logits in zip(ours, theirs, logits, strict=True):
            got = torch.tensor(exported["logits"], dtype=torch.float64)
            want = torch.tensor(row_logits, dtype=torch.float64)
            diff = max(diff, float((got - want).abs().max()) if got.numel() else 0.0)
            if task == "tags":
                assert exported["tags"] == mine["tags"]
            elif task == "reg":
                assert abs(got.item() - mine["value"]) <= TOL * max(1.0, abs(mine["value"]))
            else:
                multi = task == "topics"
                probs = got.sigmoid() if multi else got.softmax(-1)
                scores = torch.tensor(list(mine["scores"].values()), dtype=torch.float64)
                assert float((probs - scores).abs().max()) <= TOL, (task, probs, scores)
                names = list(mine["scores"])
                if multi:
                    assert [names[i] for i in (probs >= 0.5).nonzero().flatten()] == mine["labels"]
                else:
                    assert names[int(probs.argmax())] == mine["label"]
        assert diff <= TOL, (task, diff)
        diffs[task] = diff
    problem = {k: v["problem_type"] for k, v in loaded.items()}
    assert problem == {
        "sent": "single_label_classification",
        "nli": "single_label_classification",
        "topics": "multi_label_classification",
        "reg": "regression",
        "tags": None,
    }
    assert loaded["tags"]["class"] == "PolytaskForTokenClassification"
    return diffs, {task: loaded[task]["class"] for task in TASKS}


def test_hard_sharing_exports_every_task_type(served_model: Path, tmp_path: Path) -> None:
    diffs, classes = max_diffs(served_model, tmp_path)
    print("max |logit diff| hard:", diffs)
    assert set(classes.values()) == {
        "PolytaskForSequenceClassification",
        "PolytaskForTokenClassification",
    }  # mean pooling: no stock class computes it


def test_cls_pooling_exports_sequence_tasks_as_electra(tiny_encoder: Path, tmp_path: Path) -> None:
    """[CLS]-pooled sequence tasks load as the stock ElectraForSequenceClassification,
    without remote code (tagging keeps polytask's modeling file: a token classifier of
    transformers is one linear layer)."""
    model = saved_folder(tiny_encoder, tmp_path / "cls", "hard", pooling="cls")
    diffs, classes = max_diffs(model, tmp_path)
    print("max |logit diff| hard, cls pooling:", diffs)
    for task in ("sent", "nli", "topics", "reg"):
        assert classes[task] == "ElectraForSequenceClassification"
        assert not (tmp_path / f"export-{task}" / "modeling_polytask.py").exists()


def saved_folder(encoder_dir: Path, out: Path, arch: str, **kwargs: Any) -> Path:
    """``arch`` on the tiny encoder with random heads (and LoRA adapters), saved."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    with torch.random.fork_rng():
        torch.manual_seed(1)
        encoder = AutoModel.from_pretrained(str(encoder_dir))
        # no mlm task: lora's load_weights reports its tied decoder missing (a lora bug)
        tasks = [s for s in specs(len(tokenizer), 0) if s.type != "lm"]
        model = ARCHITECTURES.get(arch)(encoder, tasks, **kwargs)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name or not name.startswith("encoder."):
                    p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    meta = {"config": {"encoder": {"max_length": 24}}}
    ckpt.save_model_folder(out, model, tokenizer, meta)
    return out


def test_lora_exports_with_its_adapters_merged(tiny_encoder: Path, tmp_path: Path) -> None:
    model = saved_folder(tiny_encoder, tmp_path / "lora", "lora", r=4, shared_adapter=True)
    diffs, _ = max_diffs(model, tmp_path)
    print("max |logit diff| lora:", diffs)


@pytest.mark.parametrize("arch", ["mmoe", "film", "soft"])
def test_other_architectures_are_refused_in_one_line(
    tiny_encoder: Path, tmp_path: Path, arch: str
) -> None:
    model = make_model_folder(tiny_encoder, tmp_path / arch, arch)
    result = forked_cli.run(["export", str(model), "--task", "sent", "-o", str(tmp_path / "x")])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"architecture '{arch}' cannot export a single-task model" in lines[0]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("task", "message"),
    [("mlm", "task 'mlm' (lm, auxiliary) cannot export"), ("sentt", "unknown task 'sentt'")],
)
def test_bad_tasks_are_refused_in_one_line(
    served_model: Path, tmp_path: Path, task: str, message: str
) -> None:
    result = forked_cli.run(["export", str(served_model), "-t", task, "-o", str(tmp_path / "x")])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "x").exists()
