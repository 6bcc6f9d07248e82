"""``polytask``: the commands. Each parses, loads, calls one thing.

The commands live by subject in ``training``, ``experiments``, ``diagnostics``, ``serving`` and
``data``; this module assembles :data:`app` and turns user errors into one line on stderr.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.markup import escape

from polytask.cli.common import err, main_rank
from polytask.cli.data import data_app
from polytask.cli.diagnostics import affinity, check, ls
from polytask.cli.experiments import compare, diversity, sweep_aux
from polytask.cli.serving import export, predict, serve
from polytask.cli.training import eval_, report, train
from polytask.errors import ConfigError, PolytaskError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-task learning on PyTorch and Hugging Face.",
)
# registered in the order `polytask --help` lists them
app.command()(train)
app.command("sweep-aux")(sweep_aux)
app.command()(check)
app.command()(compare)
app.command()(affinity)
app.command()(diversity)
app.command("eval")(eval_)
app.command()(predict)
app.command()(serve)
app.command()(export)
app.command()(report)
app.command("ls")(ls)
app.add_typer(data_app, name="data")


def _fail(*messages: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr, one line per message (text, not markup; a
    message of several lines is joined into one).

    Under ``accelerate launch`` / ``torchrun`` every rank meets the same error; rank 0
    prints it, every rank exits with ``code``."""
    if main_rank():
        for message in messages:
            line = " ".join(part.strip() for part in message.splitlines() if part.strip())
            err.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def main() -> None:
    """Entry point: user errors, and command lines click cannot parse, become one line on
    stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except ConfigError as exc:  # every problem of a config, one line each
        _fail(*exc.lines)
    except PolytaskError as exc:
        _fail(str(exc))
    except typer.TyperException as exc:  # click's errors: unknown option, bad value, ...
        if type(exc).__name__ == "NoArgsIsHelpError":  # typer has printed the help
            raise SystemExit(2) from None
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _fail(exc.format_message().rstrip(".") + hint, code=getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
