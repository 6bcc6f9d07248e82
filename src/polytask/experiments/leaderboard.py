"""``polytask compare CONFIG --methods a,b,... --seeds K``: methods ranked against shared baselines.

Every method is the config with its weighting and aggregator replaced (a registered
weighting ``w`` trains with ``aggregator: sum``; a registered aggregator ``a`` with
``weighting: equal``), or a named variant (``--variant LABEL:key=value ...``: the config with
those overrides, e.g. data-rich tasks as auxiliary or another sampler). Per seed each method
is trained once, and each served task's single-task baseline once, shared by every method:
its budget is matched (see :mod:`polytask.experiments.compare`) to the first method's
multi-task run of that seed, so the first method should be the reference (``equal``).

Per method (arithmetic in :mod:`polytask.experiments.summary`): each task's primary metric,
mean ± std over seeds, Δ% and status against the baselines; Δm% per seed (that seed's run
against that seed's baselines), its mean and 95 % Student-t interval, on the reported (test)
split and on validation; the rank by mean validation Δm% (chosen on validation, never on
test); the mean step time (``final_metrics["step_seconds"]``: forward, backward, update, no
evaluation) relative to ``equal`` (else the first method); the deploy verdict. Runs:
``method-<name>/seed-<s>/``, ``single-<task>/seed-<s>/``; ``--resume`` reuses every run
that finished with the config it would train.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polytask.checkpoint import write_json
from polytask.config.run import RunConfig, config_from_dict
from polytask.errors import ConfigError
from polytask.experiments import compare as cmp
from polytask.experiments.summary import interval95, step_seconds, summarize, train_examples

#: a method's run folder below the leaderboard directory
METHOD_PREFIX = "method-"


@dataclass(frozen=True)
class Method:
    """One leaderboard entry: a label and the overrides that turn the config into it."""

    name: str
    overrides: tuple[tuple[str, Any], ...]


def parse_methods(names: str | None, variants: list[str] | None = None) -> list[Method]:
    """``--methods`` (comma-separated registered weightings and aggregators) then each
    ``--variant LABEL:key=value key=value``; one-line errors for unknown or repeated names."""
    from polytask.config.manifest import listing
    from polytask.config.overrides import parse_overrides
    from polytask.registry import did_you_mean

    weightings, aggregators = listing("weightings"), listing("aggregators")
    methods: list[Method] = []
    for name in [n.strip() for n in names.split(",")] if names else []:
        if name in weightings:
            pairs: tuple[tuple[str, Any], ...] = (("weighting", {"name": name}),)
            methods.append(Method(name, (*pairs, ("aggregator", {"name": "sum"}))))
        elif name in aggregators:
            pairs = (("weighting", {"name": "equal"}), ("aggregator", {"name": name}))
            methods.append(Method(name, pairs))
        else:
            known = [*weightings.names(), *aggregators.names()]
            raise ConfigError(
                f"--methods: '{name}' is neither a weighting nor an aggregator"
                f"{did_you_mean(name, known)}; see `polytask ls`"
            )
    for text in variants or []:
        label, sep, rest = text.partition(":")
        if not sep or not label.strip():
            raise ConfigError(f"--variant '{text}' is not of the form LABEL:key=value key=value")
        methods.append(Method(label.strip(), tuple(parse_overrides(rest.split()))))
    seen: set[str] = set()
    for method in methods:
        if method.name in seen or "/" in method.name:
            raise ConfigError(f"--methods/--variant: '{method.name}' is named twice or has a '/'")
        seen.add(method.name)
    if not methods:
        raise ConfigError("--methods or --variant: name at least one method")
    return methods


def method_config(config: RunConfig, method: Method, seed: int) -> RunConfig:
    """The config trained as ``method`` with ``seed``."""
    from polytask.config.overrides import set_path

    data = config.model_dump(mode="json")
    data["seed"] = seed
    if "monitor_every" not in config.train.model_fields_set:  # resolved again for the method
        data["train"].pop("monitor_every")
    for key, value in method.overrides:
        set_path(data, key, value, f"method '{method.name}'")
    keys = {k for k, _ in method.overrides}
    for i, task in enumerate(data["tasks"]):  # the dump holds the resolved ``critical``
        mine = {f"tasks.{task['name']}.critical", f"tasks.{i}.critical"}
        if task.get("auxiliary") and not keys & mine:
            task.pop("critical", None)
    return config_from_dict(data, f"method '{method.name}'")


def critical_of(config: RunConfig, method: Method) -> list[str]:
    """The critical tasks of ``config`` trained as ``method``."""
    return cmp.critical_tasks(method_config(config, method, config.seed))


def method_dir(name: str, seed: int) -> str:
    return f"{METHOD_PREFIX}{name}/seed-{seed}"


def method_row(
    method: Method,
    finals: list[dict[str, Any]],
    single: dict[str, list[dict[str, Any]]],
    types: dict[str, str],
    critical: list[str],
) -> dict[str, Any]:
    """One method against the shared baselines: per-task rows (with their validation
    figures), Δm% over seeds on the reported split and on validation, verdict."""
    summary = summarize(finals, single, types, critical)
    valid = summarize(finals, single, types, critical, "validation")

    def per_seed(split: str | None) -> dict[str, Any]:
        values = [
            summarize([f], {t: [r[i]] for t, r in single.items()}, types, critical, split)
            for i, f in enumerate(finals)
        ]
        return interval95([v["delta_m_pct"] for v in values if v["delta_m_pct"] is not None])

    shown = ("single", "multi", "delta_pct", "status", "margin_sigmas")
    tasks = {
        task: {**row, "validation": {k: valid["tasks"][task][k] for k in shown}}
        for task, row in summary["tasks"].items()
    }
    return {
        "method": method.name,
        "overrides": {k: v for k, v in method.overrides},
        "tasks": tasks,
        "delta_m_pct": per_seed(None),
        "delta_m_pct_validation": per_seed("validation"),
        "step_seconds": round(step_seconds(finals), 4),
        "verdict": summary["verdict"],
    }


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sorted by mean validation Δm% (best first: the method is chosen on validation,
    its test figures are reported) with ``rank`` and step time vs the reference."""
    names = [r["method"] for r in rows]
    reference = "equal" if "equal" in names else names[0]
    ref_time = next(r["step_seconds"] for r in rows if r["method"] == reference)
    ordered = sorted(rows, key=lambda r: -r["delta_m_pct_validation"]["mean"])
    for i, row in enumerate(ordered):
        row["rank"] = i + 1
        row["step_time_vs"] = reference
        row["step_time_ratio"] = round(row["step_seconds"] / ref_time, 3) if ref_time else None
    return ordered


