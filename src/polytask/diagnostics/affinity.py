"""Lookahead inter-task affinity (TAG) over a short training run, and the task groupings it
suggests.

Fifty et al. 2021, "Efficiently Identifying Task Groupings for Multi-Task Learning". At a
step with multi-task batch ``X`` (one micro-batch per task) and shared parameters ``θ_s``,
the lookahead of task ``i`` is one plain SGD step on its loss alone,
``θ_s' = θ_s − η ∇_{θ_s} L_i(X, θ_s, θ_i)`` (``η``: each shared parameter's current learning
rate; SGD as in the paper, not the AdamW update the run itself takes), with every task's
own parameters kept, and

    Z[i, j] = 1 − L_j(X, θ_s', θ_j) / L_j(X, θ_s, θ_j)

is how much that step lowers task ``j``'s loss on the same batch (relative; > 0 helps,
< 0 hurts). Averaged over the measured steps of a short run (the first ``steps`` updates
of the configured run, every task in every step) it gives the ``T × T`` matrix, row = the
stepping task, column = the measured task.

Cost per measured step, on top of the training step: one forward and one backward for
the per-task gradients (:class:`~polytask.autograd.engine.PerTaskGradients`, exact), ``T + 1``
forwards without gradients, and ``T`` copies of the shared gradients in memory.

>>> summary = task_affinity(load_config("run.yaml"), steps=20)      # doctest: +SKIP
>>> summary["matrix"], summary["groups"]["2"]                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from accelerate import Accelerator
from rich.table import Table
from rich.text import Text
from torch.func import functional_call

from polytask.autograd.engine import PerTaskGradients
from polytask.config.run import RunConfig
from polytask.data.batching import Batch, TaskStream, collate
from polytask.errors import ConfigError
from polytask.models import MultiTaskModel
from polytask.tasks import TaskSpec, task_type
from polytask.training.progress import TrainProgress
from polytask.training.setup import Setup, build, build_optimization
from polytask.training.step import task_losses, train_step

MAX_GROUPING_TASKS = 10  # exhaustive search: Bell(10) = 115,975 partitions in all
DEFAULT_STEPS = 20


def grouping_sizes(n_tasks: int, groups: int | None) -> list[int]:
    """The numbers of groups to search: ``groups`` alone, or every K from 1 to min(T, 4)."""
    if n_tasks < 2:
        raise ConfigError(f"affinity needs at least 2 tasks; the config has {n_tasks}")
    if n_tasks > MAX_GROUPING_TASKS:
        raise ConfigError(
            f"the grouping searches every partition exhaustively: at most {MAX_GROUPING_TASKS} "
            f"tasks, the config has {n_tasks}"
        )
    if groups is None:
        return list(range(1, min(n_tasks, 4) + 1))
    if not 1 <= groups <= n_tasks:
        raise ConfigError(f"--groups must be between 1 and the {n_tasks} tasks, not {groups}")
    return [groups]


def check_steps(steps: int, every: int, max_steps: int) -> None:
    """``steps`` updates measured every ``every``-th: both >= 1, within the run's schedule."""
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, not {steps}")
    if every < 1:
        raise ConfigError(f"--every must be >= 1, not {every}")
    if steps > max_steps:
        raise ConfigError(
            f"--steps {steps} is more than train.max_steps {max_steps} (the learning rate is 0 "
            "after it): lower --steps or raise train.max_steps"
        )


