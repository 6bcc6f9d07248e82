"""The training loop: build, prepare, sample, forward, per-task losses, step, log, checkpoint."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedTokenizerBase

from polytask import checkpoint as ckpt
from polytask.autograd import weighted_backward
from polytask.config import RunConfig, dump_config
from polytask.data.batching import Batch, TaskStream, collate
from polytask.data.loading import TaskData, load_task_data
from polytask.data.samplers import Sampler, build_sampler
from polytask.errors import RunDirError
from polytask.evaluate import evaluate
from polytask.models import ARCHITECTURES, MultiTaskModel
from polytask.models.encoder import load_encoder
from polytask.params import count_parameters
from polytask.progress import TrainProgress
from polytask.runlog import MetricsLog, plot_curves, read_records, truncate_after
from polytask.tasks import TaskSpec, task_type

CHECKPOINT = "checkpoint"
BEST = "model"


@dataclass
class Setup:
    """Everything built from a config before any file is written (all validation happens here)."""

    config: RunConfig
    tokenizer: PreTrainedTokenizerBase
    data: dict[str, TaskData]
    model: MultiTaskModel

    @property
    def specs(self) -> dict[str, TaskSpec]:
        return {name: d.spec for name, d in self.data.items()}


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


def build(config: RunConfig) -> Setup:
    """Load encoder, tokenizer and every task's data; build the model. Raises on bad input."""
    set_seed(config.seed)
    encoder, tokenizer = load_encoder(config.encoder.name)
    data = {
        t.name: load_task_data(t, tokenizer, t.max_length or config.encoder.max_length, config.seed)
        for t in config.tasks
    }
    arch = config.architecture
    model = ARCHITECTURES.get(arch.name)(
        encoder,
        [d.spec for d in data.values()],
        pooling=config.encoder.pooling,
        head_hidden=arch.head_hidden,
        head_dropout=arch.head_dropout,
    )
    return Setup(config, tokenizer, data, model)


def task_losses(
    model: MultiTaskModel, batch: Batch, specs: dict[str, TaskSpec]
) -> dict[str, torch.Tensor]:
    """One shared forward of a multi-task batch, then each present task's own loss."""
    outputs = model(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.segments)
    return {
        s.task: task_type(specs[s.task].type).loss(
            specs[s.task], outputs[s.task], batch.labels[s.task]
        )
        for s in batch.segments
    }


class WarmupLinearDecay:
    """LR factor: linear warm-up from 0 over ``warmup`` steps, then linear decay to 0 at ``total``.

    (transformers has the same schedule, but importing it pulls in its Trainer and PEFT: 3 s.)
    """

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))


def primary_metric(spec: TaskSpec) -> str:
    return task_type(spec.type).primary_metric


