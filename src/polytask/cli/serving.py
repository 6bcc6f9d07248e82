"""``polytask predict``, ``polytask serve`` and ``polytask export``: the same predictions, from a
file, over HTTP, or from a folder plain ``transformers`` loads."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from polytask.errors import PolytaskError, json_problem

if TYPE_CHECKING:  # torch is imported only when a command runs
    from polytask.predict.predictor import Predictor

out = Console(soft_wrap=True)


def _read_inputs(source: str) -> tuple[str, list[Any], list[int]]:
    """Where the inputs come from, the inputs, and the line each was read from."""
    if source == "-":
        lines = sys.stdin.read().split("\n")
        where = "stdin"
    else:
        path = Path(source)
        if not path.is_file():
            raise PolytaskError(f"input file not found: {path}")
        try:
            lines = path.read_text("utf-8").split("\n")
        except UnicodeDecodeError:
            raise PolytaskError(f"{path}: not UTF-8 text") from None
        where = str(path)
    items: list[Any] = []
    numbers: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.lstrip()[:1] in '{["':
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PolytaskError(f"{where}, {json_problem(exc, number)}") from None
            if isinstance(value, dict):
                value = _from_object(value, where, number)
            items.append(value)
        else:
            items.append(line)
        numbers.append(number)
    if not items:
        raise PolytaskError(f"{where}: no inputs")
    return where, items, numbers


#: how one line of a ``predict --input`` file spells each input form
LINE_FORMS = {
    "text": 'a plain line, or a JSON line {"text": "..."}',
    "pair": 'a JSON line {"text": "...", "text_pair": "..."} (or ["...", "..."])',
    "words": 'a plain line (split on whitespace), or a JSON line {"tokens": ["...", "..."]}',
}


def _check_lines(
    predictor: Predictor, task: str, inputs: list[Any], numbers: list[int], where: str
) -> None:
    """Each input in the form its task takes, or one line naming the file, the line and how
    to write it (``"*"``: the form of the first input, a text or a pair, for every line)."""
    from polytask.errors import InputError
    from polytask.predict.inputs import ALL, Form, check_input

    form: Form = predictor.form(task) if task != ALL else "text"
    if task == ALL and isinstance(inputs[0], list):
        form = "pair"
    for value, number in zip(inputs, numbers, strict=True):
        try:
            check_input(value, form, f"{where}, line {number}")
        except InputError as exc:
            raise InputError(
                f"{exc}; task '{task}' takes one input per line, each {LINE_FORMS[form]}"
            ) from None


def _from_object(value: dict[str, Any], where: str, number: int) -> Any:
    if "tokens" in value:
        return value["tokens"]
    if "text" not in value:
        raise PolytaskError(f"{where}, line {number}: a JSON object needs 'text' (or 'tokens')")
    return [value["text"], value["text_pair"]] if "text_pair" in value else value["text"]


def predict(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by `polytask train`")],
    task: Annotated[str, typer.Option("--task", "-t", help="task name, or '*' for every task")],
    input: Annotated[
        str,
        typer.Option(
            "--input", "-i", help="text file (one input per line, or JSONL) or - for stdin"
        ),
    ],
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
) -> None:
    """Predict one task (or every task: --task '*') for every input line; JSON lines on stdout."""
    from polytask.predict.predictor import ALL, Predictor

    predictor = Predictor(run_dir)
    if task != ALL:
        predictor.spec(task)
    where, inputs, numbers = _read_inputs(input)
    _check_lines(predictor, task, inputs, numbers, where)
    for item, result in zip(inputs, predictor.predict(task, inputs, batch_size), strict=True):
        line = {"input": item, "predictions": result} if task == ALL else {"input": item, **result}
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")


def export(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by `polytask train`")],
    task: Annotated[str, typer.Option("--task", "-t", help="the task to export")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the folder to write")],
) -> None:
    """Write one task as a folder transformers loads (AutoModelFor...Classification; hard
    and lora runs): tokenizer, config with id2label, safetensors weights (docs/export.md)."""
    from polytask.predict.export import export_task

    written = export_task(run_dir, task, output)
    remote = ", trust_remote_code=True" if written["remote_code"] else ""
    out.print(
        f"wrote {output} ({written['class']}): "
        f"{written['auto_class']}.from_pretrained({str(output)!r}{remote})"
    )


def serve(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by `polytask train`")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: any free port, printed)")] = 8000,
    max_batch: Annotated[
        int, typer.Option(help="most inputs per model call (1: no batching)")
    ] = 32,
    max_wait_ms: Annotated[
        float, typer.Option(help="longest wait for a batch to fill, in milliseconds")
    ] = 5.0,
    no_batching: Annotated[
        bool, typer.Option("--no-batching", help="one model call per request")
    ] = False,
    max_inputs: Annotated[int, typer.Option(help="most inputs per request")] = 64,
    max_chars: Annotated[int, typer.Option(help="most characters per input")] = 2000,
    max_body_bytes: Annotated[int, typer.Option(help="largest request body")] = 1 << 20,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps")] = "cpu",
    access_log: Annotated[bool, typer.Option(help="log every request")] = False,
    threads: Annotated[
        int | None, typer.Option(help="torch threads for inference (default: one per core)")
    ] = None,
) -> None:
    """Serve every non-auxiliary task over HTTP: POST /predict, GET /tasks, GET /health."""
    from polytask.serve import Limits
    from polytask.serve.server import serve as run_server

    try:
        limits = Limits(max_inputs, max_chars, max_body_bytes)
    except ValueError as exc:
        raise PolytaskError(f"--{str(exc).replace('_', '-')}") from None
    run_server(
        run_dir,
        host,
        port,
        1 if no_batching else max_batch,
        max_wait_ms,
        limits,
        device,
        access_log,
        threads,
        announce=_announce,
    )


def _announce(line: str) -> None:
    out.print(line, highlight=False, markup=False)
    sys.stdout.flush()  # a script waiting for the address reads it now, not at exit