@dataclass
class _Runs:
    """The finished runs of a leaderboard so far, and how each was obtained."""

    folder: Path
    resume: bool
    overwrite: bool
    show_progress: bool
    log: Callable[[str], None] | None
    total: int
    multi: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    single: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    limits: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    done: int = 0
    reused: int = 0

    def run(self, cfg: RunConfig, relative: str, what: str) -> dict[str, Any]:
        """Train ``cfg`` into ``relative`` (or reuse it, finished, under ``resume``)."""
        reused = cmp.finished_run(cfg, self.folder / relative) if self.resume else None
        self.done += 1
        if self.log is not None:
            how = " reused (finished with this config)" if reused is not None else ""
            self.log(
                f"[{self.done}/{self.total}] {what}, seed {cfg.seed}: {self.folder / relative}{how}"
            )
        if reused is not None:
            self.reused += 1
            return reused
        overwrite = self.overwrite or self.resume
        return cmp.train_run(cfg, self.folder / relative, overwrite, self.show_progress)


def run_seconds(runs: _Runs) -> float:
    """The training seconds of every run, trained now or reused (evaluations included)."""
    finals = [f for group in (runs.multi, runs.single) for fs in group.values() for f in fs]
    return round(sum(f["train_seconds"] for f in finals), 1)


