"""``polytask export`` against ``polytask``'s own predictions on a trained run.

Every served classification, regression and tagging task of RUN is exported
(``polytask export RUN --task T -o DIR``), loaded in a fresh interpreter with transformers
alone (``trust_remote_code=True`` where the folder has the modeling file; the script asserts
polytask was never imported), and run
on the first ``--n`` texts of the task's validation split. The same texts go through
:class:`polytask.predict.predictor.Predictor` (what ``polytask predict`` prints) and through
the saved model's forward. Per task: the largest absolute difference of the logits (at each
word's first piece for tagging; in target units for regression), of the predicted scores,
and whether every label / tag / value agrees. Writes ``-o`` (JSON) with the command.

    python benchmarks/export_parity.py runs/demo -o docs/results/export-demo.json [--n 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent


def _shown(run: str | Path) -> str:
    """The run as the written command shows it: repo-relative, else ``RUN`` (no machine paths)."""
    path = Path(run).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else "RUN"


def task_inputs(run: Path, n: int) -> dict[str, tuple[str, list[Any]]]:
    """Each served task's type and the first ``n`` inputs of its validation split."""
    from polytask.config.run import load_config
    from polytask.data.read import read_table, split_paths

    config = load_config(run / "config.yaml")
    out = {}
    for task in config.tasks:
        if task.auxiliary or task.type not in ("classification", "regression", "tagging"):
            continue
        cols = task.columns
        needed = [c for c in (cols.text, cols.text_pair) if c is not None]
        source = split_paths(task)["validation"]
        table = read_table(source, (cols.text, cols.label), needed, "validation")
        texts = table.columns[cols.text][:n]
        if cols.text_pair is not None:
            texts = [[a, b] for a, b in zip(texts, table.columns[cols.text_pair], strict=False)]
        out[task.name] = (task.type, texts)
    return out


def own_logits(predictor: Any, task: str, texts: list[Any]) -> list[list[Any]]:
    """The saved model's logits for ``texts`` (tagging: at each word's first piece)."""
    from polytask.segments import Segment

    spec, tok = predictor.spec(task), predictor.tokenizer
    length = predictor.task_lengths.get(task, predictor.max_length)
    rows: list[list[Any]] = []
    for start in range(0, len(texts), 32):
        batch = texts[start : start + 32]
        kw: dict[str, Any] = {"truncation": True, "max_length": length, "padding": True}
        if spec.type == "tagging":
            enc = tok(batch, is_split_into_words=True, return_tensors="pt", **kw)
        elif spec.pair:
            pairs = ([a for a, _ in batch], [b for _, b in batch])
            enc = tok(*pairs, return_tensors="pt", **kw)
        else:
            enc = tok(batch, return_tensors="pt", **kw)
        with torch.no_grad():
            logits = predictor.model.forward_rows(
                enc["input_ids"],
                enc["attention_mask"],
                enc.get("token_type_ids"),
                [Segment(task, 0, len(batch))],
            )[task].double()
        if spec.type == "regression":
            logits = logits * float(spec.target_std or 1.0) + float(spec.target_mean or 0.0)
        for i in range(len(batch)):
            if spec.type != "tagging":
                rows.append(logits[i].tolist())
                continue
            first: dict[int, int] = {}
            for pos, w in enumerate(enc.word_ids(i)):
                if w is not None and w not in first:
                    first[w] = pos
            rows.append([logits[i, first[w]].tolist() for w in sorted(first)])
    return rows


def compare(predictor: Any, task: str, texts: list[Any], exported: list[Any]) -> dict[str, Any]:
    """Largest |logit| and |score| differences, and whether every prediction agrees."""
    spec = predictor.spec(task)
    ours = own_logits(predictor, task, texts)
    printed = predictor.predict(task, texts)  # what `polytask predict` writes
    logit_diff = score_diff = 0.0
    agree = True
    for mine, theirs, shown in zip(ours, exported, printed, strict=True):
        a, b = torch.tensor(mine, dtype=torch.float64), torch.tensor(theirs, dtype=torch.float64)
        if a.numel():
            logit_diff = max(logit_diff, float((a - b).abs().max()))
        if spec.type == "tagging":
            tags = [spec.labels[int(i)] for i in b.argmax(-1).tolist()] if b.numel() else []
            agree &= tags == shown["tags"][: len(tags)]
        elif spec.type == "regression":
            score_diff = max(score_diff, abs(b.item() - shown["value"]))
        else:
            probs = b.sigmoid() if spec.multi_label else b.softmax(-1)
            scores = torch.tensor(list(shown["scores"].values()), dtype=torch.float64)
            score_diff = max(score_diff, float((probs - scores).abs().max()))
            if spec.multi_label:
                agree &= [spec.labels[i] for i in (probs >= 0.5).nonzero().flatten()] == shown[
                    "labels"
                ]
            else:
                agree &= spec.labels[int(probs.argmax())] == shown["label"]
    return {
        "type": spec.type,
        "inputs": len(texts),
        "max_abs_logit_diff": logit_diff,
        "max_abs_score_diff": score_diff,
        "predictions_agree": bool(agree),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    from polytask.predict.export import export_task, load_without_polytask
    from polytask.predict.predictor import Predictor

    inputs = task_inputs(args.run, args.n)
    with tempfile.TemporaryDirectory() as tmp:
        jobs = {}
        for task, (ttype, texts) in inputs.items():
            folder = Path(tmp) / task
            export_task(args.run, task, folder)
            level = "token" if ttype == "tagging" else "sequence"
            jobs[task] = {"dir": str(folder), "inputs": texts, "level": level}
        loaded = load_without_polytask(jobs, Path(tmp))
    predictor = Predictor(args.run)
    tasks = {}
    for task, (_, texts) in inputs.items():
        tasks[task] = compare(predictor, task, texts, [r["logits"] for r in loaded[task]["rows"]])
        tasks[task].update({k: loaded[task][k] for k in ("class", "remote_code", "problem_type")})
    result = {
        "command": (
            f"python benchmarks/export_parity.py {_shown(args.run)} -o {args.output} --n {args.n}"
        ),
        "architecture": predictor.architecture,
        "loaded_with": "a fresh python with transformers only (polytask never imported); "
        "trust_remote_code=True where the folder has modeling_polytask.py",
        "tasks": tasks,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
