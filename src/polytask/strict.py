"""The strict pydantic base of every config section: unknown keys fail with a suggestion, and
an unknown key does not stop the other checks of its section (every problem is reported)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

from polytask.registry import Problem, did_you_mean

#: the error type of an unknown key (reported at its section: see :func:`section_errors`)
UNKNOWN_KEY = "unknown_key"


def section_errors(title: str, problems: list[Problem]) -> ValidationError:
    """Problems of one section as one ``ValidationError`` (pydantic adds the section's place)."""
    details: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError(UNKNOWN_KEY if p.unknown else "section", p.msg),
            "loc": p.loc,
            "input": None,
        }
        for p in problems
    ]
    return ValidationError.from_exception_data(title, details)


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys with a suggestion.

    The check wraps the whole model (its fields and its own validators), so that a section
    with an unknown key still reports its other problems."""

    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(
            cls._reject_unknown_keys, handler(source)
        )

    @classmethod
    def _reject_unknown_keys(cls, data: Any, validate: ValidatorFunctionWrapHandler) -> Any:
        if not isinstance(data, dict):
            return validate(data)
        known = sorted(cls.model_fields)
        unknown = [key for key in data if key not in cls.model_fields]
        if not unknown:
            return validate(data)
        problems = [
            Problem((key,), f"unknown key '{key}'{did_you_mean(str(key), known)}", unknown=True)
            for key in unknown
        ]
        try:  # the known keys are checked all the same
            validate({k: v for k, v in data.items() if k in cls.model_fields})
        except ValidationError as err:
            problems += [
                Problem(tuple(e["loc"]), e["msg"], unknown=e["type"] == UNKNOWN_KEY)
                for e in err.errors()
            ]
        raise section_errors(cls.__name__, problems)
