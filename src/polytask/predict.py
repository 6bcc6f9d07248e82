"""Predictions from a saved run: shared by ``polytask predict`` and the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from polytask.checkpoint import load_model_folder
from polytask.data.batching import Segment
from polytask.errors import PolytaskError, RunDirError
from polytask.registry import did_you_mean
from polytask.tasks import TaskSpec, task_type
from polytask.tasks.tagging import Tagging


def model_folder(run_or_model_dir: str | Path) -> Path:
    """Accept a run directory (uses its ``model/``) or a model folder itself."""
    path = Path(run_or_model_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory not found: {path}")
    if (path / "model" / "polytask.json").is_file():
        return path / "model"
    if (path / "polytask.json").is_file():
        return path
    raise RunDirError(f"{path}: no trained model (model/polytask.json) in this directory")


class Predictor:
    """A trained model ready to answer requests for any of its non-auxiliary tasks."""

    def __init__(
        self, run_dir: str | Path, device: str | torch.device = "cpu", max_length: int | None = None
    ) -> None:
        self.model, self.tokenizer, self.meta = load_model_folder(model_folder(run_dir))
        self.device = torch.device(device)
        self.model.to(self.device)
        encoder_cfg = self.meta.get("config", {}).get("encoder", {})
        self.max_length = max_length or int(encoder_cfg.get("max_length", 128))
        self.task_lengths = {
            t["name"]: int(t.get("max_length") or self.max_length)
            for t in self.meta.get("config", {}).get("tasks", [])
        }
        self.specs: dict[str, TaskSpec] = dict(self.model.specs)

    @property
    def tasks(self) -> list[str]:
        """Tasks that can be served (auxiliary tasks are trained, never served)."""
        return [n for n, s in self.specs.items() if not s.auxiliary]

    def spec(self, task: str) -> TaskSpec:
        if task not in self.tasks:
            raise PolytaskError(
                f"unknown task '{task}'{did_you_mean(task, self.tasks)}; "
                f"tasks: {', '.join(self.tasks)}"
            )
        return self.specs[task]

    def _encode(
        self, spec: TaskSpec, inputs: list[Any]
    ) -> tuple[dict[str, torch.Tensor], Any, list[list[str]]]:
        length = self.task_lengths.get(spec.name, self.max_length)
        if spec.type == "tagging":
            words = [x.split() if isinstance(x, str) else [str(w) for w in x] for x in inputs]
            enc = self.tokenizer(
                words,
                is_split_into_words=True,
                truncation=True,
                max_length=length,
                padding=True,
                return_tensors="pt",
            )
            return enc, enc, words
        if spec.pair:
            firsts, seconds = [x[0] for x in inputs], [x[1] for x in inputs]
            enc = self.tokenizer(
                firsts,
                seconds,
                truncation=True,
                max_length=length,
                padding=True,
                return_tensors="pt",
            )
        else:
            enc = self.tokenizer(
                [str(x) for x in inputs],
                truncation=True,
                max_length=length,
                padding=True,
                return_tensors="pt",
            )
        return enc, enc, []

    @torch.inference_mode()
    def predict(self, task: str, inputs: list[Any], batch_size: int = 64) -> list[dict[str, Any]]:
        """One prediction per input: label + scores, value, or word tags + entity spans."""
        spec = self.spec(task)
        ttype = task_type(spec.type)
        out: list[dict[str, Any]] = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            enc, raw, words = self._encode(spec, chunk)
            ids = enc["input_ids"].to(self.device)
            mask = enc["attention_mask"].to(self.device)
            types = enc.get("token_type_ids")
            segs = [Segment(task, 0, len(chunk))]
            logits = self.model(ids, mask, None if types is None else types.to(self.device), segs)[
                task
            ]
            if isinstance(ttype, Tagging):
                starts = [Tagging.word_starts(raw.word_ids(i)) for i in range(len(chunk))]
                tags = ttype.word_predictions(logits, starts, [len(w) for w in words])
                out += [ttype.decode_words(spec, w, t) for w, t in zip(words, tags, strict=True)]
            else:
                out += ttype.decode(spec, logits)
        return out
