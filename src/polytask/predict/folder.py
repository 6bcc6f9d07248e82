"""Where a saved model is: a run directory's ``model/``, or a model folder itself; a folder of
runs (``polytask compare``'s, a leaderboard's) is named with the runs it holds."""

from __future__ import annotations

from pathlib import Path

from polytask.errors import RunDirError


def model_folder(run_or_model_dir: str | Path) -> Path:
    """Accept a run directory (uses its ``model/``) or a model folder itself."""
    path = Path(run_or_model_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory not found: {path}")
    if (path / "model" / "polytask.json").is_file():
        return path / "model"
    if (path / "polytask.json").is_file():
        return path
    runs = runs_below(path)
    if runs:  # a compare or leaderboard folder: name the runs it holds
        shown = ", ".join(runs[:RUNS_SHOWN]) + (", ..." if len(runs) > RUNS_SHOWN else "")
        raise RunDirError(
            f"{path}: no trained model (model/polytask.json) in this directory, but "
            f"{len(runs)} run folder{'s' * (len(runs) != 1)} below it: {shown}; "
            f"give one of them, e.g. {path / runs[0]}"
        )
    raise RunDirError(f"{path}: no trained model (model/polytask.json) in this directory")


RUNS_SHOWN = 8


def runs_below(path: Path, depth: int = 3) -> list[str]:
    """The run folders (holding ``model/polytask.json``) up to ``depth`` levels below
    ``path``, relative to it and sorted: ``multi/seed-1``, ``single-ner/seed-1``, ..."""
    found: set[str] = set()
    for level in range(1, depth + 1):
        pattern = "/".join(["*"] * level) + "/model/polytask.json"
        found |= {meta.parent.parent.relative_to(path).as_posix() for meta in path.glob(pattern)}
    return sorted(found)
