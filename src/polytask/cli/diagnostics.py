"""``polytask check``, ``affinity`` and ``ls``: measure a config without training it for real;
list what is registered."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from polytask.cli.common import out, split_args
from polytask.diagnostics import HEAD_WARMUP
from polytask.errors import PolytaskError


def check(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="[CONFIG] [key=value ...]; no CONFIG: the bundled demo"),
    ] = None,
    batches: Annotated[int, typer.Option(help="batches to average the gradient cosines over")] = 8,
    head_warmup: Annotated[
        int,
        typer.Option(
            help="train only the heads this many steps before measuring cosines "
            "(0: random heads, whose cosines near 0 say nothing)"
        ),
    ] = HEAD_WARMUP,
    as_json: Annotated[bool, typer.Option("--json", help="print the facts as JSON")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="also write them to this JSON file")
    ] = None,
) -> None:
    """Pre-flight checklist: gradient cosines, loss scales, sampling plan, sizes, advice."""
    from polytask.config.run import load_config

    if output is not None and not output.parent.is_dir():
        raise PolytaskError(f"--output: folder '{output.parent}' does not exist")
    config_path, overrides = split_args(args)
    config = load_config(config_path, overrides)  # no torch: a bad config fails fast
    from polytask.checkpoint import write_json
    from polytask.cli.tables import check_tables
    from polytask.config.constructors import check_constructors
    from polytask.diagnostics.check import run_check

    check_constructors(config, config_path or "bundled demo")
    result = run_check(config, batches, config_path or "bundled demo", head_warmup)
    if output is not None:
        write_json(output, result)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for table in check_tables(result):
        out.print(table)
    if "note" in result:
        out.print(f"note: {result['note']}")
    out.print(f"{result['seconds']} s" + (f"; written: {output}" if output else ""))


def affinity(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="[CONFIG] \\[key=value ...]; no CONFIG: the bundled demo"),
    ] = None,
    steps: Annotated[int, typer.Option(help="training steps of the short run")] = 20,
    every: Annotated[int, typer.Option(help="measure every N-th step")] = 1,
    groups: Annotated[
        int | None, typer.Option(help="number of groups K (default: every K from 1 to 4)")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write affinity.json here")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not tables")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Lookahead task affinity (TAG) over a short run, and the best grouping per K."""
    from polytask.checkpoint import write_json
    from polytask.config.run import load_config
    from polytask.diagnostics.affinity import affinity_table, groups_table, task_affinity

    config_path, overrides = split_args(args)
    config = load_config(config_path, overrides)
    summary = task_affinity(
        config, steps, every, groups, not (quiet or as_json), config_path or "demo"
    )
    if output is not None:
        output = output / "affinity.json" if output.is_dir() else output
        output.parent.mkdir(parents=True, exist_ok=True)
        write_json(output, summary)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        out.print(affinity_table(summary))
        out.print(groups_table(summary))


def ls() -> None:
    """List registered architectures, samplers, task types, loss weightings, aggregators."""
    from rich.markup import escape  # a description's "[...]" is text, not rich markup

    from polytask.config.manifest import listing  # the committed manifest: no torch

    registries = (
        ("architectures", "architectures"),
        ("samplers", "samplers"),
        ("task types", "task_types"),
        ("loss weightings (weighting: {name: ...})", "weightings"),
        ("gradient aggregators (aggregator: {name: ...})", "aggregators"),
    )
    for title, key in registries:
        out.print(f"[bold]{title}[/bold]")
        for name, entry in listing(key).items():
            out.print(f"  {name:<14} {escape(entry.doc)}")