def measure(
    model: MultiTaskModel,
    batch: Batch,
    specs: dict[str, TaskSpec],
    engine: PerTaskGradients,
    lrs: dict[int, float],
) -> torch.Tensor:
    """``Z [T, T]`` (float64, tasks in ``batch.segments`` order) on one batch, in eval mode.

    ``lrs`` maps ``id(parameter)`` to its learning rate. The lookahead parameters go to
    :func:`torch.func.functional_call`, so the model's own parameters are never written;
    the engine's ``.grad`` is cleared again. Call it between optimiser steps.
    """
    if any(p.grad is not None for p in model.parameters()):
        raise RuntimeError("measure() needs a model without pending gradients")
    names = {id(p): n for n, p in model.named_parameters()}
    shared = dict(engine.shared)
    was_training = model.training
    model.eval()  # no dropout: every loss below is the same function of the parameters
    try:
        with engine.capture(batch.segments):
            losses = task_losses(model, batch, specs)
        equal = torch.ones(len(losses), dtype=torch.float64)
        stats = engine.backward(losses, lambda gramian: equal, keep_task_grads=True)
        model.zero_grad(set_to_none=True)  # only the per-task gradients are wanted
        grads = stats.task_grads or {}  # a parameter no task reaches is absent: zero gradient

        def step(i: int) -> dict[str, torch.Tensor]:  # θ_s − η g_i, by the model's names
            return {
                names[id(shared[n])]: shared[n] - lrs[id(shared[n])] * g[i]
                for n, g in grads.items()
            }

        with torch.no_grad():
            before = _losses(model, batch, specs, {})
            after = [_losses(model, batch, specs, step(i)) for i in range(len(losses))]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    ratio = torch.stack(after) / before.clamp(min=torch.finfo(torch.float64).tiny)
    # a task already at zero loss has nothing to gain or lose: affinity 0 towards it
    return torch.where(before > 0, 1.0 - ratio, torch.zeros_like(ratio))


