"""Predictions from a saved run: shared by ``polytask predict`` and the server.

:meth:`Predictor.run` answers several requests ("jobs") together: single-task jobs share
one forward, each task's rows one segment of the batch; a ``"*"`` job runs every head it
reaches on the same rows (overlapping segments), so each architecture decides what that
costs: one encoder pass for ``hard``, ``mmoe`` and ``switch``; one pass per task for the
task-conditioned ones (``film``, ``task_embedding``, ``prefix``: the encoder itself depends
on the task) and for ``soft`` (one encoder per task).

The tokenizer is only ever called from the thread that calls :meth:`run` (fast tokenizers
are not safe to share between threads): the server runs every batch in one worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import BatchEncoding

from polytask.checkpoint import load_model_folder
from polytask.data.batching import Segment
from polytask.errors import InputError, RunDirError, UnknownTaskError
from polytask.predict_inputs import ALL, WHAT, Form, check_inputs, check_list, star_form
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


@dataclass
class Job:
    """One request: ``task``'s predictions (or every task's, for ``"*"``) on ``inputs``."""

    task: str
    inputs: list[Any]


@dataclass
class _Encoded:
    """One task's (or several tasks') tokenized rows and, for tagging, their words."""

    enc: BatchEncoding
    words: list[list[str]]


class Predictor:
    """A trained model ready to answer requests for any of its non-auxiliary tasks.

    >>> predictor = Predictor("runs/demo")                        # doctest: +SKIP
    >>> predictor.predict("sentiment", ["what a great day"])      # doctest: +SKIP
    [{'label': 'positive', 'scores': {'negative': 0.02, ...}}]
    """

    def __init__(
        self, run_dir: str | Path, device: str | torch.device = "cpu", max_length: int | None = None
    ) -> None:
        self.folder = model_folder(run_dir)
        self.model, self.tokenizer, self.meta = load_model_folder(self.folder)
        self.device = torch.device(device)
        self.model.to(self.device)
        encoder_cfg = self.meta.get("config", {}).get("encoder", {})
        self.max_length = max_length or int(encoder_cfg.get("max_length", 128))
        self.task_lengths = {
            t["name"]: int(t.get("max_length") or self.max_length)
            for t in self.meta.get("config", {}).get("tasks", [])
        }
        self.specs: dict[str, TaskSpec] = dict(self.model.specs)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        self.forwards = 0  # model forwards so far (the server reports it)

    @property
    def tasks(self) -> list[str]:
        """Tasks that can be served (auxiliary tasks are trained, never served)."""
        return [n for n, s in self.specs.items() if not s.auxiliary]

    @property
    def architecture(self) -> str:
        return str(self.meta.get("architecture", {}).get("name", "unknown"))

    def spec(self, task: str) -> TaskSpec:
        if task not in self.tasks:
            raise UnknownTaskError(
                f"unknown task '{task}'{did_you_mean(task, self.tasks)}; "
                f"tasks: {', '.join(self.tasks)} (or '*' for all)"
            )
        return self.specs[task]

    def form(self, task: str) -> Form:
        """The input form ``task`` takes (see :mod:`polytask.predict_inputs`)."""
        spec = self.spec(task)
        return "words" if spec.type == "tagging" else "pair" if spec.pair else "text"

    def star_tasks(self, form: Form) -> list[str]:
        """The tasks a ``"*"`` request of texts (or of pairs) reaches."""
        pairs = form == "pair"
        return [t for t in self.tasks if (self.form(t) == "pair") == pairs]

    def check(
        self,
        task: str,
        inputs: Any,
        max_inputs: int | None = None,
        max_chars: int | None = None,
    ) -> list[str]:
        """Validate a job before it is queued; return the tasks it predicts.

        Raises :class:`UnknownTaskError` for a task not served, :class:`InputError` for a
        missing, malformed or oversized input (naming it).
        """
        if task != ALL:
            check_inputs(inputs, self.form(task), max_inputs, max_chars)
            return [task]
        check_list(inputs, max_inputs)
        form = star_form(inputs)
        tasks = self.star_tasks(form)
        if not tasks:
            raise InputError(f"task '*': no task of this model takes {WHAT[form]}")
        check_inputs(inputs, form, max_inputs, max_chars)
        return tasks

    def predict(self, task: str, inputs: list[Any], batch_size: int = 64) -> list[dict[str, Any]]:
        """One prediction per input: label + scores, value, or word tags + entity spans; for
        ``task="*"`` a ``{task: prediction}`` dict per input."""
        self.check(task, inputs)
        out: list[dict[str, Any]] = []
        for start in range(0, len(inputs), batch_size):
            out += self.run([Job(task, inputs[start : start + batch_size])])[0]
        return out

    @torch.inference_mode()
    def run(self, jobs: list[Job]) -> list[list[dict[str, Any]]]:
        """Every job's predictions (jobs already :meth:`check`-ed), from one forward for all
        single-task jobs and one per input form (and tokenization) for ``"*"`` jobs."""
        results: list[list[dict[str, Any]]] = [[] for _ in jobs]
        single = [i for i, job in enumerate(jobs) if job.task != ALL]
        if single:
            for i, preds in zip(single, self._run_single([jobs[i] for i in single]), strict=True):
                results[i] = preds
        for form in ("text", "pair"):
            star = [i for i, j in enumerate(jobs) if j.task == ALL and star_form(j.inputs) == form]
            if star:
                inputs = [x for i in star for x in jobs[i].inputs]
                preds = self._run_star(self.star_tasks(form), inputs)
                for i in star:
                    results[i], preds = preds[: len(jobs[i].inputs)], preds[len(jobs[i].inputs) :]
        return results

    def _run_single(self, jobs: list[Job]) -> list[list[dict[str, Any]]]:
        """One forward: each task's inputs (over every job asking for it) are one segment."""
        by_task: dict[str, list[Any]] = {}
        for job in jobs:
            by_task.setdefault(job.task, []).extend(job.inputs)
        encoded = {task: self._encode(self.specs[task], rows) for task, rows in by_task.items()}
        logits = self._forward(list(encoded.items()))
        decoded = {t: self._decode(self.specs[t], logits[t], e) for t, e in encoded.items()}
        out = []
        for job in jobs:  # jobs of a task take its rows in order
            rows = decoded[job.task]
            out.append(rows[: len(job.inputs)])
            decoded[job.task] = rows[len(job.inputs) :]
        return out

    def _run_star(self, tasks: list[str], inputs: list[Any]) -> list[dict[str, Any]]:
        """Every task in ``tasks`` on the same rows: tasks whose tokenization of the inputs
        is identical share a forward (each reads every row)."""
        encoded = {task: self._encode(self.specs[task], inputs) for task in tasks}
        groups: list[list[str]] = []
        for task in tasks:
            same = next(
                (g for g in groups if _same_rows(encoded[g[0]].enc, encoded[task].enc)), None
            )
            if same is None:
                groups.append([task])
            else:
                same.append(task)
        decoded: dict[str, list[dict[str, Any]]] = {}
        for group in groups:
            logits = self._forward_shared(encoded[group[0]], group)
            decoded.update({t: self._decode(self.specs[t], logits[t], encoded[t]) for t in group})
        return [{t: decoded[t][i] for t in tasks} for i in range(len(inputs))]

    def _encode(self, spec: TaskSpec, inputs: list[Any]) -> _Encoded:
        length = self.task_lengths.get(spec.name, self.max_length)
        kwargs: dict[str, Any] = {"truncation": True, "max_length": length, "padding": True}
        if spec.type == "tagging":
            words = [x.split() if isinstance(x, str) else [str(w) for w in x] for x in inputs]
            enc = self.tokenizer(words, is_split_into_words=True, return_tensors="pt", **kwargs)
            return _Encoded(enc, words)
        if spec.pair:
            firsts, seconds = [x[0] for x in inputs], [x[1] for x in inputs]
            return _Encoded(self.tokenizer(firsts, seconds, return_tensors="pt", **kwargs), [])
        texts = [str(x) for x in inputs]
        return _Encoded(self.tokenizer(texts, return_tensors="pt", **kwargs), [])

    def _forward(self, parts: list[tuple[str, _Encoded]]) -> dict[str, torch.Tensor]:
        """One model call on the parts padded to one width and stacked, task by task."""
        ids, mask, types = self._stack([p.enc for _, p in parts])
        segments, start = [], 0
        for task, part in parts:
            n = len(part.enc["input_ids"])
            segments.append(Segment(task, start, start + n))
            start += n
        self.forwards += 1
        return dict(self.model(ids, mask, types, segments))

    def _forward_shared(self, part: _Encoded, tasks: list[str]) -> dict[str, torch.Tensor]:
        """One model call in which every task in ``tasks`` reads every row of ``part``."""
        ids, mask, types = self._stack([part.enc])
        self.forwards += 1
        return dict(self.model(ids, mask, types, [Segment(t, 0, len(ids)) for t in tasks]))

    def _stack(
        self, encs: list[BatchEncoding]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        width = max(e["input_ids"].shape[1] for e in encs)

        def stack(key: str, fill: int) -> torch.Tensor:
            rows = [F.pad(e[key], (0, width - e[key].shape[1]), value=fill) for e in encs]
            return torch.cat(rows).to(self.device)

        types = stack("token_type_ids", 0) if "token_type_ids" in encs[0] else None
        return stack("input_ids", self.pad_id), stack("attention_mask", 0), types

    def _decode(self, spec: TaskSpec, logits: torch.Tensor, part: _Encoded) -> list[dict[str, Any]]:
        ttype = task_type(spec.type)
        if not isinstance(ttype, Tagging):
            return list(ttype.decode(spec, logits))
        word_ids = [part.enc.word_ids(i) for i in range(len(part.words))]
        tags = ttype.word_tags(logits, word_ids, [len(w) for w in part.words])
        return [ttype.decode_words(spec, w, t) for w, t in zip(part.words, tags, strict=True)]


def _same_rows(a: BatchEncoding, b: BatchEncoding) -> bool:
    """Whether two tokenizations of the same inputs give the model identical tensors."""
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return all((k in a) == (k in b) and (k not in a or torch.equal(a[k], b[k])) for k in keys)
