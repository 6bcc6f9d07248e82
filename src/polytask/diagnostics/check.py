"""``polytask check``: the pre-flight checklist, measured on a few batches before a long run.

Five parts, each a plain JSON-able dict (``check.json``):

* ``cosine`` — pairwise cosine similarity of the per-task gradients of the shared
  parameters, per batch, then mean / std / min / max over ``batches`` batches, labelled
  with the rule of thumb (> +0.1 positive transfer, −0.1…+0.1 neutral, < −0.1
  interference). Each batch holds one micro-batch of every task; the per-task gradients
  come from :class:`polytask.autograd.engine.PerTaskGradients` (one forward and one backward per
  batch) with the model in eval mode, so the numbers are deterministic. Every task's
  batches are drawn with the same seed: two tasks over the same file see the same rows.
* ``loss_scale`` — each task's raw loss at initialisation (mean over the same batches) and
  whether loss-scale normalisation is advised.
* ``sampling`` — per-task update counts over the first 100 steps for the configured sampler
  and each alternative (a dry run of the sampler), flagging tasks with < 5 % of updates.
* ``datasets`` — training-set sizes and their imbalance ratio (largest / smallest).
* ``recommendations`` — the decision rules of docs/check.md (:mod:`polytask.diagnostics.rules`),
  each with the evidence that triggered it.

Nothing is trained and nothing is written unless asked (``-o FILE``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from polytask.autograd.engine import PerTaskGradients
from polytask.config.run import ArchitectureConfig, RunConfig
from polytask.data.batching import Batch, TaskStream, collate
from polytask.diagnostics import HEAD_WARMUP
from polytask.diagnostics.outcome import outcomes
from polytask.diagnostics.rules import NEUTRAL, loss_scale_advice, recommend
from polytask.distributed import make_accelerator
from polytask.errors import ConfigError
from polytask.objective import build_objective
from polytask.samplers import SAMPLERS, build_sampler, update_counts
from polytask.training.setup import Setup, build
from polytask.training.step import task_losses, train_step

PLAN_STEPS = 100
STARVED = 0.05


def label(cosine: float) -> str:
    """The rule of thumb for a mean gradient cosine."""
    if cosine > NEUTRAL:
        return "positive transfer"
    if cosine < -NEUTRAL:
        return "interference"
    return "neutral"


def check_batches(setup: Setup, batches: int, seed_offset: int = 0) -> list[Batch]:
    """``batches`` multi-task batches, one training micro-batch per task, on the CPU.

    Every task's stream has the same seed (common random numbers): identical datasets
    give identical rows, so a duplicated task measures exactly the same gradient.
    """
    config, pad_id = setup.config, int(setup.tokenizer.pad_token_id or 0)
    streams = {
        name: TaskStream(
            data.splits["train"],
            config.train.batch_size,
            config.train.bucket_batches,
            config.seed + seed_offset,
            data.spec,
        )
        for name, data in setup.data.items()
    }
    return [
        collate([(setup.data[n].spec, s.next_rows()) for n, s in streams.items()], pad_id)
        for _ in range(batches)
    ]


def gradient_cosines(setup: Setup, batches: list[Batch]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-batch cosine matrices ``[N, T, T]`` of the shared gradients, and losses ``[N, T]``.

    The model is put in eval mode (no dropout) and its gradients are cleared afterwards.
    """
    model, specs, tasks = setup.model, setup.specs, list(setup.specs)
    if not model.shared_parameters():
        raise ConfigError(
            f"architecture: '{setup.config.architecture.name}' shares no parameters, so its "
            "tasks' gradients have nothing to compare"
        )
    engine = PerTaskGradients(model)
    was_training = model.training
    model.eval()
    cosines, losses = [], []
    try:
        for batch in batches:
            with engine.capture(batch.segments):
                step = task_losses(model, batch, specs)
            losses.append(torch.stack([step[t].detach().double() for t in tasks]))
            stats = engine.backward({t: step[t] for t in tasks}, _ones)
            cosines.append(stats.cosine.double())
            model.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
    return torch.stack(cosines), torch.stack(losses)


