"""Predictions from a saved run: shared by ``polytask predict`` and the server.

:meth:`Predictor.run` answers several requests ("jobs") together: single-task jobs share
one forward, each task's rows one segment of the batch; a ``"*"`` job runs every head it
reaches on the same rows (overlapping segments), so each architecture decides what that
costs: one encoder pass for ``hard`` and the expert architectures (``mmoe``, ``switch``,
``cgc``, ``ple``, ``dselect_k``; ``cross_stitch``: one pass of each of its T columns); one
pass per task for the task-conditioned ones (``film``, ``task_embedding``, ``prefix``: the
encoder itself depends on the task) and for ``soft`` (one encoder per task). Instruction
tasks (``causal_lm``) generate their answers greedily: ``{"text": ...}``.

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
from polytask.data.batching import length_chunks
from polytask.errors import InputError, UnknownTaskError
from polytask.predict.folder import model_folder
from polytask.predict.inputs import (
    ALL,
    WHAT,
    Form,
    check_inputs,
    check_list,
    columns,
    star_form,
)
from polytask.registry import did_you_mean
from polytask.segments import Segment
from polytask.tasks import TaskSpec, task_type


@dataclass
class Job:
    """One request: ``task``'s predictions (or every task's, for ``"*"``) on ``inputs``."""

    task: str
    inputs: list[Any]


@dataclass
class _Encoded:
    """Tokenized inputs (unpadded id lists) of one task and the inputs they came from."""

    enc: BatchEncoding
    inputs: list[Any]

    def __len__(self) -> int:
        return len(self.enc["input_ids"])

    def same_rows(self, other: _Encoded) -> bool:
        """Whether the model would see identical rows for both tokenizations."""
        keys = ("input_ids", "attention_mask", "token_type_ids")
        return all(self.enc.get(k) == other.enc.get(k) for k in keys)


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
        """The input form ``task`` takes (see :mod:`polytask.predict.inputs`)."""
        spec = self.spec(task)
        return task_type(spec.type).input_form(spec)

    @torch.inference_mode()
    def generated(self, task: str, inputs: list[Any], batch_size: int = 16) -> list[dict[str, Any]]:
        """The answers of a task whose type generates them (an instruction task:
        ``{"text": ...}``, generated greedily)."""
        spec = self.specs[task]
        length = self.task_lengths.get(task, self.max_length)
        self.forwards += 1
        ttype = task_type(spec.type)
        return ttype.generate(self.model, spec, self.tokenizer, inputs, length, batch_size)

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
        """Every task's inputs (over every job asking for it) are that task's rows."""
        by_task: dict[str, list[Any]] = {}
        for job in jobs:
            by_task.setdefault(job.task, []).extend(job.inputs)
        decoded = {t: self.generated(t, rows) for t, rows in by_task.items() if self._generates(t)}
        encoded = {
            task: self._encode(self.specs[task], rows)
            for task, rows in by_task.items()
            if task not in decoded
        }
        if encoded:
            logits = self._forward([([t], e) for t, e in encoded.items()])
            decoded |= {t: self._decode(self.specs[t], logits[t], e) for t, e in encoded.items()}
        out = []
        for job in jobs:  # jobs of a task take its rows in order
            rows = decoded[job.task]
            out.append(rows[: len(job.inputs)])
            decoded[job.task] = rows[len(job.inputs) :]
        return out

    def _run_star(self, tasks: list[str], inputs: list[Any]) -> list[dict[str, Any]]:
        """Every task in ``tasks`` on the same rows: tasks whose tokenization of the inputs
        is identical read the same rows of one forward; generating tasks generate."""
        decoded = {t: self.generated(t, inputs) for t in tasks if self._generates(t)}
        encoded = {t: self._encode(self.specs[t], inputs) for t in tasks if t not in decoded}
        groups: list[list[str]] = []
        for task in encoded:
            same = next((g for g in groups if encoded[g[0]].same_rows(encoded[task])), None)
            if same is None:
                groups.append([task])
            else:
                same.append(task)
        if groups:
            logits = self._forward([(group, encoded[group[0]]) for group in groups])
            decoded |= {t: self._decode(self.specs[t], logits[t], encoded[t]) for t in encoded}
        return [{t: decoded[t][i] for t in tasks} for i in range(len(inputs))]

    def _generates(self, task: str) -> bool:
        return task_type(self.specs[task].type).generates

    def _encode(self, spec: TaskSpec, inputs: list[Any]) -> _Encoded:
        """Token ids per input, unpadded (``_forward`` pads each chunk of similar lengths),
        tokenized as in training (``TaskType.encode_inputs``)."""
        length = self.task_lengths.get(spec.name, self.max_length)
        ttype = task_type(spec.type)
        texts, pairs = columns(inputs, ttype.input_form(spec))
        return _Encoded(ttype.encode_inputs(self.tokenizer, texts, pairs, length), inputs)

    def _forward(self, parts: list[tuple[list[str], _Encoded]]) -> dict[str, torch.Tensor]:
        """Each task's logits for every row of its part (the tasks of a part read the same
        rows). Rows are sorted by length and cut into chunks that pad little
        (:func:`length_chunks`): one model call per chunk, each chunk's rows grouped by part
        so that every task's rows are one segment."""
        rows = [(k, i) for k, (_, part) in enumerate(parts) for i in range(len(part))]
        lengths = [len(parts[k][1].enc["input_ids"][i]) for k, i in rows]
        order = sorted(range(len(rows)), key=lengths.__getitem__)
        found: dict[str, dict[int, torch.Tensor]] = {t: {} for tasks, _ in parts for t in tasks}
        for chunk in length_chunks([lengths[j] for j in order]):
            picked = sorted(rows[order[j]] for j in chunk)  # grouped by part, rows in order
            segments, start = [], 0
            for k in dict.fromkeys(k for k, _ in picked):
                n = sum(1 for kk, _ in picked if kk == k)
                segments += [Segment(t, start, start + n) for t in parts[k][0]]
                start += n
            ids, mask, types = self._pad(
                [parts[k][1].enc for k, _ in picked], [i for _, i in picked]
            )
            self.forwards += 1
            logits = self.model(ids, mask, types, segments)
            for seg in segments:
                for row, (_, i) in zip(logits[seg.task], picked[seg.start : seg.stop], strict=True):
                    found[seg.task][i] = row
        return {
            task: _stack_rows([by_row[i] for i in sorted(by_row)]) for task, by_row in found.items()
        }

    def _pad(
        self, encs: list[BatchEncoding], index: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Rows ``encs[r][index[r]]`` right-padded to the longest: ids, mask, token types."""
        width = max(len(e["input_ids"][i]) for e, i in zip(encs, index, strict=True))
        ids = torch.full((len(encs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encs), width), dtype=torch.long)
        with_types = "token_type_ids" in encs[0]
        types = torch.zeros((len(encs), width), dtype=torch.long) if with_types else None
        for r, (enc, i) in enumerate(zip(encs, index, strict=True)):
            n = len(enc["input_ids"][i])
            ids[r, :n] = torch.tensor(enc["input_ids"][i])
            mask[r, :n] = 1
            if types is not None:
                types[r, :n] = torch.tensor(enc["token_type_ids"][i])
        device = self.device
        return ids.to(device), mask.to(device), None if types is None else types.to(device)

    def _decode(self, spec: TaskSpec, logits: torch.Tensor, part: _Encoded) -> list[dict[str, Any]]:
        return task_type(spec.type).decode_inputs(spec, logits, part.enc, part.inputs)


def _stack_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-row logits; token-level rows (``[L, C]``) are right-padded to one length."""
    if rows[0].dim() == 1:
        return torch.stack(rows)
    width = max(r.shape[0] for r in rows)
    return torch.stack([F.pad(r, (0, 0, 0, width - r.shape[0])) for r in rows])
