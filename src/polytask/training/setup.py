"""Everything a run builds from its config before any file is written: tokenizer, data,
model, objective (:func:`build`), and the optimiser with its schedule
(:func:`build_optimization`). Every input check happens here."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from accelerate.utils import set_seed
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedTokenizerBase

from polytask.config.run import RunConfig
from polytask.data.counts import count_warnings
from polytask.data.loading import load_task_data
from polytask.data.read import TaskData
from polytask.errors import ConfigError, DataError
from polytask.models import ARCHITECTURES, MultiTaskModel
from polytask.objective import Objective, build_objective
from polytask.tasks import TaskSpec
from polytask.training.optim import WarmupLinearDecay, build_optimizer


@dataclass
class Setup:
    """Everything built from a config before any file is written (all validation happens here)."""

    config: RunConfig
    tokenizer: PreTrainedTokenizerBase
    data: dict[str, TaskData]
    model: MultiTaskModel
    objective: Objective
    #: gradient clipping of the step (``train.max_grad_norm``; None: no clipping)
    max_grad_norm: float | None = None
    #: tasks reading another task's rows (``tasks.N.inputs``): task -> the task it reads
    shares: dict[str, str] = field(default_factory=dict)

    @property
    def specs(self) -> dict[str, TaskSpec]:
        return {name: d.spec for name, d in self.data.items()}


def build(config: RunConfig) -> Setup:
    """Load encoder, tokenizer and every task's data; build the model. Raises on bad input."""
    set_seed(config.seed)
    arch = config.architecture
    encoder, tokenizer = ARCHITECTURES.get(arch.name).load_pretrained(config.encoder.name)
    by_name = {t.name: t for t in config.tasks}
    data = {
        t.name: load_task_data(
            t, tokenizer, t.max_length or config.encoder.max_length, config.seed, tasks=by_name
        )
        for t in config.tasks
    }
    for line in (w for n, d in data.items() for w in count_warnings(n, d.counts)):
        warnings.warn(f"polytask: {line}", UserWarning, stacklevel=2)
    try:
        model = ARCHITECTURES.get(arch.name)(
            encoder,
            [d.spec for d in data.values()],
            pooling=config.encoder.pooling,
            head_hidden=arch.head_hidden,
            head_dropout=arch.head_dropout,
            **arch.kwargs,
        )
    except ValueError as exc:  # an argument that does not fit this encoder or these tasks
        raise ConfigError(f"architecture: {arch.name}: {exc}") from None
    shares = {t.name: t.inputs for t in config.tasks if t.inputs is not None}
    check_shared_rows(shares, data)
    specs = [d.spec for d in data.values() if not d.spec.held_out]  # held-out: evaluated only
    objective = build_objective(
        [s.name for s in specs],
        {s.name: s.weight for s in specs},
        ["regression" if s.type == "regression" else "classification" for s in specs],
        (config.weighting.name, config.weighting.kwargs),
        (config.aggregator.name, config.aggregator.kwargs),
        config.train.single_input or "exact",
        config.aggregator.resolve_every,
    )
    return Setup(config, tokenizer, data, model, objective, config.train.max_grad_norm, shares)


def check_shared_rows(shares: dict[str, str], data: dict[str, TaskData]) -> None:
    """A task reading another's rows (``tasks.N.inputs``) must have the same encoded rows,
    split by split and row for row (the config checked the data sections and columns)."""
    for task, source in shares.items():
        mine, theirs = data[task].splits, data[source].splits
        for split in sorted(set(mine) | set(theirs)):
            a, b = mine.get(split), theirs.get(split)
            if a is None or b is None or len(a) != len(b) or a["input_ids"] != b["input_ids"]:
                raise DataError(
                    f"tasks.{task}.inputs: the {split} rows of '{task}' and '{source}' differ "
                    "(same file and text columns, but other rows after loading: a subset or "
                    "a filter differs); give both tasks the same rows"
                )


def build_optimization(setup: Setup) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """The run's AdamW (model, learned loss weights, aggregator parameters) and its schedule."""
    tc, objective = setup.config.train, setup.objective
    optimizer = build_optimizer(
        setup.model,
        tc.lr,
        tc.head_lr,
        tc.weight_decay,
        [
            (objective.weighting.parameters(), objective.weighting.params_lr),
            (objective.aggregator.parameters(), None),
        ],
    )
    warmup = int(tc.warmup_ratio * tc.max_steps)
    return optimizer, LambdaLR(optimizer, WarmupLinearDecay(warmup, tc.max_steps))
