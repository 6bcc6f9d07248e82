"""Tensor files: safetensors in and out of a module, with one-line errors. Never unpickles.

Also the temporary files and folders that atomic writes rename into place, with the modes
``open``/``mkdir`` give under the umask (0644/0755 under umask 022): ``tempfile`` makes them
private (0600/0700), and so does safetensors for each file it writes, so a run folder renamed
into place would stay unreadable to anyone else. :func:`temp_file` and :func:`temp_dir`
create them; :func:`follow_umask` settles a filled folder before it is renamed."""

from __future__ import annotations

import os
import tempfile
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


def umask() -> int:
    """The process umask, read without changing it (``os.umask`` sets it to read it, which
    would let another thread create a file meanwhile under the temporary mask)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_file(folder: Path, prefix: str = "", suffix: str = "") -> tuple[int, Path]:
    """``tempfile.mkstemp`` in ``folder`` (an open descriptor and the path), with the mode of
    a file ``open`` would create (0644 under umask 022), not mkstemp's 0600."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    follow_umask(Path(name))
    return fd, Path(name)


def temp_dir(folder: Path, prefix: str = "") -> Path:
    """``tempfile.mkdtemp`` in ``folder``, with the mode of a folder ``mkdir`` would create
    (0755 under umask 022), not mkdtemp's 0700."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
    follow_umask(path)
    return path


def follow_umask(path: Path) -> None:
    """Give ``path`` and, for a folder, everything in it the modes a fresh ``open`` or
    ``mkdir`` would have (writers such as safetensors' ``save_file`` create 0600 files).
    Call it on a folder this process has just filled, before renaming it into place."""
    mask = umask()
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not item.is_symlink():
            item.chmod((0o777 if item.is_dir() else 0o666) & ~mask)
