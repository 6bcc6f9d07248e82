"""``polytask compare``: the multi-task model against one single-task baseline per task.

Per seed (``config.seed``, ``config.seed + 1``, ...) it trains the configured multi-task model
and, for every served (non-auxiliary) task, a baseline with the same encoder, pooling,
max_length, head settings, batch size, learning rates and data: ``hard`` architecture,
``equal`` weighting, ``sum`` aggregator, that task alone (loss weight 1) as the primary task.

Budget (``budget``):

- ``matched`` (default): a baseline trains for as many steps as its task received updates
  in the multi-task run of the same seed (``final_metrics["updates"][task]``); with the same
  batch size it sees the same number of examples. Its ``eval_every`` is scaled by
  ``updates / multi-task steps`` (rounded, at least 1) so it evaluates about as often as the
  multi-task run did, and ``patience`` counts evaluations in both.
- ``steps``: every baseline trains for the config's ``max_steps`` with its ``eval_every``.

The summary (``compare_summary``) is written as ``compare.json`` and ``compare.md`` next to
the run directories ``multi/seed-<s>/`` and ``single-<task>/seed-<s>/``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polytask.checkpoint import write_json
from polytask.config.run import RunConfig, config_from_dict
from polytask.errors import ConfigError, PolytaskError
from polytask.experiments.summary import markdown, summarize

BUDGETS = ("matched", "steps")


def served_tasks(config: RunConfig) -> list[str]:
    """The tasks that get a baseline: every non-auxiliary one, in config order."""
    return [t.name for t in config.tasks if not t.auxiliary]


def critical_tasks(config: RunConfig) -> list[str]:
    """The tasks the verdict is judged on (``critical`` is resolved when the config loads)."""
    return [t.name for t in config.tasks if t.critical and not t.auxiliary]


def check_comparable(config: RunConfig, seeds: int, budget: str) -> None:
    """One-line errors for what cannot be compared, before anything is trained."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, not {seeds}")
    if budget not in BUDGETS:
        raise ConfigError(f"--budget must be one of {', '.join(BUDGETS)}, not '{budget}'")
    if len(config.tasks) < 2:
        raise ConfigError(
            "compare needs a multi-task config; this one has the single task "
            f"'{config.tasks[0].name}'"
        )
    if not critical_tasks(config):
        raise ConfigError(
            "every served task is marked critical: false; mark at least one critical: true"
        )


def seed_config(config: RunConfig, seed: int) -> RunConfig:
    """The configured multi-task run with another seed."""
    data = config.model_dump(mode="json")
    data["seed"] = seed
    return config_from_dict(data, f"multi-task seed {seed}")


def baseline_config(
    config: RunConfig, task: str, seed: int, max_steps: int, eval_every: int
) -> RunConfig:
    """The single-task baseline: ``task`` alone with the run's encoder, heads, optimiser, data."""
    data = config.model_dump(mode="json")
    entry = next(t for t in data["tasks"] if t["name"] == task)
    entry.pop("critical")
    entry["weight"] = 1.0
    arch = data["architecture"]
    data.update(
        seed=seed,
        architecture={
            "name": "hard",
            "head_hidden": arch["head_hidden"],
            "head_dropout": arch["head_dropout"],
        },
        tasks=[entry],
        sampler={},
        weighting={"name": "equal"},
        aggregator={"name": "sum"},
    )
    # one task has no gradient cosines to monitor (an explicit value would be refused)
    data["train"].update(
        max_steps=max_steps, eval_every=eval_every, primary_task=task, monitor_every=None
    )
    return config_from_dict(data, f"baseline {task}")


def matched_eval_every(eval_every: int, updates: int, multi_steps: int) -> int:
    """``eval_every`` scaled to a baseline of ``updates`` steps (at least 1): as many evaluations
    over its run as the multi-task run made over its ``multi_steps``."""
    return max(1, round(eval_every * updates / multi_steps))


def baseline_budget(
    budget: str, config: RunConfig, multi: dict[str, Any], task: str
) -> tuple[int, int]:
    """``(max_steps, eval_every)`` of ``task``'s baseline next to the multi-task run ``multi``
    (its ``final_metrics``)."""
    tc = config.train
    if budget == "steps":
        return tc.max_steps, tc.eval_every
    updates = multi["updates"][task]
    if updates == 0:
        raise PolytaskError(
            f"task '{task}' got no updates in the multi-task run of seed {config.seed}: "
            "nothing to match; raise train.max_steps or pass --budget steps"
        )
    return updates, matched_eval_every(tc.eval_every, updates, multi["steps"])


def multi_dir(seed: int) -> str:
    return f"multi/seed-{seed}"


def single_dir(task: str, seed: int) -> str:
    return f"single-{task}/seed-{seed}"


def budget_record(
    budget: str,
    config: RunConfig,
    multi: list[dict[str, Any]],
    single: dict[str, list[dict[str, Any]]],
    limits: dict[str, list[tuple[int, int]]],
) -> dict[str, Any]:
    """What each run was given and what it used, per seed (``compare.json``'s ``budget``)."""
    tc = config.train
    if budget == "matched":
        text = (
            "matched: each baseline trains for as many steps as its task got updates in the "
            f"multi-task run of the same seed (batch size {tc.batch_size}, so the same "
            f"examples); its eval_every is the multi-task {tc.eval_every} scaled by "
            "updates / multi-task steps"
        )
    else:
        text = (
            f"steps: every run trains for max_steps {tc.max_steps} at batch size "
            f"{tc.batch_size}, eval_every {tc.eval_every}"
        )
    return {
        "mode": budget,
        "text": text,
        "batch_size": tc.batch_size,
        "multi": {
            "max_steps": tc.max_steps,
            "eval_every": tc.eval_every,
            "steps": [f["steps"] for f in multi],
            "updates": {t: [f["updates"][t] for f in multi] for t in single},
            "examples": {t: [f["examples_seen"][t] for f in multi] for t in single},
        },
        "single": {
            t: {
                "max_steps": [steps for steps, _ in limits[t]],
                "eval_every": [every for _, every in limits[t]],
                "steps": [f["steps"] for f in finals],
                "examples": [f["examples_seen"][t] for f in finals],
            }
            for t, finals in single.items()
        },
    }


