"""Instruction prompts: a task's template, how a labelled example becomes an answer, and
the token ids of (prompt, answer) pairs with the prompt masked out of the loss.

A prompt is the task's ``template`` with ``{text}`` replaced by the example's text, sent as
the user turn of the tokenizer's chat template when it has one (``system`` as the system
turn), else as ``"{prompt}\\n\\nAnswer: "``. The answer is what the assistant turn says,
followed by the template's end-of-turn text (or the end-of-sequence token): the model learns
to stop. Long texts are cut (by tokens) so that prompt and answer fit ``max_length``; the
template itself is never cut.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from transformers import PreTrainedTokenizerBase

from polytask.strict import StrictModel
from polytask.tasks.base import IGNORE_INDEX

NONE_ANSWER = "none"  # the ``entities`` answer of a text without entities
PLAIN_CUE = "\n\nAnswer: "  # joins prompt and answer when the tokenizer has no chat template


class InstructionConfig(StrictModel):
    """How an ``instruction`` task asks and answers (``instruction:`` of a task).

    ``answer``: ``label`` (the label, renamed by ``answers``), ``entities`` (BIO tags of a
    word list → ``"person: alice; geo-loc: paris"``, or ``"none"``; ``answers`` renames the
    entity types, e.g. ``{geo-loc: place}``) or ``mentions`` (``yes`` when an entity of
    ``entity_types`` occurs, else ``no``; ``answers`` renames ``yes`` and ``no``).
    ``evaluate``: ``choices`` scores every allowed answer's log-likelihood and picks the
    best (default for ``label`` and ``mentions``), ``generate`` decodes greedily and
    compares the text (default for ``entities``). The token-level loss on the answers is
    always reported.
    ``max_none_share`` (``entities`` only): at most this share of the *training* examples
    answer ``none``; the surplus of texts without an entity is dropped (seeded) before
    ``max_train_examples`` applies, so a rare-entity dataset does not teach the model to
    answer ``none`` to everything. Validation and test keep their natural mix.
    """

    template: str = Field(min_length=1)
    answer: Literal["label", "entities", "mentions"] = "label"
    answers: dict[str, str] | None = None
    entity_types: list[str] | None = None
    evaluate: Literal["choices", "generate"] | None = None
    max_new_tokens: int = Field(default=32, ge=1, le=512)
    system: str | None = None
    max_none_share: float | None = Field(default=None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> InstructionConfig:
        if "{text}" not in self.template:
            raise ValueError("instruction.template must contain '{text}'")
        if self.answer == "mentions" and not self.entity_types:
            raise ValueError("instruction.answer 'mentions' needs 'entity_types'")
        if self.answer == "entities" and self.evaluate == "choices":
            raise ValueError("entity lists are open-ended: use evaluate 'generate'")
        if self.max_none_share is not None and self.answer != "entities":
            raise ValueError("instruction.max_none_share only applies to answer 'entities'")
        renamed = set(self.answers or {})
        if self.answer == "mentions" and renamed - {"yes", "no"}:
            raise ValueError(
                f"instruction.answers of 'mentions' renames 'yes' and 'no', not "
                f"{', '.join(sorted(renamed - {'yes', 'no'}))}"
            )
        if self.answer == "entities" and self.entity_types and renamed - set(self.entity_types):
            raise ValueError(
                f"instruction.answers renames entity types: "
                f"{', '.join(sorted(renamed - set(self.entity_types)))} "
                f"not in entity_types ({', '.join(self.entity_types)})"
            )
        return self

    @property
    def mode(self) -> Literal["choices", "generate"]:
        return self.evaluate or ("generate" if self.answer == "entities" else "choices")


def as_text(value: Any) -> str:
    """A text cell as one string (a word list is joined with spaces)."""
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def entity_spans(words: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """``(type, text)`` of every BIO entity, in order (an I- tag without a B- starts one)."""
    spans: list[tuple[str, list[str]]] = []
    for word, tag in zip(words, tags, strict=False):
        if tag.startswith("B-") or (
            tag.startswith("I-") and (not spans or spans[-1][0] != tag[2:])
        ):
            spans.append((tag[2:], [word]))
        elif tag.startswith("I-"):
            spans[-1][1].append(word)
        else:
            spans.append(("", []))  # an O closes the entity before it
    return [(kind, " ".join(ws)) for kind, ws in spans if kind]


def make_answer(config: InstructionConfig, text: Any, label: Any) -> str | None:
    """The answer of one labelled example (None: unlabelled)."""
    if label is None or (isinstance(label, str) and not label.strip()):
        return None
    if config.answer == "label":
        raw = str(label)
        return (config.answers or {}).get(raw, raw)
    words = text.split() if isinstance(text, str) else [str(w) for w in text]
    spans = entity_spans(words, [str(t) for t in label])
    if config.answer == "mentions":
        found = any(kind in (config.entity_types or []) for kind, _ in spans)
        answers = config.answers or {}
        return answers.get("yes", "yes") if found else answers.get("no", "no")
    if config.entity_types:
        spans = [s for s in spans if s[0] in config.entity_types]
    names = config.answers or {}
    return "; ".join(f"{names.get(kind, kind)}: {words_}" for kind, words_ in spans) or NONE_ANSWER


def _render(
    tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str | None, system: str | None
) -> str:
    if tokenizer.chat_template is None:
        return prompt + PLAIN_CUE + ("" if answer is None else answer + (tokenizer.eos_token or ""))
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=answer is None
    )
    return str(text)


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, template: str, text: str, system: str | None = None
) -> list[int]:
    """Token ids of the prompt for ``text`` (ending where the answer starts)."""
    rendered = _render(tokenizer, template.replace("{text}", text), None, system)
    special = tokenizer.chat_template is None  # a chat template writes its own markers
    return list(tokenizer(rendered, add_special_tokens=special)["input_ids"])


def answer_ids(
    tokenizer: PreTrainedTokenizerBase, answer: str, system: str | None = None
) -> list[int]:
    """Token ids of an answer and its end-of-turn marker (what follows the prompt)."""
    probe = "x"  # the suffix after any prompt is the same: measure it on a short one
    prompt = _render(tokenizer, probe, None, system)
    full = _render(tokenizer, probe, answer, system)
    suffix = (
        full[len(prompt) :] if full.startswith(prompt) else answer + (tokenizer.eos_token or "")
    )
    return list(tokenizer(suffix.rstrip(), add_special_tokens=False)["input_ids"])


def stop_ids(tokenizer: PreTrainedTokenizerBase, system: str | None = None) -> list[int]:
    """Tokens that end an answer: the end-of-turn marker and the end-of-sequence token."""
    marker = answer_ids(tokenizer, NONE_ANSWER, system)[-1:]
    eos = [int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else []
    return sorted(set(marker + eos))


def fit_text(tokenizer: PreTrainedTokenizerBase, text: str, budget: int) -> str:
    """``text`` cut to at most ``budget`` tokens (whole text when it fits)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= budget:
        return text
    return str(tokenizer.decode(ids[: max(1, budget)], skip_special_tokens=True))


class ExampleEncoder:
    """Tokenizes one task's examples: ``(input_ids, labels, prompt_length)`` each, labels
    ``IGNORE_INDEX`` on the prompt (everywhere when unlabelled) and the answer's token ids
    after it. The template's own length and each distinct answer are tokenized once."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, config: InstructionConfig, max_length: int
    ) -> None:
        self.tokenizer, self.config, self.max_length = tokenizer, config, max_length
        self.empty = len(prompt_ids(tokenizer, config.template, "", config.system))
        self._answers: dict[str, list[int]] = {}

    def __call__(self, text: str, answer: str | None) -> tuple[list[int], list[int], int]:
        target: list[int] = []
        if answer:
            if answer not in self._answers:
                ids = answer_ids(self.tokenizer, answer, self.config.system)
                self._answers[answer] = ids[: self.max_length // 2]
            target = self._answers[answer]
        text = fit_text(self.tokenizer, text, self.max_length - self.empty - len(target))
        prompt = prompt_ids(self.tokenizer, self.config.template, text, self.config.system)
        prompt = prompt[: max(1, self.max_length - len(target))]
        return prompt + target, [IGNORE_INDEX] * len(prompt) + target, len(prompt)
