"""Saving and loading: safetensors for tensors, JSON for everything else, atomic folders.

Nothing here unpickles: weights, optimizer moments and RNG states are safetensors; the
structure around them is JSON. A folder is written under a temporary name and renamed into
place, so a crash leaves either the old complete folder or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from polytask import __version__
from polytask.errors import RunDirError, first_line
from polytask.io import follow_umask, temp_dir, temp_file
from polytask.models import ARCHITECTURES, MultiTaskModel
from polytask.models.base import ENCODER_DIR, WEIGHTS_FILE
from polytask.models.encoder import LOAD_ERRORS, load_tokenizer
from polytask.tasks import TaskSpec

MODEL_FILE = WEIGHTS_FILE
META_FILE = "polytask.json"
COMPLETE = "COMPLETE"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename)."""
    fd, tmp = temp_file(path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def write_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """Create ``target`` atomically: ``fill`` writes into a temporary sibling, then renames."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(target.parent, prefix=f".{target.name}.tmp-")
    try:
        fill(tmp)
        (tmp / COMPLETE).write_text(__version__ + "\n")
        follow_umask(tmp)  # safetensors writes 0600 files: the folder is shared like any other
        old = target.with_name(f"{target.name}.old")
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            target.rename(old)
        tmp.rename(target)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def latest_complete(target: Path) -> Path | None:
    """``target`` if complete, else the ``.old`` copy a crash mid-rename left behind."""
    for candidate in (target, target.with_name(f"{target.name}.old")):
        if (candidate / COMPLETE).is_file():
            return candidate
    return None


def save_model_folder(
    folder: Path,
    model: MultiTaskModel,
    tokenizer: PreTrainedTokenizerBase,
    meta: dict[str, Any],
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Weights, architecture + task specs (JSON), the encoder's HF config and the tokenizer.

    ``state_dict``: the weights to write instead of ``model``'s own (a full state dict
    gathered from sharded parameters); tied tensors are written once, under the first of
    their names, as ``safetensors.torch.save_model`` does."""

    def fill(tmp: Path) -> None:
        if state_dict is None:
            model.save_weights(tmp)
        else:
            save_file(_untied(model, state_dict), str(tmp / MODEL_FILE), metadata={"format": "pt"})
        encoder = getattr(model, "encoder", None)
        if encoder is not None:
            encoder.config.save_pretrained(str(tmp / ENCODER_DIR))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        full = {
            "polytask_version": __version__,
            "architecture": {"name": _arch_name(model), **model.describe()},
            "tasks": [s.to_dict() for s in model.specs.values()],
            **meta,
        }
        write_json(tmp / META_FILE, full)

    write_folder(folder, fill)


def _untied(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with one name per tensor ``model`` ties (e.g. an lm head's decoder)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen or name not in state:
            continue
        seen.add(id(tensor))
        out[name] = state[name].detach().cpu().contiguous()
    return out


def _arch_name(model: MultiTaskModel) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered architecture")


def read_meta(folder: Path) -> dict[str, Any]:
    file = folder / META_FILE
    if not file.is_file():
        raise RunDirError(f"{folder}: no {META_FILE}; not a polytask model folder")
    try:
        meta: dict[str, Any] = json.loads(file.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{file}: not valid JSON ({exc})") from None
    return meta


def load_model_folder(
    folder: Path,
) -> tuple[MultiTaskModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """Rebuild a saved model with the same builders as training, then load its safetensors."""
    meta = read_meta(folder)
    try:
        arch = dict(meta["architecture"])
        specs = [TaskSpec.from_dict(s) for s in meta["tasks"]]
        cls = ARCHITECTURES.get(arch.pop("name"))
    except KeyError as exc:
        raise RunDirError(f"{folder / META_FILE}: no entry {exc}") from None
    except (TypeError, ValueError) as exc:
        raise RunDirError(f"{folder / META_FILE}: cannot rebuild the model ({exc})") from None
    try:
        encoder = cls.saved_backbone(folder, meta)
    except LOAD_ERRORS as exc:
        raise RunDirError(
            f"{folder / ENCODER_DIR}: cannot read the backbone's config ({first_line(exc)})"
        ) from None
    try:
        model = cls(encoder, specs, **arch)
    except (TypeError, ValueError) as exc:
        raise RunDirError(f"{folder / META_FILE}: cannot rebuild the model ({exc})") from None
    model.load_weights(folder)
    try:
        tokenizer = load_tokenizer(str(folder / "tokenizer"))
    except LOAD_ERRORS as exc:
        raise RunDirError(
            f"{folder / 'tokenizer'}: cannot load the tokenizer ({first_line(exc)})"
        ) from None
    model.eval()
    return model, tokenizer, meta


def optimizer_tensors(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into safetensors-able tensors and JSON structure."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for index, entries in state["state"].items():
        keys = []
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
                keys.append(key)
            else:
                layout.setdefault("scalars", {})[f"{index}.{key}"] = value
        layout["state"][str(index)] = keys
    return tensors, layout


def optimizer_state(tensors: dict[str, torch.Tensor], layout: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for index, keys in layout["state"].items():
        state[int(index)] = {k: tensors[f"state.{index}.{k}"] for k in keys}
    for dotted, value in layout.get("scalars", {}).items():
        index, key = dotted.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": layout["param_groups"]}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise RunDirError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