def _losses(
    model: MultiTaskModel,
    batch: Batch,
    specs: dict[str, TaskSpec],
    params: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Every task's loss (float64, segment order) with ``params`` swapped in for this call."""
    args = (batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.segments)
    outputs = functional_call(model, params, args)
    return torch.stack(
        [
            task_type(specs[s.task].type).loss(specs[s.task], outputs[s.task], batch.labels[s.task])
            for s in batch.segments
        ]
    ).double()


def affinity_run(
    setup: Setup, steps: int, every: int = 1, show_progress: bool = False
) -> tuple[torch.Tensor, int]:
    """Train ``setup.model`` for ``steps`` updates as ``polytask train`` would with every task
    in every step; before the update of steps 1, 1 + every, ... measure ``Z`` on that step's
    batch. Returns the mean ``Z [T, T]`` and the number of measured steps."""
    config, specs = setup.config, setup.specs
    tc, names = config.train, list(specs)
    check_steps(steps, every, tc.max_steps)
    if not any(p.requires_grad for _, p in setup.model.shared_parameters()):
        raise ConfigError(
            f"architecture '{config.architecture.name}' shares no trainable parameters: the "
            "lookahead steps shared parameters, so there is no affinity to measure"
        )
    accelerator = Accelerator(mixed_precision=tc.mixed_precision)
    optimizer, scheduler = build_optimization(setup)
    model, optimizer, scheduler = accelerator.prepare(setup.model, optimizer, scheduler)
    setup.objective.to(accelerator.device)
    unwrapped = accelerator.unwrap_model(model)
    setup.objective.attach(unwrapped)
    engine = PerTaskGradients(unwrapped)
    splits = {n: setup.data[n].splits["train"] for n in names}
    streams = [  # the seeds `polytask train` gives its streams: the same batches
        TaskStream(splits[n], tc.batch_size, tc.bucket_batches, config.seed + i, specs[n])
        for i, n in enumerate(names)
    ]
    pad_id = int(setup.tokenizer.pad_token_id or 0)
    total = torch.zeros(len(names), len(names), dtype=torch.float64)
    measured = 0
    progress = TrainProgress(steps, enabled=show_progress)
    model.train()
    for step in range(steps):
        rows = [(specs[n], s.next_rows()) for n, s in zip(names, streams, strict=True)]
        batch = collate(rows, pad_id).to(accelerator.device)
        if step % every == 0:
            lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
            total += measure(unwrapped, batch, specs, engine, lrs).cpu()
            measured += 1
        record = train_step(setup, model, batch, accelerator, optimizer, scheduler)
        progress.advance(record["loss"])
    progress.close()
    return total / measured, measured


def set_partitions(n: int, k: int) -> Iterator[list[list[int]]]:
    """Every partition of ``0..n-1`` into exactly ``k`` non-empty groups, each once
    (groups ordered by their smallest member)."""

    def place(item: int, groups: list[list[int]]) -> Iterator[list[list[int]]]:
        if item == n:
            if len(groups) == k:
                yield [list(g) for g in groups]
            return
        if n - item > k - len(groups):  # enough items left to open the missing groups later
            for group in groups:
                group.append(item)
                yield from place(item + 1, groups)
                group.pop()
        if len(groups) < k:
            groups.append([item])
            yield from place(item + 1, groups)
            groups.pop()

    if 1 <= k <= n:
        yield from place(0, [])


def group_score(matrix: torch.Tensor, group: list[int]) -> float:
    """Σ over members j of the mean affinity ``Z[i, j]`` j receives from the other members
    i; a singleton scores 0 (no other member to help or hurt it)."""
    if len(group) < 2:
        return 0.0
    sub = matrix[group][:, group].double()
    off = sub.sum(dim=0) - sub.diagonal()
    return float((off / (len(group) - 1)).sum())


def best_grouping(matrix: torch.Tensor, tasks: list[str], k: int) -> dict[str, Any]:
    """The partition of ``tasks`` into ``k`` groups with the highest total :func:`group_score`
    (exhaustive; the first found wins a tie). ``{"groups": [[task...]], "score": float}``."""
    cache: dict[tuple[int, ...], float] = {}
    best: tuple[float, list[list[int]]] | None = None
    for partition in set_partitions(len(tasks), k):
        score = 0.0
        for group in partition:
            key = tuple(group)
            if key not in cache:
                cache[key] = group_score(matrix, group)
            score += cache[key]
        if best is None or score > best[0] + 1e-15:
            best = (score, partition)
    assert best is not None
    return {"groups": [[tasks[i] for i in g] for g in best[1]], "score": _short(best[0])}


def _short(value: float) -> float:
    return float(f"{value:.6g}")


def task_affinity(
    config: RunConfig,
    steps: int = DEFAULT_STEPS,
    every: int = 1,
    groups: int | None = None,
    show_progress: bool = False,
    source: str = "",
) -> dict[str, Any]:
    """Build the configured model, run :func:`affinity_run`, group the tasks; the
    ``affinity.json`` dict. Every argument is checked before the encoder is loaded."""
    tasks = [t.name for t in config.tasks]
    sizes = grouping_sizes(len(tasks), groups)
    check_steps(steps, every, config.train.max_steps)  # before the slow build
    matrix, measured = affinity_run(build(config), steps, every, show_progress)
    return {
        "config": source,
        "tasks": tasks,
        "steps": steps,
        "every": every,
        "measured": measured,
        "lookahead": "sgd",
        "matrix": [[_short(float(v)) for v in row] for row in matrix],
        "groups": {str(k): best_grouping(matrix, tasks, k) for k in sizes},
    }


def affinity_table(summary: dict[str, Any]) -> Table:
    """The ``T × T`` matrix: row = the task whose step is taken, column = the task measured."""
    table = Table(
        title=f"task affinity Z[i→j] (mean of {summary['measured']} of {summary['steps']} steps)"
    )
    table.add_column("step on ↓ / loss of →")
    for task in summary["tasks"]:
        table.add_column(task, justify="right")
    for task, row in zip(summary["tasks"], summary["matrix"], strict=True):
        table.add_row(task, *(Text(f"{v:+.3g}", style=_colour(v)) for v in row))
    return table


def _colour(value: float) -> str:
    return "green" if value > 0 else "red" if value < 0 else ""


def groups_table(summary: dict[str, Any]) -> Table:
    """The best grouping for each number of groups K, with its score."""
    table = Table(title="suggested groupings (score: Σ of each task's mean affinity in its group)")
    for column in ("K", "groups", "score"):
        table.add_column(column, justify="left" if column == "groups" else "right")
    for k, entry in summary["groups"].items():
        text = "  ".join("{" + ", ".join(g) + "}" for g in entry["groups"])
        table.add_row(k, text, f"{entry['score']:+.3g}")
    return table