def build_optimizer(
    model: MultiTaskModel, lr: float, head_lr: float | None, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW; heads may get their own learning rate; no decay on biases and norms."""
    shared = {id(p) for _, p in model.shared_parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "norm" in name.lower()
        groups.setdefault((id(p) in shared, no_decay), []).append(p)
    param_groups: list[dict[str, Any]] = [
        {
            "params": ps,
            "lr": lr if is_shared else (head_lr or lr),
            "weight_decay": 0.0 if nd else weight_decay,
        }
        for (is_shared, nd), ps in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups, lr=lr)


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


def save_checkpoint(
    run_dir: Path,
    model: MultiTaskModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sampler: Sampler,
    streams: dict[str, TaskStream],
    state: TrainState,
) -> None:
    tensors, layout = ckpt.optimizer_tensors(optimizer)
    rng = {f"sampler.{k}": v for k, v in sampler.state_dict().items()}
    rng["torch"] = torch.get_rng_state()

    def fill(tmp: Path) -> None:
        from safetensors.torch import save_model

        save_model(model, str(tmp / ckpt.MODEL_FILE))
        ckpt.save_tensors(tmp / "optimizer.safetensors", tensors)
        ckpt.save_tensors(tmp / "rng.safetensors", rng)
        ckpt.write_json(
            tmp / "trainer_state.json",
            {
                "state": asdict(state),
                "optimizer": layout,
                "scheduler": scheduler.state_dict(),
                "streams": {t: s.state_dict() for t, s in streams.items()},
            },
        )

    ckpt.write_folder(run_dir / CHECKPOINT, fill)


def load_checkpoint(
    folder: Path,
    model: MultiTaskModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sampler: Sampler,
    streams: dict[str, TaskStream],
) -> TrainState:
    import json

    from safetensors.torch import load_model

    meta = json.loads((folder / "trainer_state.json").read_text("utf-8"))
    load_model(model, str(folder / ckpt.MODEL_FILE))
    optimizer.load_state_dict(
        ckpt.optimizer_state(ckpt.load_tensors(folder / "optimizer.safetensors"), meta["optimizer"])
    )
    scheduler.load_state_dict(meta["scheduler"])
    rng = ckpt.load_tensors(folder / "rng.safetensors")
    sampler.load_state_dict(
        {k.removeprefix("sampler."): v for k, v in rng.items() if k.startswith("sampler.")}
    )
    torch.set_rng_state(rng["torch"])
    for task, s in meta["streams"].items():
        streams[task].load_state_dict(s)
    return TrainState(**meta["state"])


def train(
    config: RunConfig,
    output: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train a multi-task model; writes the run directory and returns ``final_metrics``."""
    run_dir = Path(output)
    resume_from = prepare_run_dir(run_dir, resume, overwrite)
    setup = build(config)  # every input check happens here, before anything is written
    tc, specs, model = config.train, setup.specs, setup.model
    names = list(specs)
    accelerator = Accelerator(mixed_precision=tc.mixed_precision)
    optimizer = build_optimizer(model, tc.lr, tc.head_lr, tc.weight_decay)
    scheduler = LambdaLR(
        optimizer, WarmupLinearDecay(int(tc.warmup_ratio * tc.max_steps), tc.max_steps)
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    raw_model: MultiTaskModel = accelerator.unwrap_model(model)
    sc = config.sampler
    train_splits = {n: setup.data[n].splits["train"] for n in names}
    sampler = build_sampler(
        sc.name,
        [len(train_splits[n]) for n in names],
        config.seed,
        sc.alpha,
        sc.alpha_start,
        sc.alpha_end,
    )
    streams = {
        n: TaskStream(train_splits[n], tc.batch_size, tc.bucket_batches, config.seed + i)
        for i, n in enumerate(names)
    }
    k = len(names) if sc.tasks_per_step == "all" else sc.tasks_per_step
    val = {n: setup.data[n].splits["validation"] for n in names}
    pad_id = int(setup.tokenizer.pad_token_id or 0)
    state = TrainState(examples=dict.fromkeys(names, 0), updates=dict.fromkeys(names, 0))
    if resume_from is not None:
        state = load_checkpoint(resume_from, raw_model, optimizer, scheduler, sampler, streams)
        truncate_after(run_dir / "metrics.jsonl", state.step)
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(dump_config(config), "utf-8")
    log = MetricsLog(run_dir / "metrics.jsonl")
    params = count_parameters(raw_model)
    every = tc.checkpoint_every or tc.eval_every
    progress = TrainProgress(
        tc.max_steps, state.step, enabled=show_progress and accelerator.is_main_process
    )
    started = time.perf_counter() - state.seconds
    model.train()
    while state.step < tc.max_steps:
        picked = [names[i] for i in sampler.sample(state.step, tc.max_steps, k)]
        batch = collate([(specs[n], streams[n].next_rows()) for n in picked], pad_id).to(
            accelerator.device
        )
        with accelerator.autocast():
            losses = task_losses(model, batch, specs)
        weighted_backward(accelerator, losses, {n: specs[n].weight for n in picked})
        if tc.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        for seg in batch.segments:
            state.examples[seg.task] += seg.stop - seg.start
            state.updates[seg.task] += 1
        loss_values = {n: round(float(v.detach()), 6) for n, v in losses.items()}
        log.write(
            {
                "event": "train",
                "step": state.step,
                "tasks": picked,
                "loss": loss_values,
                "lr": scheduler.get_last_lr()[0],
                "examples": dict(state.examples),
                "updates": dict(state.updates),
            }
        )
        progress.advance(loss_values)
        if state.step % tc.eval_every == 0 or state.step == tc.max_steps:
            stop = _evaluate_and_keep_best(
                setup, raw_model, val, state, log, run_dir, pad_id, accelerator
            )
            if stop:
                break
        if state.step % every == 0 and state.step < tc.max_steps:
            state.seconds = time.perf_counter() - started
            save_checkpoint(run_dir, raw_model, optimizer, scheduler, sampler, streams, state)
    progress.close()
    log.close()
    state.seconds = time.perf_counter() - started
    return _finish(setup, run_dir, state, params, accelerator.device, pad_id)


def _evaluate_and_keep_best(
    setup: Setup,
    model: MultiTaskModel,
    val: dict[str, Any],
    state: TrainState,
    log: MetricsLog,
    run_dir: Path,
    pad_id: int,
    accelerator: Accelerator,
) -> bool:
    """Validation metrics; save the best model by the primary task's metric; True = stop early."""
    tc, specs = setup.config.train, setup.specs
    metrics = evaluate(model, val, specs, tc.eval_batch_size, pad_id, accelerator.device)
    primary = {n: metrics[n].get(primary_metric(specs[n]), 0.0) for n in specs}
    score = primary[setup.config.primary]
    log.write(
        {
            "event": "eval",
            "step": state.step,
            "split": "validation",
            "metrics": metrics,
            "primary": primary,
        }
    )
    if state.best is None or score > state.best:
        state.best, state.best_step, state.bad_evals = score, state.step, 0
        meta = {
            "config": setup.config.model_dump(mode="json"),
            "step": state.step,
            "primary_task": setup.config.primary,
            "primary_metric": score,
        }
        ckpt.save_model_folder(run_dir / BEST, model, setup.tokenizer, meta)
        return False
    state.bad_evals += 1
    return tc.patience is not None and state.bad_evals >= tc.patience


def _finish(
    setup: Setup,
    run_dir: Path,
    state: TrainState,
    params: dict[str, Any],
    device: torch.device,
    pad_id: int,
) -> dict[str, Any]:
    """Reload the best weights, evaluate validation and test, write final_metrics.json and plots."""
    from safetensors.torch import load_model

    model = setup.model
    load_model(model, str(run_dir / BEST / ckpt.MODEL_FILE))
    tc, names = setup.config.train, list(setup.specs)
    tasks: dict[str, Any] = {}
    for split in ("validation", "test"):
        splits = {n: setup.data[n].splits[split] for n in names if split in setup.data[n].splits}
        for n, m in evaluate(
            model, splits, setup.specs, tc.eval_batch_size, pad_id, device, with_majority=True
        ).items():
            if split == "test" and "majority_accuracy" in m:
                tasks.setdefault(n, {})["majority_accuracy"] = m.pop("majority_accuracy")
            m.pop("majority_accuracy", None)
            tasks.setdefault(n, {})[split] = m
    final = {
        "tasks": tasks,
        "primary_task": setup.config.primary,
        "primary_metric": {n: primary_metric(s) for n, s in setup.specs.items()},
        "best_step": state.best_step,
        "steps": state.step,
        "train_seconds": round(state.seconds, 1),
        "examples_seen": state.examples,
        "updates": state.updates,
        "params": params,
    }
    ckpt.write_json(run_dir / "final_metrics.json", final)
    plot_curves(read_records(run_dir / "metrics.jsonl"), run_dir / "curves.png")
    return final