def prepare_folder(folder: Path, overwrite: bool, resume: bool = False) -> None:
    """Refuse a non-empty folder without ``overwrite`` or ``resume``; with ``overwrite``, drop
    an earlier comparison's or leaderboard's runs and summary (other files, e.g.
    ``check.json``, stay); with ``resume``, keep them (finished runs are reused, see
    :func:`finished_run`)."""
    if overwrite and resume:
        raise PolytaskError("--overwrite and --resume exclude each other: choose one")
    if folder.exists() and not folder.is_dir():
        raise PolytaskError(f"{folder} exists and is not a directory")
    if resume or not folder.exists() or not any(folder.iterdir()):
        return
    if not overwrite:
        raise PolytaskError(
            f"{folder} already exists and is not empty; pass --resume to reuse its finished "
            "runs, or --overwrite to replace them"
        )
    for path in [folder / "multi", *folder.glob("single-*"), *folder.glob("method-*")]:
        if path.is_dir():
            shutil.rmtree(path)
    for name in ("compare.json", "compare.md", "leaderboard.json", "leaderboard.md"):
        (folder / name).unlink(missing_ok=True)


def finished_run(config: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The ``final_metrics.json`` of ``run_dir`` if that run finished training ``config``
    (its ``config.yaml`` is the one this config writes), else None."""
    from polytask.config.run import dump_config

    saved, final = run_dir / "config.yaml", run_dir / "final_metrics.json"
    if not (saved.is_file() and final.is_file()):
        return None
    if saved.read_text("utf-8") != dump_config(config):
        return None
    try:
        metrics: dict[str, Any] = json.loads(final.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return metrics


def _runs_record(tasks: list[str], seeds: list[int]) -> dict[str, Any]:
    return {
        "multi": [multi_dir(s) for s in seeds],
        "single": {t: [single_dir(t, s) for s in seeds] for t in tasks},
    }


def train_run(
    config: RunConfig, run_dir: Path, overwrite: bool, show_progress: bool
) -> dict[str, Any]:
    """Train one run of the comparison without resumable checkpoints: a run is reused when it
    finished and trained again from the start when it did not (``--resume``), never resumed
    half-way, so its model, optimiser and sampler states (about two thirds of a run's disk,
    written at every evaluation) would only be written to be deleted; ``model/`` (the best
    weights) stays for serving."""
    from polytask.train import train

    return train(
        config, run_dir, overwrite=overwrite, show_progress=show_progress, checkpoints=False
    )


def compare(
    config: RunConfig,
    out: str | Path,
    seeds: int = 1,
    budget: str = "matched",
    overwrite: bool = False,
    show_progress: bool = True,
    source: str = "config",
    log: Callable[[str], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train the multi-task run and every baseline per seed into ``out``; write the summary.

    Returns the dict written to ``compare.json``; ``source`` names the config in it and
    ``log`` (if given) hears one line before each run. ``resume``: reuse each run of ``out``
    that finished with the very config it would be trained with (:func:`finished_run`); a
    run left unfinished, or of another config, is trained again."""
    check_comparable(config, seeds, budget)
    tasks, tc = served_tasks(config), config.train
    for task in tasks:  # every baseline is a valid config before anything is trained
        baseline_config(config, task, config.seed, tc.max_steps, tc.eval_every)
    folder = Path(out)
    prepare_folder(folder, overwrite, resume)
    seed_list = [config.seed + i for i in range(seeds)]
    multi: list[dict[str, Any]] = []
    single: dict[str, list[dict[str, Any]]] = {t: [] for t in tasks}
    limits: dict[str, list[tuple[int, int]]] = {t: [] for t in tasks}
    total = seeds * (1 + len(tasks))

    def run(cfg: RunConfig, relative: str, what: str) -> dict[str, Any]:
        reused = finished_run(cfg, folder / relative) if resume else None
        if log is not None:
            done = len(multi) + sum(len(v) for v in single.values())
            how = " reused (finished with this config)" if reused is not None else ""
            log(f"[{done + 1}/{total}] {what}, seed {cfg.seed}: {folder / relative}{how}")
        if reused is not None:
            return reused
        return train_run(cfg, folder / relative, overwrite or resume, show_progress)

    for seed in seed_list:
        seeded = seed_config(config, seed)
        multi.append(run(seeded, multi_dir(seed), "multi-task"))
        for task in tasks:
            steps, every = baseline_budget(budget, seeded, multi[-1], task)
            limits[task].append((steps, every))
            baseline = baseline_config(config, task, seed, steps, every)
            single[task].append(run(baseline, single_dir(task, seed), f"baseline {task}"))
    types = {t.name: t.type for t in config.tasks}
    summary = summarize(multi, single, types, critical_tasks(config))
    result = {
        "config": source,
        "seeds": seed_list,
        "auxiliary": [t.name for t in config.tasks if t.auxiliary],
        "budget": budget_record(budget, config, multi, single, limits),
        **summary,
        "runs": _runs_record(tasks, seed_list),
    }
    write_json(folder / "compare.json", result)
    (folder / "compare.md").write_text(markdown(result), "utf-8")
    return result