@torch.no_grad()
def initial_losses(setup: Setup, batches: list[Batch]) -> torch.Tensor:
    """Each task's loss on each batch, ``[N, T]``, without gradients (eval mode)."""
    model, tasks, was_training = setup.model, list(setup.specs), setup.model.training
    model.eval()
    try:
        rows = [task_losses(model, b, setup.specs) for b in batches]
    finally:
        model.train(was_training)
    return torch.tensor([[float(r[t]) for t in tasks] for r in rows], dtype=torch.float64)


def warm_up_heads(setup: Setup, steps: int) -> None:
    """Train only the task heads for ``steps`` steps (every task each step, the shared
    parameters frozen): random heads make every gradient cosine read near zero.

    The training loop's own step (:func:`~polytask.training.step.train_step`) on the sum of
    the task losses: AdamW at ``train.head_lr`` (default 1e-3, a linear-probe rate), no
    clipping, dropout off, batches drawn apart from the measurement batches.
    """
    model, specs = setup.model, setup.specs
    shared = [p for _, p in model.shared_parameters() if p.requires_grad]
    heads = [p for t in specs for _, p in model.task_parameters(t) if p.requires_grad]
    optimizer = torch.optim.AdamW(heads, lr=setup.config.train.head_lr or 1e-3)
    scheduler = LambdaLR(optimizer, lambda _: 1.0)
    tasks = list(specs)
    summed = build_objective(tasks, dict.fromkeys(tasks, 1.0), [], ("equal", {}), ("sum", {}))
    heads_only = replace(setup, objective=summed, max_grad_norm=None)
    accelerator = make_accelerator(setup.config.train.mixed_precision)
    was_training = model.training
    model.eval()
    for p in shared:
        p.requires_grad_(False)
    try:
        summed.attach(model)
        for batch in check_batches(setup, steps, seed_offset=1):
            train_step(heads_only, model, batch, accelerator, optimizer, scheduler)
    finally:
        for p in shared:
            p.requires_grad_(True)
        model.train(was_training)


def _ones(gramian: torch.Tensor) -> torch.Tensor:
    return torch.ones(gramian.shape[0], dtype=gramian.dtype, device=gramian.device)


def cosine_summary(tasks: list[str], cosines: torch.Tensor) -> dict[str, Any]:
    """Mean, spread and label of every pair over the batches (``cosines``: ``[N, T, T]``)."""
    mean = cosines.mean(0)
    std = cosines.std(0, correction=1) if len(cosines) > 1 else torch.zeros_like(mean)
    pairs = []
    for i in range(len(tasks)):
        for j in range(i + 1, len(tasks)):
            values = cosines[:, i, j]
            pairs.append(
                {
                    "a": tasks[i],
                    "b": tasks[j],
                    "mean": round(float(values.mean()), 6),
                    "std": round(float(std[i, j]), 6),
                    "min": round(float(values.min()), 6),
                    "max": round(float(values.max()), 6),
                    "label": label(float(values.mean())),
                }
            )
    return {"mean": _rounded(mean), "std": _rounded(std), "pairs": pairs}


EVERY_TASK = "every task"  # the plan of tasks_per_step: all (no sampler)


