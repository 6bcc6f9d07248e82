"""``polytask sweep-aux``, ``compare`` and ``diversity``: experiments made of several runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from polytask.cli.common import err, split_args
from polytask.errors import PolytaskError


def sweep_aux(
    args: Annotated[list[str], typer.Argument(help="CONFIG [key=value ...]")],
    weights: Annotated[
        str, typer.Option(help="comma-separated auxiliary loss weights, e.g. 0.05,0.1,0.2,0.3")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="sweep directory")],
    task: Annotated[
        str | None, typer.Option(help="the auxiliary task (default: the config's only one)")
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="primary-metric drop that counts as interference")
    ] = 0.01,
    overwrite: Annotated[bool, typer.Option(help="replace existing runs in --out")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Train one run per auxiliary-task weight; table of primary metric and auxiliary loss."""
    from polytask.config.run import load_config
    from polytask.experiments.sweep import markdown, parse_weights
    from polytask.experiments.sweep import sweep_aux as run_sweep

    parsed = parse_weights(weights)
    config_path, overrides = split_args(args)
    if config_path is None:
        raise PolytaskError("sweep-aux needs a CONFIG file with an auxiliary task")
    config = load_config(config_path, overrides)
    summary = run_sweep(
        config, parsed, out, task, tolerance, overwrite=overwrite, show_progress=not quiet
    )
    out_console = Console(soft_wrap=True, highlight=False)
    out_console.print(markdown(summary), markup=False)
    out_console.print(f"written: {out / 'sweep_aux.json'}, {out / 'sweep_aux.md'}")


# size: typer's signature is the command's nine options (26 lines); the body is 40
def compare(
    args: Annotated[list[str], typer.Argument(help="CONFIG [key=value ...]")],
    out: Annotated[Path, typer.Option("--out", "-o", help="compare directory")],
    seeds: Annotated[int, typer.Option(help="seeds per run: config seed, seed+1, ...")] = 1,
    budget: Annotated[
        str, typer.Option(help="matched (baseline steps = the task's multi-task updates) or steps")
    ] = "matched",
    overwrite: Annotated[bool, typer.Option(help="replace an earlier comparison in --out")] = False,
    resume: Annotated[
        bool, typer.Option(help="reuse the runs of --out that finished with this config")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="no progress")] = False,
    methods: Annotated[
        str | None,
        typer.Option(
            help="leaderboard: comma-separated weightings/aggregators, e.g. equal,famo,pcgrad "
            "(the first one sets the baselines' matched budget)"
        ),
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="leaderboard entry 'LABEL:key=value key=value' (the config with those "
            "overrides); repeatable"
        ),
    ] = None,
) -> None:
    """Multi-task vs single-task baselines (Δm%, verdict); --methods: a ranked leaderboard."""
    from polytask.config.run import load_config
    from polytask.experiments.compare import compare as run_compare
    from polytask.experiments.summary import markdown

    config_path, overrides = split_args(args)
    if config_path is None:
        raise PolytaskError("compare needs a CONFIG file (or 'demo') with two or more tasks")
    config = load_config(config_path, overrides)
    log = None if quiet else (lambda line: err.print(line, highlight=False, markup=False))
    if methods is not None or variant:
        from polytask.experiments import leaderboard

        entries = leaderboard.parse_methods(methods, variant)
        board = leaderboard.leaderboard(
            config,
            entries,
            out,
            seeds,
            budget,
            overwrite,
            resume,
            not quiet,
            config_path,
            log,
            overrides,
        )
        _print_leaderboard(board, out)
        return
    summary = run_compare(
        config,
        out,
        seeds,
        budget,
        overwrite,
        show_progress=not quiet,
        source=config_path,
        log=log,
        resume=resume,
    )
    console = Console(soft_wrap=True, highlight=False)
    console.print(markdown(summary), markup=False)
    console.print(f"written: {out / 'compare.json'}, {out / 'compare.md'}")


def _print_leaderboard(board: dict[str, Any], out: Path) -> None:
    from polytask.experiments.leaderboard_text import markdown

    console = Console(soft_wrap=True, highlight=False)
    console.print(markdown(board), markup=False)
    console.print(f"written: {out / 'leaderboard.json'}, {out / 'leaderboard.md'}")


def diversity(
    single: Annotated[str, typer.Argument(help="config of the single-task-type arm")],
    mixed: Annotated[str, typer.Argument(help="config of the mixed arm")],
    out: Annotated[Path, typer.Option("--out", "-o", help="experiment directory")],
    overwrite: Annotated[bool, typer.Option(help="replace earlier runs in --out")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Instruction tuning on one task type vs a mixture (same examples), on held-out tasks."""
    from polytask.config.run import load_config
    from polytask.experiments.diversity import markdown, run_diversity

    log = None if quiet else (lambda line: err.print(line, highlight=False, markup=False))
    summary = run_diversity(load_config(single), load_config(mixed), out, overwrite, not quiet, log)
    console = Console(soft_wrap=True, highlight=False)
    console.print(markdown(summary), markup=False)
    console.print(f"written: {out / 'diversity.json'}, {out / 'diversity.md'}")
