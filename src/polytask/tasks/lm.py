"""Masked language modelling on a task's texts: an auxiliary objective for encoders.

BERT's recipe (Devlin et al. 2019): 15 % of the non-special tokens of each text are picked;
of those 80 % become ``[MASK]``, 10 % a random token, 10 % stay; the loss is the
cross-entropy of the original token at the picked positions. Masks are drawn per example
from a generator seeded by ``(run seed, epoch, example)`` in training, so a resumed run
draws the same masks, and by ``(example,)`` alone in evaluation, so every run (every
weight of ``sweep-aux``) is scored on the same masks. Decoder-only models train with
``instruction`` tasks (``architecture: causal_lm``), whose loss is next-token prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from polytask.errors import ConfigError, PolytaskError
from polytask.tasks.base import IGNORE_INDEX, TASK_TYPES, TaskOptions, TaskSpec, TaskType, Where

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


MASK_SHARE = 0.15
#: of the picked tokens: this share becomes [MASK], the same again a random token, the rest stay
MASK_TOKEN_SHARE, RANDOM_TOKEN_SHARE = 0.8, 0.1
_EVAL_KEY = 0x5EED  # a fixed entropy word: evaluation masks depend on the example only


def mask_tokens(
    ids: Sequence[int],
    special: Sequence[int],
    mask_id: int,
    vocab_size: int,
    rng: np.random.Generator,
) -> tuple[list[int], list[int]]:
    """``(inputs, targets)`` of one text: targets hold the original id at picked positions
    and ``IGNORE_INDEX`` elsewhere; special tokens are never picked."""
    n = len(ids)
    original = np.asarray(ids, dtype=np.int64)
    picked = (rng.random(n) < MASK_SHARE) & (np.asarray(special[:n]) == 0)
    action = rng.random(n)
    random_ids = rng.integers(0, vocab_size, n)
    inputs = original.copy()
    to_mask = picked & (action < MASK_TOKEN_SHARE)
    to_random = (
        picked & (action >= MASK_TOKEN_SHARE) & (action < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE)
    )
    inputs[to_mask] = mask_id
    inputs[to_random] = random_ids[to_random]
    targets = np.where(picked, original, IGNORE_INDEX)
    return inputs.tolist(), targets.tolist()


@TASK_TYPES.register("lm")
class MaskedLM(TaskType):
    """Masked LM (15 %, 80/10/10) on the task's texts; always auxiliary, never served.

    Metrics: the masked-LM loss (nats per masked token) and its perplexity, on fixed masks.
    Head: the checkpoint's pretrained MLM head when it has one, else a new transform with
    the decoder tied to the input word embeddings.
    """

    level: ClassVar[Literal["sequence", "token"]] = "token"
    primary_metric: ClassVar[str] = "loss"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss", "perplexity"})
    eval_rows: ClassVar[int | None] = 32
    head: ClassVar[str] = "mlm"  # the MLM head tied to the word embeddings
    reader: ClassVar[str] = "texts"  # its own texts and other tasks' (data.from_tasks)

    def fit_spec(self, config: TaskOptions, train_values: Sequence[Any], where: Where) -> TaskSpec:
        return TaskSpec(
            name=config.name,
            type="lm",
            auxiliary=True,
            critical=False,
            weight=config.weight,
        )

    def bind_tokenizer(self, spec: TaskSpec, tokenizer: PreTrainedTokenizerBase) -> TaskSpec:
        """Record the mask token and vocabulary size; a tokenizer without a mask token
        belongs to a decoder (use ``instruction`` tasks with a causal LM)."""
        if tokenizer.mask_token_id is None:
            raise ConfigError(
                f"tasks.{spec.name}: masked LM needs an encoder whose tokenizer has a mask "
                "token; for a decoder (causal LM) use instruction tasks with architecture causal_lm"
            )
        spec.options = {"mask_token_id": int(tokenizer.mask_token_id), "vocab_size": len(tokenizer)}
        return spec

    def encode(self, spec: TaskSpec, value: Any, row: int, where: Where) -> Any:
        return None  # targets are drawn with the masks, in prepare()

    def num_outputs(self, spec: TaskSpec) -> int:
        return int(spec.options["vocab_size"])

    def prepare(
        self, spec: TaskSpec, rows: dict[str, list[Any]], stream: tuple[int, int] | None
    ) -> dict[str, list[Any]]:
        mask_id, vocab = int(spec.options["mask_token_id"]), int(spec.options["vocab_size"])
        inputs, targets = [], []
        for ids, special, example in zip(
            rows["input_ids"], rows["special"], rows["example"], strict=True
        ):
            if stream is None:
                key = [_EVAL_KEY, int(example)]
            else:
                key = [stream[0] % 2**32, stream[1], int(example)]
            masked, target = mask_tokens(ids, special, mask_id, vocab, np.random.default_rng(key))
            inputs.append(masked)
            targets.append(target)
        return {**rows, "input_ids": inputs, "target": targets}

    def collate(self, spec: TaskSpec, labels: list[Any]) -> torch.Tensor:
        width = max(len(y) for y in labels)
        return torch.tensor([y + [IGNORE_INDEX] * (width - len(y)) for y in labels])

    def loss(self, spec: TaskSpec, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(logits.device)
        width = min(logits.shape[1], labels.shape[1])
        labels = labels[:, :width]
        picked = labels != IGNORE_INDEX
        if not bool(picked.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[:, :width][picked].float(), labels[picked])

    def loss_units(self, spec: TaskSpec, labels: torch.Tensor) -> int:
        return int((labels != IGNORE_INDEX).sum())

    def loss_metrics(self, spec: TaskSpec, loss: float) -> dict[str, float]:
        return {"perplexity": math.exp(min(loss, 50.0))}

    def predict_indices(self, spec: TaskSpec, logits: torch.Tensor) -> list[Any]:
        return [None] * len(logits)  # evaluation scores the loss only

    def metrics(
        self, spec: TaskSpec, predictions: list[Any], references: list[Any]
    ) -> dict[str, float]:
        return {}  # loss and perplexity come from the evaluation loss

    def decode(self, spec: TaskSpec, logits: torch.Tensor) -> list[Any]:
        raise PolytaskError(f"task '{spec.name}' is a language-modelling objective: not served")