def sampling_plans(config: RunConfig, sizes: list[int], tasks: list[str]) -> dict[str, Any]:
    """Update counts over the first 100 steps for the configured sampler and the others."""
    sc, k = config.sampler, _tasks_per_step(config, len(tasks))
    plans = {}
    for name in [sc.name, *(n for n in SAMPLERS.names() if n != sc.name)]:
        own = sc.kwargs if name == sc.name else None  # the others at their defaults
        sampler = build_sampler(name, sizes, config.seed, own)
        counts = update_counts(sampler, PLAN_STEPS, k, config.train.max_steps)
        total = sum(counts)
        shares = {t: round(c / total, 4) for t, c in zip(tasks, counts, strict=True)}
        plans[name or EVERY_TASK] = {
            "counts": dict(zip(tasks, counts, strict=True)),
            "shares": shares,
            "starved": [t for t, s in shares.items() if s < STARVED],
        }
    return {
        "configured": sc.name or EVERY_TASK,
        "tasks_per_step": k,
        "steps": PLAN_STEPS,
        "plans": plans,
    }


def _tasks_per_step(config: RunConfig, n: int) -> int:
    k = config.sampler.tasks_per_step
    return n if k == "all" else min(int(k), n)


def measurement_setup(config: RunConfig) -> tuple[Setup, str | None]:
    """The setup the gradients are measured on, and a note when it is not the configured one.

    An architecture without shared parameters (soft sharing) is measured as hard sharing
    over the same encoder and heads: the question is whether the tasks interfere when they
    share the encoder.
    """
    setup = build(config)
    if setup.model.shared_parameters():
        return setup, None
    arch = config.architecture
    hard = config.model_copy(
        update={
            "architecture": ArchitectureConfig(
                name="hard", head_hidden=arch.head_hidden, head_dropout=arch.head_dropout
            )
        }
    )
    note = f"'{arch.name}' shares no parameters: gradients measured with hard sharing"
    return build(hard), note


def run_check(
    config: RunConfig, batches: int = 8, source: str = "", head_warmup: int = HEAD_WARMUP
) -> dict[str, Any]:
    """Build the configured model and data and measure every part of the checklist."""
    if batches < 1:
        raise ConfigError(f"--batches must be at least 1, not {batches}")
    if head_warmup < 0:
        raise ConfigError(f"--head-warmup must be 0 or more, not {head_warmup}")
    started = time.perf_counter()
    setup, note = measurement_setup(config)
    result = check_setup(setup, batches, head_warmup)
    result["config"] = source
    if note:
        result["note"] = note
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def check_setup(setup: Setup, batches: int, head_warmup: int = 0) -> dict[str, Any]:
    """The checklist on an already built setup (the model's current weights).

    The raw loss scales are measured before any head warm-up (at initialisation); the
    cosines after it.
    """
    config, tasks = setup.config, list(setup.specs)
    if len(tasks) < 2:
        raise ConfigError("check needs at least two tasks: there is nothing to compare")
    sizes = [len(setup.data[t].splits["train"]) for t in tasks]
    measured = check_batches(setup, batches)
    if head_warmup:
        losses = initial_losses(setup, measured)
        warm_up_heads(setup, head_warmup)
        cosines, _ = gradient_cosines(setup, measured)
    else:
        cosines, losses = gradient_cosines(setup, measured)
    mean_loss = losses.mean(0)
    scale = {
        t: {"loss": round(float(v), 6), "type": setup.specs[t].type}
        for t, v in zip(tasks, mean_loss, strict=True)
    }
    ratio = float(mean_loss.max() / mean_loss.min().clamp(min=1e-12))
    result: dict[str, Any] = {
        "tasks": tasks,
        "batches": batches,
        "head_warmup": head_warmup,
        "cosine": cosine_summary(tasks, cosines),
        "loss_scale": {
            "tasks": scale,
            "ratio": round(ratio, 4),
            "advice": loss_scale_advice(
                ratio, config.weighting.name, config.tasks_per_step >= len(tasks)
            ),
        },
        "sampling": sampling_plans(config, sizes, tasks),
        "datasets": {
            "sizes": dict(zip(tasks, sizes, strict=True)),
            "imbalance": round(max(sizes) / min(sizes), 4),
        },
    }
    result["recommendations"] = recommend(config, result)
    result["outcome"] = outcomes(config, result)
    return result


def _rounded(matrix: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in matrix]
