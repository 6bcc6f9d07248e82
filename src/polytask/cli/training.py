"""``polytask train``, ``eval`` and ``report``: train a run, evaluate it, write its report.

Heavy imports happen inside each command, after its arguments are checked (``--help`` and a
bad config stay fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from polytask.cli.common import main_rank, out, split_args
from polytask.errors import PolytaskError


def train(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="[CONFIG] [key=value ...]; no CONFIG: the bundled demo"),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="run directory")] = Path(
        "runs/latest"
    ),
    resume: Annotated[
        bool, typer.Option(help="continue from the run directory's last checkpoint")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run directory")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train a multi-task model and evaluate it on validation and test."""
    from polytask.config.run import load_config

    config_path, overrides = split_args(args)
    if resume and config_path is None:
        config_path = str(output / "config.yaml") if (output / "config.yaml").is_file() else None
    config = load_config(config_path, overrides)
    # imported after the config is checked: a bad config fails without loading torch & co.
    from polytask.cli.tables import data_lines, results_table
    from polytask.config.constructors import check_constructors
    from polytask.train import train as run_training

    check_constructors(config, config_path or "demo.yaml")  # before the encoder and data load
    if resume and _complete(output, config.train.max_steps):
        return

    final = run_training(
        config, output, resume=resume, overwrite=overwrite, show_progress=not quiet
    )
    if not main_rank():  # under accelerate launch / torchrun: one table, from rank 0
        return
    out.print(results_table(final))
    for line in data_lines(final):
        out.print(line, highlight=False)
    p = final["params"]
    out.print(
        f"parameters: total {p['total']:,}  shared {p['shared']:,}  trainable {p['trainable']:,}  "
        f"per task {', '.join(f'{k} {v:,}' for k, v in p['per_task'].items())}"
    )
    out.print(
        f"best step {final['best_step']} of {final['steps']}, {final['train_seconds']} s; "
        f"run directory: {output}"
    )


def _complete(output: Path, max_steps: int) -> bool:
    """Say so (and show its results) when ``--resume`` has nothing to do: the run in
    ``output`` finished to ``max_steps`` or beyond."""
    from polytask.cli.tables import results_table
    from polytask.training.state import run_complete, trained_to

    final = run_complete(output, max_steps)
    if final is None:
        return False
    if main_rank():
        target = trained_to(output)
        out.print(results_table(final))
        out.print(
            f"{output}: the run is complete (trained to train.max_steps={target}, best step "
            f"{final.get('best_step')} of {final.get('steps')}); nothing was trained or "
            f"written. To train it further: --resume train.max_steps=N with N > {target}",
            highlight=False,
        )
    return True


def eval_(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by `polytask train`")],
    split: Annotated[str, typer.Option(help="validation or test")] = "test",
) -> None:
    """Evaluate a trained run on one split of its tasks' data."""
    if split not in ("train", "validation", "test"):
        raise PolytaskError(f"--split must be train, validation or test, not '{split}'")
    from polytask.cli.tables import routing_table
    from polytask.experiments.evaluate_run import evaluate_run_with_report

    metrics, report = evaluate_run_with_report(run_dir, split)
    from rich.table import Table

    table = Table(title=f"{run_dir} — {split}")
    table.add_column("task")
    table.add_column("metrics")
    for task, values in metrics.items():
        table.add_row(task, "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
    out.print(table)
    if "routing" in report:
        out.print(routing_table(report["routing"], f"routing on {split}"))


def report(
    directory: Annotated[
        Path, typer.Argument(help="a run directory (`polytask train`) or compare directory")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="HTML file (default DIR/report.html)")
    ] = None,
) -> None:
    """Write one self-contained HTML report (plots embedded, opens offline)."""
    from polytask.report.html import write_report

    out.print(f"written: {write_report(directory, output)}", highlight=False)
