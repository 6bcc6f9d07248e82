"""Load exported task folders with transformers alone and write what they predict.

Run by a fresh interpreter, by path, never imported (``python .../export_load.py JOBS OUT``):
it checks that ``polytask export`` folders work without polytask. ``JOBS`` is a JSON object
``{task: {"dir": folder, "inputs": [...], "level": "token" | "sequence"}}``; sentence pairs
are ``[a, b]`` lists, tagging inputs lists of words. ``OUT`` gets, per task, each row's
``logits`` (tagging: at each word's first piece, plus its ``tags``, a word cut off being
``'O'``), the class the folder loaded as, whether it needed ``trust_remote_code`` and its
``problem_type``. Every tensor of the file must load and none may be missing.

Used by ``tests/unit/test_export.py`` and ``benchmarks/export_parity.py``.
"""

import sys

if __name__ == "__main__":  # run by path: this folder holds polytask modules, which
    sys.path.pop(0)  # must not shadow a library

import json
import os
from typing import Any

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

BATCH = 32


def _encode(tok: Any, batch: list[Any], token: bool) -> Any:
    if token:
        return tok(
            batch, is_split_into_words=True, truncation=True, padding=True, return_tensors="pt"
        )
    if isinstance(batch[0], list):
        return tok(
            [a for a, _ in batch],
            [b for _, b in batch],
            truncation=True,
            padding=True,
            return_tensors="pt",
        )
    return tok(batch, truncation=True, padding=True, return_tensors="pt")


def _rows(model: Any, enc: Any, logits: Any, batch: list[Any], token: bool) -> list[Any]:
    rows = []
    for i in range(len(batch)):
        if not token:
            rows.append({"logits": logits[i].tolist()})
            continue
        first: dict[int, int] = {}
        for pos, w in enumerate(enc.word_ids(i)):
            if w is not None and w not in first:
                first[w] = pos
        best = logits[i].argmax(-1).tolist()
        tags = [
            model.config.id2label[best[first[w]]] if w in first else "O"
            for w in range(len(batch[i]))
        ]
        rows.append({"tags": tags, "logits": [logits[i, first[w]].tolist() for w in sorted(first)]})
    return rows


def load_task(job: dict[str, Any]) -> dict[str, Any]:
    token = job["level"] == "token"
    auto = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
    remote = os.path.isfile(os.path.join(job["dir"], "modeling_polytask.py"))
    model, info = auto.from_pretrained(
        job["dir"], trust_remote_code=remote, output_loading_info=True
    )
    assert not any(info.values()), info  # every tensor in the file, none missing
    model.eval()
    tok = AutoTokenizer.from_pretrained(job["dir"])
    rows: list[Any] = []
    for start in range(0, len(job["inputs"]), BATCH):
        batch = job["inputs"][start : start + BATCH]
        enc = _encode(tok, batch, token)
        with torch.no_grad():
            logits = model(**enc).logits
        rows.extend(_rows(model, enc, logits, batch, token))
    return {
        "rows": rows,
        "class": type(model).__name__,
        "remote_code": remote,
        "problem_type": model.config.problem_type,
    }


def main(jobs_file: str, out_file: str) -> None:
    with open(jobs_file) as fh:
        jobs = json.load(fh)
    out = {task: load_task(job) for task, job in jobs.items()}
    assert "polytask" not in sys.modules, "the export must load without polytask"
    with open(out_file, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
