"""Request and response bodies of the server (pydantic), and the request's OpenAPI schema.

The request is checked in two steps: :func:`parse_request` checks its shape (an object with
a string ``task`` and ``inputs``, nothing else), then :meth:`polytask.predict.Predictor.check`
checks the inputs against the task, so that every error is one message naming what is wrong.
The schema published in OpenAPI is the precise one: which input form each task takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from polytask.errors import InputError
from polytask.predict.inputs import ALL, Form
from polytask.serve.limits import Limits

if TYPE_CHECKING:
    from polytask.predict.predictor import Predictor


class Error(BaseModel):
    """Every error answer: one message."""

    detail: str = Field(examples=["unknown task 'sentimnet' (did you mean 'sentiment'?)"])


class Entity(BaseModel):
    type: str
    start: int = Field(description="index of the entity's first word")
    end: int = Field(description="index after its last word")
    text: str


class Label(BaseModel):
    """Single-label classification: the label and every label's probability."""

    label: str
    scores: dict[str, float]


class Labels(BaseModel):
    """Multi-label classification: the labels whose probability is >= 0.5, and all scores."""

    labels: list[str]
    scores: dict[str, float]


class Value(BaseModel):
    """Regression: the predicted value in the training targets' units."""

    value: float


class Tags(BaseModel):
    """Tagging: one tag per word, and the entities (spans of words) they form."""

    tags: list[str]
    entities: list[Entity]


class Generation(BaseModel):
    """Instruction task: the answer the causal LM generated (greedy)."""

    text: str


Prediction = Label | Labels | Value | Tags | Generation


class PredictResponse(BaseModel):
    task: str = Field(description="the task asked for ('*' for every task)")
    tasks: list[str] = Field(description="the tasks answered, in the order of each prediction")
    predictions: list[Prediction] | list[dict[str, Prediction]] = Field(
        description="one per input, in order; for '*' a {task: prediction} object per input"
    )


class TaskInfo(BaseModel):
    name: str
    type: str
    input: Form = Field(description="text, pair ([text, text_pair]) or words (text or list)")
    labels: list[str]
    multi_label: bool
    threshold: float | None = Field(description="multi-label decision threshold")
    metric: str = Field(description="the task type's primary metric")
    validation: float | None = Field(description="that metric on validation, when known")


class TasksResponse(BaseModel):
    architecture: str
    star: dict[str, list[str]] = Field(
        description="the tasks '*' answers for texts and for sentence pairs"
    )
    tasks: list[TaskInfo]


class HealthResponse(BaseModel):
    status: str
    architecture: str
    tasks: int
    device: str
    batching: dict[str, Any]
    stats: dict[str, Any]


def _input_schema(form: Form, limits: Limits) -> dict[str, Any]:
    text = {"type": "string", "minLength": 1, "maxLength": limits.max_chars}
    if form == "text":
        return text
    if form == "pair":
        return {"type": "array", "items": text, "minItems": 2, "maxItems": 2}
    words = {"type": "array", "items": text, "minItems": 1, "maxItems": limits.max_chars}
    return {"anyOf": [text, words]}


def request_schema(predictor: Predictor, limits: Limits) -> dict[str, Any]:
    """The ``POST /predict`` body's JSON schema for this model: per input form, the tasks
    that take it (``'*'`` with texts, and with pairs, when some task takes them)."""
    by_form: dict[Form, list[str]] = {}
    for task in predictor.tasks:
        by_form.setdefault(predictor.form(task), []).append(task)
    star: list[Form] = [f for f in ("text", "pair") if predictor.star_tasks(f)]
    for form in star:
        by_form.setdefault(form, [])
    variants = []
    for form, tasks in by_form.items():
        inputs = {"type": "array", "minItems": 1, "maxItems": limits.max_inputs}
        variants.append(
            {
                "type": "object",
                "properties": {
                    "task": {"type": "string", "enum": tasks + [ALL] * (form in star)},
                    "inputs": {**inputs, "items": _input_schema(form, limits)},
                },
                "required": ["task", "inputs"],
                "additionalProperties": False,
            }
        )
    return {
        "title": "PredictRequest",
        "description": (
            f"A task and 1 to {limits.max_inputs} inputs of at most {limits.max_chars} "
            "characters each. '*' asks every task that takes the input form."
        ),
        "oneOf": variants,
        "examples": [_example(form, tasks) for form, tasks in by_form.items() if tasks],
    }


def parse_request(data: Any) -> tuple[str, Any]:
    """``(task, inputs)`` of a decoded JSON body, or :class:`InputError` for its shape (the
    inputs themselves are checked against the task by ``Predictor.check``)."""
    if not isinstance(data, dict):
        raise InputError("the body must be a JSON object with 'task' and 'inputs'")
    unknown = sorted(set(data) - {"task", "inputs"})
    if unknown:
        raise InputError(f"unknown field '{unknown[0]}': the body has 'task' and 'inputs' only")
    for name in ("task", "inputs"):
        if name not in data:
            raise InputError(f"{name}: missing; the body needs 'task' and 'inputs'")
    if not isinstance(data["task"], str):
        raise InputError("task: expected a task name (a string)")
    return data["task"], data["inputs"]


def _example(form: Form, tasks: list[str]) -> dict[str, Any]:
    inputs = {
        "text": ["a great film", "not my kind of plot"],
        "pair": [["a great film", "the film was good"]],
        "words": ["alice visited paris", ["bob", "likes", "london"]],
    }
    return {"task": tasks[0], "inputs": inputs[form]}
