"""The ``instruction:`` settings of an instruction task: a pydantic model that imports neither
torch nor transformers, so that the run config validates without them (re-exported by
:mod:`polytask.tasks.prompts`, which uses them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from polytask.strict import StrictModel

__all__ = ["InstructionConfig"]


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
