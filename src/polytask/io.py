"""Tensor files: safetensors in and out of a module, with one-line errors. Never unpickles."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model

from polytask.errors import RunDirError, first_line


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a safetensors file into ``model``: a one-line :class:`RunDirError` when the file
    is unreadable or its tensors do not fit the model."""
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise RunDirError(f"{path}: cannot load weights ({first_line(exc)})") from None
    if missing or unexpected:  # load_model returns a set and a list
        raise RunDirError(
            f"{path}: weights do not match the model "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )


def check_weights(path: Path) -> None:
    """Raise :class:`RunDirError` unless ``path`` is a complete safetensors file (the
    header parses and covers the file: a truncated copy fails here)."""
    try:
        with safe_open(str(path), "pt") as fh:
            fh.keys()
    except (SafetensorError, OSError) as exc:
        raise RunDirError(f"{path}: cannot load weights ({first_line(exc)})") from None
