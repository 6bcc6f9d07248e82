"""What a training checkpoint holds, and the run directory checks around resuming.

A checkpoint is a folder written atomically (see :mod:`polytask.checkpoint`): model weights,
optimiser moments, sampler/RNG/objective states as safetensors, the rest as JSON. Loading
it restores everything a step depends on, so a resumed run continues the same trajectory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from polytask import checkpoint as ckpt
from polytask.data.batching import TaskStream
from polytask.errors import RunDirError, first_line
from polytask.models import MultiTaskModel
from polytask.samplers import Sampler

CHECKPOINT = "checkpoint"
FINAL = "final_metrics.json"


@dataclass
class TrainState:
    """Counters that a checkpoint carries besides tensors."""

    step: int = 0
    examples: dict[str, int] = field(default_factory=dict)
    updates: dict[str, int] = field(default_factory=dict)
    best: float | None = None
    best_step: int = 0
    #: the validation metrics measured at ``best_step`` (the final report reuses them)
    best_validation: dict[str, Any] | None = None
    bad_evals: int = 0
    seconds: float = 0.0
    #: wall time inside the steps (draw, collate, forward, backward, update), not evaluation
    step_seconds: float = 0.0
    skipped_steps: int = 0  # steps skipped for a non-finite loss (no update)
    bad_streak: int = 0  # consecutive skipped steps up to now


@dataclass
class Resumable:
    """The live objects whose state a checkpoint saves and restores."""

    model: MultiTaskModel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: Sampler
    streams: dict[str, TaskStream]
    objective: torch.nn.Module


def trained_to(run_dir: Path) -> int | None:
    """The ``train.max_steps`` a finished run (one with ``final_metrics.json``) trained to:
    its saved ``config.yaml``'s (an early stop ends a run below it); None: not finished."""
    final = run_dir / FINAL
    if not final.is_file():
        return None
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text("utf-8"))
        target = saved["train"]["max_steps"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        target = None
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    return int(read_final(run_dir).get("steps", 0))


def read_final(run_dir: Path) -> dict[str, Any]:
    """``run_dir/final_metrics.json``, or a one-line :class:`RunDirError`."""
    file = run_dir / FINAL
    try:
        final = json.loads(file.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{file}: unreadable ({first_line(exc)})") from None
    if not isinstance(final, dict):
        raise RunDirError(f"{file}: not a JSON object")
    return final


def run_complete(run_dir: Path, max_steps: int) -> dict[str, Any] | None:
    """The ``final_metrics`` of ``run_dir`` if it finished training to ``max_steps`` or
    more (resuming it has nothing to do), else None (unfinished, or ``max_steps`` raised)."""
    target = trained_to(run_dir) if run_dir.is_dir() else None
    if target is None or max_steps > target:
        return None
    return read_final(run_dir)


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> Path | None:
    """Check the output folder; returns the checkpoint to resume from (if resuming).

    The refusals name the option that fits what ``out`` holds: a finished run, a checkpoint
    to resume from, or a run stopped before its first checkpoint."""
    found = ckpt.latest_complete(out / CHECKPOINT) if out.is_dir() else None
    if resume:
        if found is None:
            raise RunDirError(f"--resume: {_no_checkpoint(out)}")
        return found
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out} is not a directory; give a new or existing folder as --output")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunDirError(f"{out} already exists; {_existing(out, found)}")
    return None


def _no_checkpoint(out: Path) -> str:
    if not out.exists():
        return f"{out} does not exist; train without --resume to start it"
    target = trained_to(out) if out.is_dir() else None
    if target is not None:
        return (
            f"{out} finished (train.max_steps={target}) without a checkpoint to continue "
            "from; pass --overwrite to train it again with the higher train.max_steps"
        )
    started = (out / "config.yaml").is_file()
    return f"{out} has no complete checkpoint to resume from" + (
        " (the run stopped before its first one); pass --overwrite to start it again"
        if started
        else "; train without --resume (or pass --overwrite) to start a run there"
    )


def _existing(out: Path, checkpoint: Path | None) -> str:
    target = trained_to(out)
    if target is not None:
        more = (
            f", or --resume train.max_steps=N (N > {target}) to train it further"
            if checkpoint is not None
            else ""
        )
        return f"it holds a finished run: pass --overwrite to replace it{more}"
    if checkpoint is not None:
        return "pass --resume to continue it or --overwrite to replace it"
    if (out / "config.yaml").is_file():
        return (
            "its run stopped before its first checkpoint, so it cannot be resumed: pass "
            "--overwrite to start it again"
        )
    return "pass --overwrite to replace it"


def save_checkpoint(
    run_dir: Path, live: Resumable, state: TrainState, rng_states: list[torch.Tensor] | None = None
) -> None:
    """Write ``run_dir/checkpoint`` atomically (the main process only, when distributed).

    ``rng_states``: every rank's torch RNG state, rank order (default: this process's); each
    rank draws its own dropout masks, so each gets its own state back on resume.
    """
    tensors, layout = ckpt.optimizer_tensors(live.optimizer)
    rng = {f"sampler.{k}": v for k, v in live.sampler.state_dict().items()}
    states = rng_states or [torch.get_rng_state()]
    rng["torch"] = states[0]
    rng.update({f"torch.rank{r}": t for r, t in enumerate(states) if r > 0})
    objective = {k: v.detach().cpu() for k, v in live.objective.state_dict().items()}

    def fill(tmp: Path) -> None:
        live.model.save_weights(tmp)
        ckpt.save_tensors(tmp / "optimizer.safetensors", tensors)
        ckpt.save_tensors(tmp / "rng.safetensors", rng)
        if objective:
            ckpt.save_tensors(tmp / "objective.safetensors", objective)
        ckpt.write_json(
            tmp / "trainer_state.json",
            {
                "state": asdict(state),
                "optimizer": layout,
                "scheduler": live.scheduler.state_dict(),
                "streams": {t: s.state_dict() for t, s in live.streams.items()},
            },
        )

    ckpt.write_folder(run_dir / CHECKPOINT, fill)


def load_checkpoint(folder: Path, live: Resumable, rank: int = 0) -> TrainState:
    """Restore every live object from ``folder``; returns the saved counters.

    ``rank`` picks this process's torch RNG state; a rank the checkpoint has none for (a
    run resumed on more processes) keeps its current, seeded, state."""
    state_file = folder / "trainer_state.json"
    try:
        meta = json.loads(state_file.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{folder}: unreadable trainer_state.json ({exc})") from None
    live.model.load_weights(folder)
    try:
        return _restore(folder, live, meta, rank)
    except KeyError as exc:
        raise RunDirError(f"{state_file}: no entry {exc}") from None
    except (TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise RunDirError(f"{state_file}: does not fit this run ({first_line(exc)})") from None


def _restore(folder: Path, live: Resumable, meta: dict[str, Any], rank: int) -> TrainState:
    moments = ckpt.load_tensors(folder / "optimizer.safetensors")
    live.optimizer.load_state_dict(ckpt.optimizer_state(moments, meta["optimizer"]))
    live.scheduler.load_state_dict(meta["scheduler"])
    rng = ckpt.load_tensors(folder / "rng.safetensors")
    prefix = "sampler."
    live.sampler.load_state_dict(
        {k.removeprefix(prefix): v for k, v in rng.items() if k.startswith(prefix)}
    )
    own = "torch" if rank == 0 else f"torch.rank{rank}"
    if own in rng:
        torch.set_rng_state(rng[own])
    if (folder / "objective.safetensors").is_file():
        live.objective.load_state_dict(ckpt.load_tensors(folder / "objective.safetensors"))
    for task, s in meta["streams"].items():
        live.streams[task].load_state_dict(s)
    return TrainState(**meta["state"])