def _train_all(
    config: RunConfig, methods: list[Method], seeds: list[int], budget: str, runs: _Runs
) -> None:
    """Per seed: every method, and after the first one the baselines matched to it."""
    tasks = cmp.served_tasks(config)
    runs.multi = {m.name: [] for m in methods}
    runs.single = {t: [] for t in tasks}
    runs.limits = {t: [] for t in tasks}
    for seed in seeds:
        for i, method in enumerate(methods):
            cfg = method_config(config, method, seed)
            runs.multi[method.name].append(
                runs.run(cfg, method_dir(method.name, seed), method.name)
            )
            if i > 0:
                continue
            for task in tasks:
                steps, every = cmp.baseline_budget(budget, cfg, runs.multi[method.name][-1], task)
                runs.limits[task].append((steps, every))
                baseline = cmp.baseline_config(config, task, seed, steps, every)
                runs.single[task].append(
                    runs.run(baseline, cmp.single_dir(task, seed), f"baseline {task}")
                )


def _build_all(config: RunConfig, methods: list[Method]) -> list[str]:
    """Build every method's and baseline's config (a refusal is one line, before anything
    trains); returns the served tasks."""
    tasks = cmp.served_tasks(config)
    for method in methods:
        method_config(config, method, config.seed)
    for task in tasks:
        cmp.baseline_config(
            config, task, config.seed, config.train.max_steps, config.train.eval_every
        )
    return tasks


def leaderboard(
    config: RunConfig,
    methods: list[Method],
    out: str | Path,
    seeds: int = 1,
    budget: str = "matched",
    overwrite: bool = False,
    resume: bool = False,
    show_progress: bool = True,
    source: str = "config",
    log: Callable[[str], None] | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Train every method and the shared baselines per seed into ``out``; rank the methods;
    write ``leaderboard.json`` and ``leaderboard.md`` (with the ``key=value`` ``overrides``
    the config was loaded with). Every config is built (and refused with one line) before
    anything is trained."""
    from polytask.experiments.leaderboard_text import markdown

    cmp.check_comparable(config, seeds, budget)
    tasks = _build_all(config, methods)
    seed_list = [config.seed + i for i in range(seeds)]
    folder = Path(out)
    cmp.prepare_folder(folder, overwrite, resume)
    started = time.perf_counter()
    total = seeds * (len(methods) + len(tasks))
    runs = _Runs(folder, resume, overwrite, show_progress, log, total)
    _train_all(config, methods, seed_list, budget, runs)
    types = {t.name: t.type for t in config.tasks}
    rows = [  # a variant may make tasks auxiliary: its verdict is on its own critical tasks
        method_row(m, runs.multi[m.name], runs.single, types, critical_of(config, m))
        for m in methods
    ]
    first = runs.multi[methods[0].name]
    result = {
        "config": source,
        "overrides": list(overrides or []),
        "train_examples": train_examples(first[0]),
        "seeds": seed_list,
        "primary_task": config.primary,
        "auxiliary": [t.name for t in config.tasks if t.auxiliary],
        "baselines": {
            t: {"metric": row["metric"], "split": row["split"], "single": row["single"]}
            for t, row in rows[0]["tasks"].items()
        },
        "budget": cmp.budget_record(budget, config, first, runs.single, runs.limits),
        "methods": rank(rows),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "run_seconds": run_seconds(runs),
        "runs_trained": total - runs.reused,
        "runs_reused": runs.reused,
        "runs": {
            "methods": {m.name: [method_dir(m.name, s) for s in seed_list] for m in methods},
            "single": {t: [cmp.single_dir(t, s) for s in seed_list] for t in tasks},
        },
    }
    write_json(folder / "leaderboard.json", result)
    (folder / "leaderboard.md").write_text(markdown(result), "utf-8")
    return result
