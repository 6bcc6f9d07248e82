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

from typing import Any

from transformers import PreTrainedTokenizerBase

from polytask.tasks.base import IGNORE_INDEX
from polytask.tasks.instruction_config import InstructionConfig

NONE_ANSWER = "none"  # the ``entities`` answer of a text without entities
PLAIN_CUE = "\n\nAnswer: "  # joins prompt and answer when the tokenizer has no chat template


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
