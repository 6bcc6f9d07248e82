"""How much one request may hold (kept light: the CLI checks it before loading torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may hold; larger requests are refused (422, or 413 for the body)."""

    max_inputs: int = 64
    max_chars: int = 2000  # per input (a pair or a list of words counts all its strings)
    max_body_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("max_inputs", "max_chars", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
