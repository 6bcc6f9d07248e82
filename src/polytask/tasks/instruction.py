"""Instruction tasks for a causal LM: a prompt in, an answer out, loss on the answer only.

Each example becomes ``(prompt, answer)`` (see :mod:`polytask.tasks.prompts`): the rows the
model sees are ``prompt + answer`` and the labels are the answer's token ids, ``-100`` on the
prompt, so the next-token cross-entropy counts answer tokens only (FLAN-style instruction
tuning, Wei et al. 2022; Chung et al. 2022). Evaluation per task: the token-level loss on
the answers (``loss``, ``perplexity``) and ``accuracy``, the share of answers exactly right,
either chosen among the task's allowed answers by log-likelihood (``choices``, also
``macro_f1`` over the answers) or generated greedily (``generate``; entity answers also get
``entity_f1`` over ``type: words`` items).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from polytask.errors import ConfigError, DataError, PolytaskError
from polytask.tasks import prompts
from polytask.tasks.base import (
    IGNORE_INDEX,
    TASK_TYPES,
    OwnPredictions,
    TaskOptions,
    TaskSpec,
    TaskType,
    Where,
    is_missing,
)
from polytask.tasks.cells import check_tag_names, read_sequences
from polytask.tasks.classification import check_class_column

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase


def normalize(text: str) -> str:
    """Lower case, inner whitespace collapsed, surrounding space and final period dropped."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".").strip().lower()


def entity_items(answer: str) -> set[str]:
    """The ``type: words`` items of an entity answer (``none``: no item)."""
    items = {normalize(part) for part in answer.split(";")}
    return {i for i in items if i and i != prompts.NONE_ANSWER}


