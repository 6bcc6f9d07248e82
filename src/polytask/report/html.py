"""``polytask report``: one self-contained HTML page for a run, compare or leaderboard
directory.

The page needs nothing but a browser: plots are PNG data URIs (:mod:`polytask.report.plots`),
the style sheet is inline, there is no script and no external URL. Each section appears
with its data or with a short note saying why it is absent. A missing directory, a
directory that is none of these, or a file that does not parse (or lacks a key) raises
:class:`~polytask.errors.RunDirError` naming the file, before anything is written.

>>> write_report(Path("runs/demo"))  # doctest: +SKIP
PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polytask import __version__
from polytask.errors import RunDirError
from polytask.report.leaderboard import leaderboard_body, shown_run
from polytask.report.load import Run, is_run_dir, load_run, read_json
from polytask.report.run import run_sections
from polytask.report.sections import check_body, compare_body, esc, note, reading, section

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:0;
background:#f6f6f4}
main{max-width:1040px;margin:0 auto;padding:1.5em 20px 3em;background:#fff}
h1{margin:0 0 .2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin:1.4em 0 .4em}
.source{color:#555;margin:0 0 1em;word-break:break-all}
nav a{margin-right:1em;color:#2a5d9f}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:14px}
th,td{border:1px solid #ddd;padding:.3em .6em;vertical-align:top}
th{background:#f0f0ee;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.better td,tr.transfer td{background:#eef8ee}tr.worse td,tr.interference td,
tr.starved td{background:#fbeeee}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:.5em 0 1em}
dt{font-weight:600}dd{margin:0;word-break:break-word}
figure{margin:1em 0}img.plot{max-width:100%;height:auto;display:block}
figcaption{color:#555;font-size:13px}
.note{color:#555;font-style:italic;background:#f7f7f7;border-left:3px solid #ccc;
padding:.4em .8em}
.verdict{padding:.6em .9em;margin:.8em 0;border-radius:4px}
.verdict.good{background:#e5f4e5;border:1px solid #8c8}
.verdict.bad{background:#fbe9e9;border:1px solid #d99}
.headline{font-size:17px;font-weight:600}
footer{color:#777;font-size:12px;margin-top:3em}
"""


@dataclass
class Inputs:
    """Everything one report shows: a run, a comparison, a leaderboard, a check (each may be
    absent); ``run_note`` says why the run is absent, ``run_label`` which run it is."""

    directory: Path
    run: Run | None
    compare: dict[str, Any] | None
    check: dict[str, Any] | None
    run_note: str = ""
    leaderboard: dict[str, Any] | None = None
    run_label: str = ""


def _optional(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def _picked(directory: Path, relative: str, what: str) -> tuple[Run | None, str]:
    """The run a decision file names, or why it cannot be shown."""
    run_dir = directory / relative
    if not is_run_dir(run_dir):
        return None, f"The {what} {run_dir} is missing or incomplete: no run to show."
    return load_run(run_dir), ""


def load_inputs(directory: Path) -> Inputs:
    """Read a run, compare or leaderboard directory (and its ``check.json`` when present)."""
    if not directory.exists():
        raise RunDirError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise RunDirError(f"{directory}: not a directory (give a run or compare directory)")
    check = _optional(directory / "check.json")
    compare = _optional(directory / "compare.json")
    board_path = directory / "leaderboard.json"
    if (board := _optional(board_path)) is not None:
        with reading(board_path):
            relative, label = shown_run(board)
        run, why = _picked(directory, relative, "best-ranked method's first-seed run")
        return Inputs(directory, run, compare, check, why, board, label if run else "")
    if compare is not None:
        with reading(directory / "compare.json"):
            multi = list(compare.get("runs", {}).get("multi", []))
        if not multi:
            return Inputs(directory, None, compare, check, "compare.json lists no multi-task run.")
        run, why = _picked(directory, str(multi[0]), "multi-task run")
        return Inputs(directory, run, compare, check, why)
    if not is_run_dir(directory):
        raise RunDirError(
            f"{directory}: not a run directory (config.yaml with metrics.jsonl or "
            "final_metrics.json) nor a compare directory (compare.json or leaderboard.json)"
        )
    return Inputs(directory, load_run(directory), None, check)


def _sections(inputs: Inputs) -> list[tuple[str, str, str]]:
    """The page's sections, in order: a leaderboard or compare directory leads with its
    decision (leaderboard, comparison, check), a run directory with the run."""
    if inputs.compare is not None:
        with reading(inputs.directory / "compare.json"):
            body = compare_body(inputs.compare)
    else:
        body = note(
            "Not a compare directory: `polytask compare CONFIG` trains single-task baselines "
            "and writes compare.json; report that directory to see this section."
        )
    compare = ("compare", "Multi-task vs single-task", body)
    if inputs.check is not None:
        with reading(inputs.directory / "check.json"):
            body = check_body(inputs.check)
    else:
        body = note(
            f"No check.json in {inputs.directory}: `polytask check CONFIG -o "
            f"{inputs.directory / 'check.json'}` writes the pre-flight check there."
        )
    check = ("check", "Pre-flight check", body)
    if inputs.run is not None:
        run = run_sections(inputs.run)
        if inputs.run_label:  # which of the directory's runs this is
            ident, title, body = run[0]
            run[0] = (ident, title, note(f"This run: {inputs.run_label}.") + body)
    else:
        run = [("summary", "Run summary", note(inputs.run_note))]
    if inputs.leaderboard is not None:
        with reading(inputs.directory / "leaderboard.json"):
            body = leaderboard_body(inputs.leaderboard, inputs.run_label)
        board = ("leaderboard", "Leaderboard", body)
        return [board, *([compare] if inputs.compare is not None else []), check, *run]
    return [compare, check, *run] if inputs.compare is not None else [*run, compare, check]


def render(inputs: Inputs) -> str:
    """The whole page as one HTML string."""
    sections = _sections(inputs)
    nav = "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t, _ in sections)
    if inputs.leaderboard is not None:
        kind = "leaderboard directory"
    else:
        kind = "compare directory" if inputs.compare is not None else "run directory"
    title = f"polytask report — {inputs.directory.resolve().name}"
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{esc(title)}</title><style>{CSS}</style>'
        f"</head><body><main><h1>{esc(title)}</h1>"
        f'<p class="source">{esc(kind)}: {esc(inputs.directory.resolve())}</p>'
        f"<nav>{nav}</nav>"
        + "".join(section(*parts) for parts in sections)
        + f"<footer>polytask {esc(__version__)}, {esc(stamp)}</footer></main></body></html>\n"
    )


def write_report(directory: Path, output: Path | None = None) -> Path:
    """Build the report of ``directory`` and write it (default ``directory/report.html``)
    in one step: on any error nothing is written."""
    target = output if output is not None else directory / "report.html"
    inputs = load_inputs(directory)
    if not target.parent.is_dir():
        raise RunDirError(f"{target.parent}: output folder does not exist")
    page = render(inputs)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page, "utf-8")
    os.replace(tmp, target)
    return target
