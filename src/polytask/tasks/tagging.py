"""Token tagging (NER, POS): word-level tags aligned to each word's first word piece."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from polytask.errors import DataError
from polytask.tasks.base import (
    IGNORE_INDEX,
    TASK_TYPES,
    ExportForm,
    InputForm,
    TaskOptions,
    TaskSpec,
    TaskType,
    Where,
    describe,
    is_missing,
)
from polytask.tasks.cells import check_tag_names, read_sequences

if TYPE_CHECKING:
    from transformers import BatchEncoding, PreTrainedTokenizerBase

__all__ = ["Tagging", "check_tag_names", "read_sequences"]


def _tags(value: Any, row: int, where: Where) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise DataError(
        f"{where(row)}: tags must be a list of strings or a space-separated string, "
        f"got {describe(value)}"
    )


@TASK_TYPES.register("tagging")
class Tagging(TaskType):
    """Cross-entropy on the first word piece of each word; other pieces are ignored.

    Metrics: entity-level precision, recall and F1 (seqeval, CoNLL scheme) over words;
    words cut off by ``max_length`` count as predicted ``O`` so truncation is never hidden.
    """

    level: ClassVar[Literal["sequence", "token"]] = "token"
    primary_metric: ClassVar[str] = "f1"
    extra_columns: ClassVar[tuple[str, ...]] = ("word_starts", "n_words", "word_labels")

    def export_form(self, spec: TaskSpec) -> ExportForm:
        return ExportForm(tuple(spec.labels), None)

    def fit_spec(self, config: TaskOptions, train_values: Sequence[Any], where: Where) -> TaskSpec:
        if config.labels is not None:
            labels = list(config.labels)
        else:
            seen: set[str] = set()
            for i, value in enumerate(train_values):
                if not is_missing(value):
                    seen.update(_tags(value, i, where))
            # "O" first keeps the outside tag at index 0 for readability of saved configs
            labels = sorted(seen, key=lambda t: (t != "O", t[2:], t))
        if not labels:
            raise DataError(f"{where(-1)}: no tags found in the training split")
        return TaskSpec(
            name=config.name,
            type="tagging",
            labels=labels,
            auxiliary=config.auxiliary,
            critical=config.critical is not False,  # None: not resolved by a RunConfig
            weight=config.weight,
        )

    def read_texts(self, config: TaskOptions, values: Sequence[Any], where: Where) -> list[Any]:
        """The words of each row: a list of strings, or a string split on whitespace (one
        form per column; an empty row is refused)."""
        read_sequences(values, where, "words", empty=False)
        return [v.split() if isinstance(v, str) else v for v in values]

    def read_labels(
        self, config: TaskOptions, values: Sequence[Any], where: Where, text_cells: bool
    ) -> list[Any]:
        """Tags as a list of strings or a space-separated string (one form per column); a
        null or blank cell is an unlabelled row."""
        read_sequences(values, where, "tags", empty=True)
        check_tag_names(values, where)
        return list(values)

    def check_targets(self, texts: Sequence[Any], targets: Sequence[Any], where: Where) -> None:
        """One tag per word in every labelled row."""
        for i, (words, y) in enumerate(zip(texts, targets, strict=True)):
            if y is not None and len(y) != len(words):
                raise DataError(f"{where(i)}: {len(y)} tags for {len(words)} words")

    def input_form(self, spec: TaskSpec) -> InputForm:
        return "words"

    @staticmethod
    def words(inputs: list[Any]) -> list[list[str]]:
        """Each input's words: a text split on whitespace, or its list of words."""
        return [x.split() if isinstance(x, str) else [str(w) for w in x] for x in inputs]

    def encode_inputs(
        self,
        tokenizer: PreTrainedTokenizerBase,
        texts: list[Any],
        pairs: list[Any] | None,
        max_length: int,
    ) -> BatchEncoding:
        """Word-level inputs (``is_split_into_words``): each word's pieces stay one word."""
        return tokenizer(
            self.words(texts), is_split_into_words=True, truncation=True, max_length=max_length
        )

    def target_columns(
        self, encoding: BatchEncoding, texts: list[Any], targets: list[Any]
    ) -> dict[str, list[Any]]:
        """Tags aligned to each word's first piece, and the word-level columns evaluation
        reads (the tags, where each word starts, how many words)."""
        aligned, starts = [], []
        for row, y in enumerate(targets):
            word_ids = encoding.word_ids(row)
            aligned.append(self.align(word_ids, y))
            starts.append(self.word_starts(word_ids))
        return {
            "target": aligned,
            "word_labels": targets,
            "word_starts": starts,
            "n_words": [len(w) for w in texts],
        }

    def encode(self, spec: TaskSpec, value: Any, row: int, where: Where) -> Any:
        if is_missing(value):
            return None
        index = {label: i for i, label in enumerate(spec.labels)}
        tags = _tags(value, row, where)
        for tag in tags:
            if tag not in index:
                raise DataError(f"{where(row)}: tag {tag!r} is not in the label set {spec.labels}")
        return [index[t] for t in tags]

    def num_outputs(self, spec: TaskSpec) -> int:
        return len(spec.labels)

    @staticmethod
    def align(word_ids: list[int | None], word_labels: list[int] | None) -> list[int]:
        """Token-level labels: each word's label on its first piece, IGNORE_INDEX elsewhere."""
        out = []
        previous = None
        for wid in word_ids:
            if wid is None or wid == previous or word_labels is None:
                out.append(IGNORE_INDEX)
            else:
                out.append(word_labels[wid])
            previous = wid
        return out

    @staticmethod
    def word_starts(word_ids: list[int | None]) -> list[int]:
        """Position of each word's first piece (words cut off by truncation are absent)."""
        return [
            p for p, w in enumerate(word_ids) if w is not None and (p == 0 or word_ids[p - 1] != w)
        ]

    def collate(self, spec: TaskSpec, labels: list[Any]) -> torch.Tensor:
        width = max(len(y) for y in labels)
        return torch.tensor([y + [IGNORE_INDEX] * (width - len(y)) for y in labels])

    def loss(self, spec: TaskSpec, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(logits.device)
        width = min(logits.shape[1], labels.shape[1])
        flat_logits = logits[:, :width].reshape(-1, logits.shape[-1]).float()
        flat_labels = labels[:, :width].reshape(-1)
        total = F.cross_entropy(
            flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        return total / (flat_labels != IGNORE_INDEX).sum().clamp(min=1)

    def loss_units(self, spec: TaskSpec, labels: torch.Tensor) -> int:
        return int((labels != IGNORE_INDEX).sum())

    def word_predictions(
        self, logits: torch.Tensor, word_starts: list[list[int]], n_words: list[int]
    ) -> list[list[int]]:
        """Per example, the predicted tag index of every word (cut-off words: index of 'O' = 0)."""
        best = logits.argmax(dim=-1).cpu().tolist()
        out = []
        for row, starts, n in zip(best, word_starts, n_words, strict=True):
            tags = [row[pos] for pos in starts]
            out.append(tags + [0] * (n - len(tags)))
        return out

    def eval_predictions(
        self, spec: TaskSpec, logits: torch.Tensor, rows: dict[str, list[Any]]
    ) -> tuple[list[Any], list[Any]]:
        """Every word's tag (cut-off words: 'O') against the word-level tags."""
        preds = self.word_predictions(logits, rows["word_starts"], rows["n_words"])
        return preds, rows["word_labels"]

    def word_tags(
        self, logits: torch.Tensor, word_ids: list[list[int | None]], n_words: list[int]
    ) -> list[list[int]]:
        """Per example, the tag index of every word read at its first piece, matched by word
        index: a word with no piece (cut off by truncation, or made only of characters the
        tokenizer drops) gets index 0 ('O') without shifting the words after it."""
        best = logits.argmax(dim=-1).cpu().tolist()
        out = []
        for row, ids, n in zip(best, word_ids, n_words, strict=True):
            first: dict[int, int] = {}
            for pos, wid in enumerate(ids):
                if wid is not None and wid not in first:
                    first[wid] = pos
            out.append([row[first[w]] if w in first else 0 for w in range(n)])
        return out

    def metrics(
        self, spec: TaskSpec, predictions: list[Any], references: list[Any]
    ) -> dict[str, float]:
        from seqeval.metrics import f1_score, precision_score, recall_score  # lazy: imports sklearn

        pairs = [(p, r) for p, r in zip(predictions, references, strict=True) if r is not None]
        if not pairs:
            return {}
        outside = spec.labels.index("O") if "O" in spec.labels else 0
        names = spec.labels

        def to_tags(seq: list[int]) -> list[str]:
            return [names[i] if names[i] != names[outside] else "O" for i in seq]

        preds = [to_tags(p) for p, _ in pairs]
        refs = [to_tags(r) for _, r in pairs]
        return {
            "f1": float(f1_score(refs, preds, zero_division=0)),
            "precision": float(precision_score(refs, preds, zero_division=0)),
            "recall": float(recall_score(refs, preds, zero_division=0)),
            "token_accuracy": sum(
                int(a == b)
                for p, r in zip(preds, refs, strict=True)
                for a, b in zip(p, r, strict=True)
            )
            / max(1, sum(len(r) for r in refs)),
        }

    def decode(self, spec: TaskSpec, logits: torch.Tensor) -> list[Any]:
        """Per word piece: the predicted tag of every position (see :meth:`decode_words` for
        word-level tags and entity spans, which need the word alignment)."""
        best = logits.argmax(dim=-1).cpu().tolist()
        return [{"piece_tags": [spec.labels[i] for i in row]} for row in best]

    def decode_inputs(
        self, spec: TaskSpec, logits: torch.Tensor, encoding: BatchEncoding, inputs: list[Any]
    ) -> list[dict[str, Any]]:
        """Each input's word tags and entity spans (:meth:`decode_words`)."""
        words = self.words(inputs)
        word_ids = [encoding.word_ids(i) for i in range(len(words))]
        tags = self.word_tags(logits, word_ids, [len(w) for w in words])
        return [self.decode_words(spec, w, t) for w, t in zip(words, tags, strict=True)]

    def decode_words(
        self, spec: TaskSpec, words: list[str], tag_indices: list[int]
    ) -> dict[str, Any]:
        """Word-level tags plus entity spans (word offsets, end exclusive) for one example."""
        from seqeval.metrics.sequence_labeling import get_entities

        tags = [spec.labels[i] for i in tag_indices]
        entities = [
            {"type": kind, "start": start, "end": end + 1, "text": " ".join(words[start : end + 1])}
            for kind, start, end in get_entities(tags)
        ]
        return {"tags": tags, "entities": entities}
