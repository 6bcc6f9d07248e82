"""The strict pydantic base of every config section: unknown keys fail with a suggestion."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from polytask.registry import did_you_mean


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys with a suggestion."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields)
            for key in data:
                if key not in known:
                    raise ValueError(f"unknown key '{key}'{did_you_mean(str(key), sorted(known))}")
        return data
