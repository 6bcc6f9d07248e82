"""Read one split of a task's ``data.dataset``: a Hugging Face dataset name, a local folder
in hub layout (data files and a README card whose ``configs:`` header maps the splits), or
a saved ``DatasetDict`` (``save_to_disk``).

A name is passed to ``datasets.load_dataset`` and resolves when online, or from the
``datasets`` cache (``$POLYTASK_CACHE/hf``) when ``HF_DATASETS_OFFLINE=1``. Errors are one
line naming the task and the field (``data.dataset``, ``data.subset``, ``data.splits.X``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import datasets

from polytask.cache import cache_dir
from polytask.data.source import content_id
from polytask.errors import DataError, first_line


def is_saved(path: Path) -> bool:
    """A folder written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``)."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def read_dataset_split(
    task: str, name: str, subset: str | None, split: str, field: str
) -> datasets.Dataset:
    """The rows of ``name``'s split ``split`` (``field``: the config key naming it,
    ``data.splits.validation``), for task ``task``."""
    folder = Path(name)
    if folder.is_dir() and is_saved(folder):
        return _saved_split(task, folder, subset, split, field)
    cache = cache_dir() / "hf"
    if folder.is_dir():  # datasets may keep a stale build of edited local files: key on them
        cache = cache / "local" / hashlib.sha256(content_id(folder).encode()).hexdigest()[:16]
    try:
        out = datasets.load_dataset(name, subset, split=split, cache_dir=str(cache))
    except Exception as exc:  # datasets raises ValueError, OSError, its own errors
        message = first_line(exc)
        if "split" in message.lower():
            raise DataError(f"task '{task}': {field}: {message}") from None
        if "config" in message.lower():
            raise DataError(f"task '{task}': data.subset: {message}") from None
        raise DataError(
            f"task '{task}': data.dataset: cannot load '{name}' ({message}); a dataset name "
            "resolves only when online or once in the datasets cache"
        ) from None
    if not isinstance(out, datasets.Dataset):
        raise DataError(f"task '{task}': {field}: '{split}' is not one split")
    return out


def _saved_split(
    task: str, folder: Path, subset: str | None, split: str, field: str
) -> datasets.Dataset:
    if subset is not None:
        raise DataError(
            f"task '{task}': data.subset does not apply to a saved dataset ({folder}): drop it"
        )
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.Dataset):
        raise DataError(
            f"task '{task}': data.dataset: {folder} is one saved Dataset, not a DatasetDict; "
            "give it as data.train / data.validation"
        )
    if split not in loaded:
        raise DataError(
            f"task '{task}': {field}: no split '{split}' in {folder} (has: {', '.join(loaded)})"
        )
    return loaded[split]


def cells(ds: datasets.Dataset, columns: list[str]) -> dict[str, list[Any]]:
    """``columns`` of ``ds`` as lists, class-label ids as their names (``-1``: no label),
    the other columns as empty lists (only their names are read)."""
    out: dict[str, list[Any]] = {}
    for column in [c for c in columns if c in ds.column_names]:  # first: they count the rows
        feature, values = ds.features[column], list(ds[column])
        if isinstance(feature, datasets.ClassLabel):
            values = [_name(feature, v) for v in values]
        elif isinstance(getattr(feature, "feature", None), datasets.ClassLabel):
            inner = feature.feature
            values = [v if v is None else [_name(inner, x) for x in v] for v in values]
        out[column] = values
    out.update({c: [] for c in ds.column_names if c not in out})
    return out


def _name(feature: datasets.ClassLabel, value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return feature.int2str(value) if 0 <= value < feature.num_classes else None
    return value
