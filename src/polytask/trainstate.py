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

from polytask import checkpoint as ckpt
from polytask.data.batching import TaskStream
from polytask.data.samplers import Sampler
from polytask.errors import RunDirError
from polytask.models import MultiTaskModel

CHECKPOINT = "checkpoint"


@dataclass
class TrainState:
    """Counters that a checkpoint carries besides tensors."""

    step: int = 0
    examples: dict[str, int] = field(default_factory=dict)
    updates: dict[str, int] = field(default_factory=dict)
    best: float | None = None
    best_step: int = 0
    bad_evals: int = 0
    seconds: float = 0.0


@dataclass
class Resumable:
    """The live objects whose state a checkpoint saves and restores."""

    model: MultiTaskModel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: Sampler
    streams: dict[str, TaskStream]
    objective: torch.nn.Module


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> Path | None:
    """Check the output folder; returns the checkpoint to resume from (if resuming)."""
    if resume:
        found = ckpt.latest_complete(out / CHECKPOINT) if out.is_dir() else None
        if found is None:
            raise RunDirError(f"--resume: {out} has no complete checkpoint to resume from")
        return found
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunDirError(
            f"{out} already exists; pass --resume to continue it or --overwrite to replace it"
        )
    return None


def save_checkpoint(run_dir: Path, live: Resumable, state: TrainState) -> None:
    """Write ``run_dir/checkpoint`` atomically."""
    tensors, layout = ckpt.optimizer_tensors(live.optimizer)
    rng = {f"sampler.{k}": v for k, v in live.sampler.state_dict().items()}
    rng["torch"] = torch.get_rng_state()
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


def load_checkpoint(folder: Path, live: Resumable) -> TrainState:
    """Restore every live object from ``folder``; returns the saved counters."""
    try:
        meta = json.loads((folder / "trainer_state.json").read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{folder}: unreadable trainer_state.json ({exc})") from None
    live.model.load_weights(folder)
    moments = ckpt.load_tensors(folder / "optimizer.safetensors")
    live.optimizer.load_state_dict(ckpt.optimizer_state(moments, meta["optimizer"]))
    live.scheduler.load_state_dict(meta["scheduler"])
    rng = ckpt.load_tensors(folder / "rng.safetensors")
    prefix = "sampler."
    live.sampler.load_state_dict(
        {k.removeprefix(prefix): v for k, v in rng.items() if k.startswith(prefix)}
    )
    torch.set_rng_state(rng["torch"])
    if (folder / "objective.safetensors").is_file():
        live.objective.load_state_dict(ckpt.load_tensors(folder / "objective.safetensors"))
    for task, s in meta["streams"].items():
        live.streams[task].load_state_dict(s)
    return TrainState(**meta["state"])
