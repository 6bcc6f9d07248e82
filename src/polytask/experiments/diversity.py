"""The diversity experiment: one instruction task type vs a mixture, same number of examples.

The claim under test (FLAN; Wei et al. 2022, Chung et al. 2022; the source article): fine-
tuning an LLM on a diverse mixture of instruction task types generalises better to an
unseen task type than fine-tuning on one task type, for the same number of examples. Two
configs make the pair: the ``single`` arm trains one task type, the ``mixed`` arm several;
both train the same ``max_steps × batch_size × tasks per step`` examples on the same base
model and adapter, and share their held-out tasks (``held_out: true``), which neither trains
on. The untuned model is evaluated once on every task as the floor. The table is written
whatever it shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from polytask.checkpoint import write_json
from polytask.config.run import RunConfig
from polytask.errors import ConfigError


def examples_per_run(config: RunConfig) -> int:
    """Training examples a run sees: steps × batch size × tasks per step."""
    trained = [t for t in config.tasks if not t.held_out]
    k = len(trained) if config.sampler.tasks_per_step == "all" else config.sampler.tasks_per_step
    return config.train.max_steps * config.train.batch_size * k


def untuned_metrics(config: RunConfig, split: str = "validation") -> dict[str, dict[str, float]]:
    """Every task's metrics on ``split`` for the model as built, before any training step."""
    from polytask.evaluate import evaluate
    from polytask.train import build

    setup = build(config)
    splits = {n: d.splits[split] for n, d in setup.data.items() if split in d.splits}
    pad_id = int(setup.tokenizer.pad_token_id or 0)
    return evaluate(
        setup.model,
        splits,
        setup.specs,
        config.train.eval_batch_size,
        pad_id,
        torch.device("cpu"),
        tokenizer=setup.tokenizer,
    )


def check_pair(single: RunConfig, mixed: RunConfig) -> list[str]:
    """The held-out tasks both arms share; :class:`ConfigError` when the arms differ in
    anything but their trained tasks (base model, adapter, examples, held-out tasks)."""
    if single.encoder != mixed.encoder or single.architecture != mixed.architecture:
        raise ConfigError("diversity: both arms need the same base model and architecture")
    n_single, n_mixed = examples_per_run(single), examples_per_run(mixed)
    if n_single != n_mixed:
        raise ConfigError(f"diversity: the arms train {n_single} and {n_mixed} examples")
    held = {t.name: t for t in single.tasks if t.held_out}
    if held != {t.name: t for t in mixed.tasks if t.held_out} or not held:
        raise ConfigError("diversity: both arms need the same (non-empty) held-out tasks")
    mixed_names = {t.name for t in mixed.tasks}
    missing = [t.name for t in single.tasks if t.name not in mixed_names]
    if missing:
        raise ConfigError(f"diversity: single-arm task '{missing[0]}' is not in the mixed arm")
    return sorted(held)


def run_diversity(
    single: RunConfig,
    mixed: RunConfig,
    out: str | Path,
    overwrite: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate the untuned model, train both arms, write ``diversity.json`` and ``.md``."""
    from polytask.train import train

    held = check_pair(single, mixed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda line: None)
    started = time.perf_counter()
    say("evaluating the untuned model")
    base = untuned_metrics(mixed)
    arms: dict[str, Any] = {}
    for name, config in (("single", single), ("mixed", mixed)):
        say(f"training the {name} arm ({examples_per_run(config)} examples)")
        final = train(config, out / name, overwrite=overwrite, show_progress=show_progress)
        arms[name] = {
            "trained_tasks": [t.name for t in config.tasks if not t.held_out],
            "validation": {n: m["validation"] for n, m in final["tasks"].items()},
            "train_seconds": final["train_seconds"],
        }
    summary = {
        "held_out": held,
        "examples_per_arm": examples_per_run(mixed),
        "untuned": base,
        "arms": arms,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "diversity.json", summary)
    (out / "diversity.md").write_text(markdown(summary), "utf-8")
    return summary


def markdown(summary: dict[str, Any]) -> str:
    """The table: every task's validation accuracy (and macro F1 / entity F1) per arm."""
    arms = summary["arms"]
    tasks = list(summary["untuned"])
    lines = [
        f"{summary['examples_per_arm']} training examples per arm; "
        f"held out (trained by neither): {', '.join(summary['held_out'])}",
        "",
        "| task | trained by | metric | untuned | single | mixed |",
        "|---|---|---|---|---|---|",
    ]
    for task in tasks:
        by = [a for a in arms if task in arms[a]["trained_tasks"]]
        extra = [m for m in ("macro_f1", "entity_f1") if m in summary["untuned"][task]]
        for metric in ["accuracy", *extra]:
            cells = [_cell(summary["untuned"].get(task, {}), metric)]
            cells += [_cell(arms[a]["validation"].get(task, {}), metric) for a in arms]
            owner = ", ".join(by) or "held out"
            lines.append(f"| {task} | {owner} | {metric} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def _cell(metrics: dict[str, float], metric: str) -> str:
    return f"{metrics[metric]:.3f}" if metric in metrics else "—"