@TASK_TYPES.register("instruction")
class Instruction(TaskType):
    """A prompt-answer task for a causal LM (``architecture: causal_lm``): loss on the answer
    tokens; accuracy by answer log-likelihood (closed answer set) or greedy generation."""

    level: ClassVar[Literal["sequence", "token"]] = "token"
    primary_metric: ClassVar[str] = "accuracy"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss", "perplexity"})
    eval_rows: ClassVar[int | None] = 16
    reader: ClassVar[str] = "instruction"
    generates: ClassVar[bool] = True

    def primary(self, spec: TaskSpec) -> str:
        """``entity_f1`` for entity answers (exact match rewards answering ``none`` to the
        many texts without one), else ``accuracy``."""
        return "entity_f1" if spec.options.get("answer") == "entities" else self.primary_metric

    def fit_spec(self, config: TaskOptions, train_values: Sequence[Any], where: Where) -> TaskSpec:
        """The allowed answers (``choices``) and the prompt settings, saved with the model."""
        ins = config.instruction
        if ins is None:
            raise ConfigError(f"tasks.{config.name}: an instruction task needs 'instruction:'")
        labels: list[str] = []
        if ins.answer == "label":
            raw = config.labels or sorted({str(v) for v in train_values if v not in (None, "")})
            labels = list(dict.fromkeys((ins.answers or {}).get(v, v) for v in raw))
        elif ins.answer == "mentions":
            labels = [(ins.answers or {}).get(w, w) for w in ("yes", "no")]
        if ins.mode == "choices" and len(labels) < 2:
            raise DataError(f"{where(-1)}: evaluate 'choices' needs at least two answers")
        return TaskSpec(
            name=config.name,
            type="instruction",
            labels=labels if ins.mode == "choices" else [],
            critical=bool(config.critical),
            weight=config.weight,
            held_out=config.held_out,
            options={**ins.model_dump(), "mode": ins.mode},
        )

    def read_texts(self, config: TaskOptions, values: Sequence[Any], where: Where) -> list[Any]:
        """Texts as written: strings for a label answer; words (a list, or a string split on
        whitespace) for an entity answer, as a tagging task reads them."""
        if config.instruction.answer == "label":
            return super().read_texts(config, values, where)
        read_sequences(values, where, "words", empty=False)
        return list(values)

    def read_labels(
        self, config: TaskOptions, values: Sequence[Any], where: Where, text_cells: bool
    ) -> list[Any]:
        """Labels as the answer reads them (missing: ``None``): class labels (strings or
        integer ids) for a label answer; tags (a tag string split on whitespace) else."""
        if config.instruction.answer == "label":
            check_class_column(values, False, config.label_separator, where)
            return [None if is_missing(v) else v for v in values]
        read_sequences(values, where, "tags", empty=True)
        check_tag_names(values, where)
        return [None if is_missing(v) else v.split() if isinstance(v, str) else v for v in values]

    def bind_tokenizer(self, spec: TaskSpec, tokenizer: PreTrainedTokenizerBase) -> TaskSpec:
        """Record the token ids of each allowed answer and of the tokens that end one."""
        system = spec.options.get("system")
        spec.options["choice_ids"] = [prompts.answer_ids(tokenizer, a, system) for a in spec.labels]
        spec.options["stop_ids"] = prompts.stop_ids(tokenizer, system)
        return spec

    def settings(self, spec: TaskSpec) -> prompts.InstructionConfig:
        """The task's prompt settings as saved in its spec."""
        keys = prompts.InstructionConfig.model_fields
        return prompts.InstructionConfig(**{k: v for k, v in spec.options.items() if k in keys})

    def encode(self, spec: TaskSpec, value: Any, row: int, where: Where) -> Any:
        """A reference answer: with a closed answer set it must be one of them."""
        if value is not None and spec.labels and value not in spec.labels:
            raise DataError(
                f"{where(row)}: answer '{value}' is not one of the task's answers "
                f"({', '.join(spec.labels)}); set 'labels' or 'instruction.answers'"
            )
        return value

    def num_outputs(self, spec: TaskSpec) -> int:
        return 0  # the decoder's own vocabulary; no head

    def collate(self, spec: TaskSpec, labels: list[Any]) -> torch.Tensor:
        width = max(len(y) for y in labels)
        return torch.tensor([y + [IGNORE_INDEX] * (width - len(y)) for y in labels])

    def loss(self, spec: TaskSpec, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy over the answer tokens (position t predicts t + 1).

        ``logits`` are ``[rows, length, vocabulary]``, or (from a causal LM given the labels)
        ``[answer tokens, vocabulary]``: the rows' positions where ``labels[:, 1:]`` is an
        answer token, in row-major order."""
        labels = labels.to(logits.device)
        if logits.dim() == 2:
            targets = labels[:, 1:][labels[:, 1:] != IGNORE_INDEX]
            if targets.numel() != logits.shape[0]:
                raise ValueError(f"{logits.shape[0]} answer logits for {targets.numel()} tokens")
            if targets.numel() == 0:
                return logits.sum() * 0.0
            return F.cross_entropy(logits.float(), targets)
        width = min(logits.shape[1], labels.shape[1])
        shifted, targets = logits[:, : width - 1], labels[:, 1:width]
        picked = targets != IGNORE_INDEX
        if not bool(picked.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(shifted[picked].float(), targets[picked])

    def loss_units(self, spec: TaskSpec, labels: torch.Tensor) -> int:
        return int((labels[:, 1:] != IGNORE_INDEX).sum())

    def loss_metrics(self, spec: TaskSpec, loss: float) -> dict[str, float]:
        return {"perplexity": math.exp(min(loss, 50.0))}

    def predict_indices(self, spec: TaskSpec, logits: torch.Tensor) -> list[Any]:
        return [None] * len(logits)  # answers come from own_predictions

    def own_predictions(
        self,
        model: Any,
        spec: TaskSpec,
        dataset: datasets.Dataset,
        batch_size: int,
        tokenizer: PreTrainedTokenizerBase | None,
    ) -> OwnPredictions:
        """Each example's answer (chosen or generated) and its reference answer. Scoring
        the allowed answers scores the reference too: its negative log-likelihood per token
        is the split's loss, so ``choices`` needs no separate loss forward."""
        refs = list(dataset["answer"])
        prompt_rows = [
            ids[:n] for ids, n in zip(dataset["input_ids"], dataset["prompt_length"], strict=True)
        ]
        scores: list[torch.Tensor] = []
        preds = self.answer(model, spec, prompt_rows, batch_size, tokenizer, scores=scores)
        if spec.options["mode"] != "choices" or not all(r in spec.labels for r in refs):
            return OwnPredictions(preds, refs)
        lengths = [len(c) for c in spec.options["choice_ids"]]
        gold = [spec.labels.index(r) for r in refs]
        nll = -sum(float(s[k]) for s, k in zip(scores, gold, strict=True))
        return OwnPredictions(preds, refs, nll / max(1, sum(lengths[k] for k in gold)))

    def answer(
        self,
        model: Any,
        spec: TaskSpec,
        prompt_rows: list[list[int]],
        batch_size: int,
        tokenizer: PreTrainedTokenizerBase | None,
        mode: Literal["choices", "generate"] | None = None,
        scores: list[torch.Tensor] | None = None,
    ) -> list[str]:
        """The model's answers to tokenized prompts: the likeliest allowed answer
        (``choices``) or the greedy continuation up to an end token (``generate``); ``mode``
        overrides the task's own; ``scores`` (a list) receives each prompt's answer scores."""
        if not hasattr(model, "score_choices"):
            raise ConfigError(f"task '{spec.name}': instruction tasks need architecture causal_lm")
        order = sorted(range(len(prompt_rows)), key=lambda i: len(prompt_rows[i]))
        out: list[str] = [""] * len(prompt_rows)
        found: list[torch.Tensor | None] = [None] * len(prompt_rows)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rows = [prompt_rows[i] for i in chunk]
            if (mode or spec.options["mode"]) == "choices":
                batch_scores = model.score_choices(rows, spec.options["choice_ids"]).cpu()
                answers = [spec.labels[int(k)] for k in batch_scores.argmax(dim=1)]
                for i, row_scores in zip(chunk, batch_scores, strict=True):
                    found[i] = row_scores
            else:
                if tokenizer is None:
                    raise PolytaskError(f"task '{spec.name}': generating needs the tokenizer")
                new = model.generate_greedy(
                    rows, int(spec.options["max_new_tokens"]), spec.options["stop_ids"]
                )
                answers = [
                    str(tokenizer.decode(ids, skip_special_tokens=True)).strip() for ids in new
                ]
            for i, text in zip(chunk, answers, strict=True):
                out[i] = text
        if scores is not None:
            scores.extend(s for s in found if s is not None)
        return out

    def generate(
        self,
        model: Any,
        spec: TaskSpec,
        tokenizer: PreTrainedTokenizerBase,
        inputs: list[Any],
        max_length: int,
        batch_size: int,
    ) -> list[dict[str, Any]]:
        """Served answers, generated greedily: ``{"text": ...}`` per input."""
        rows = self.prompt_rows(spec, tokenizer, [str(x) for x in inputs], max_length)
        texts = self.answer(model, spec, rows, batch_size, tokenizer, "generate")
        return [{"text": text} for text in texts]

    def prompt_rows(
        self, spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int
    ) -> list[list[int]]:
        """Token ids of each text's prompt (serving), the text cut as in training: prompt
        and answer fit ``max_length`` (the longest allowed answer, or ``max_new_tokens`` up
        to half of ``max_length``)."""
        ins = self.settings(spec)
        empty = len(prompts.prompt_ids(tokenizer, ins.template, "", ins.system))
        choices = spec.options.get("choice_ids") or []
        reserve = max(map(len, choices)) if choices else min(ins.max_new_tokens, max_length // 2)
        budget = max(1, max_length - empty - reserve)
        return [
            prompts.prompt_ids(
                tokenizer, ins.template, prompts.fit_text(tokenizer, t, budget), ins.system
            )
            for t in texts
        ]

    def metrics(
        self, spec: TaskSpec, predictions: list[Any], references: list[Any]
    ) -> dict[str, float]:
        pairs = [(str(p), str(r)) for p, r in zip(predictions, references, strict=True) if r]
        if not pairs:
            return {}
        out = {"accuracy": sum(normalize(p) == normalize(r) for p, r in pairs) / len(pairs)}
        if spec.labels:  # a closed answer set: macro F1 too (a skewed yes/no is not 50/50)
            f1s = []
            for label in spec.labels:
                hit = sum(p == label and r == label for p, r in pairs)
                total = sum(p == label for p, _ in pairs) + sum(r == label for _, r in pairs)
                f1s.append(2 * hit / total if total else 0.0)
            out["macro_f1"] = sum(f1s) / len(f1s)
        if spec.options.get("answer") == "entities":
            hit = predicted = gold = 0
            for p, r in pairs:
                got, want = entity_items(p), entity_items(r)
                hit, predicted, gold = hit + len(got & want), predicted + len(got), gold + len(want)
            # F1 = 2·hits / (predicted + gold); no entity predicted or expected anywhere: 1
            out["entity_f1"] = 2 * hit / (predicted + gold) if predicted + gold else 1.0
        return out

    def decode(self, spec: TaskSpec, logits: torch.Tensor) -> list[Any]:
        raise PolytaskError(f"task '{spec.name}' generates its answers: use Predictor.predict")
