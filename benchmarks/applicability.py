"""Which weighting × aggregator × sampler mode × architecture family a config accepts.

    python benchmarks/applicability.py   # writes benchmarks/results/applicability.json

Loads one config per cell (three tasks; 1, 2 or all 3 tasks per step; a shared encoder,
soft sharing, a frozen encoder) and records "applied" or the one-line refusal. Nothing is
trained here: ``tests/unit/test_applied.py`` trains every applied cell and checks that its
update is the method's, and that this file is what the config does today.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "applicability.json"
TASKS = ("a", "b", "c")
#: the arguments a method cannot do without
REQUIRED: dict[str, dict[str, Any]] = {"static": {"weights": [1.0, 0.1, 2.0]}}
ARCHS: dict[str, dict[str, Any]] = {
    "shared encoder (hard)": {"name": "hard"},
    "soft": {"name": "soft"},
    "frozen encoder (prefix)": {"name": "prefix"},
}
MODES: dict[str, int | str] = {"1": 1, "2": 2, "all": "all"}


def cell_config(arch: str, mode: str, weighting: str, aggregator: str) -> dict[str, Any]:
    sampler: dict[str, Any] = {"tasks_per_step": MODES[mode]}
    if mode != "all":
        sampler["name"] = "round_robin"
    return {
        "architecture": ARCHS[arch],
        "tasks": [{"name": t, "type": "classification", "data": {"bundled": "x"}} for t in TASKS],
        "sampler": sampler,
        "weighting": {"name": weighting, **REQUIRED.get(weighting, {})},
        "aggregator": {"name": aggregator},
    }


def outcome(arch: str, mode: str, weighting: str, aggregator: str) -> str:
    """'applied', or the config's one-line refusal without its source prefix."""
    from polytask.config.run import config_from_dict
    from polytask.errors import ConfigError

    try:
        config_from_dict(cell_config(arch, mode, weighting, aggregator), "")
    except ConfigError as exc:
        return "refused: " + str(exc).removeprefix(": ")
    return "applied"


def measure() -> dict[str, Any]:
    from polytask.aggregation import AGGREGATORS
    from polytask.weighting import WEIGHTINGS

    cells = [
        {
            "architecture": arch,
            "tasks_per_step": mode,
            "weighting": w,
            "aggregator": a,
            "outcome": outcome(arch, mode, w, a),
        }
        for w in WEIGHTINGS.names()
        for a in AGGREGATORS.names()
        for arch in ARCHS
        for mode in MODES
    ]
    return {"command": "python benchmarks/applicability.py", "tasks": len(TASKS), "cells": cells}


def render(data: dict[str, Any]) -> str:
    """The docs/methods.md table: one row per pair, one column per family and mode."""
    columns = list(dict.fromkeys((c["architecture"], c["tasks_per_step"]) for c in data["cells"]))
    reasons: dict[str, int] = {}
    rows: dict[tuple[str, str], dict[tuple[str, str], str]] = {}
    for c in data["cells"]:
        text = c["outcome"]
        if text != "applied":
            reason = text.removeprefix("refused: ").split(": ", 1)[1]
            text = f"refused [{reasons.setdefault(reason, len(reasons) + 1)}]"
        rows.setdefault((c["weighting"], c["aggregator"]), {})[
            (c["architecture"], c["tasks_per_step"])
        ] = text
    applied = sum(c["outcome"] == "applied" for c in data["cells"])
    lines = [
        f"{len(data['cells'])} cells, {applied} applied, {len(data['cells']) - applied} refused "
        f"at load; {data['tasks']} tasks; written by `{data['command']}` "
        "(`benchmarks/results/applicability.json`). Every applied cell is trained and its "
        "update checked against a hand computation in `tests/unit/test_applied.py`.",
        "",
        "| weighting | aggregator | "
        + " | ".join(f"{arch}, {mode} per step" for arch, mode in columns)
        + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for (w, a), cells in rows.items():
        lines.append(f"| `{w}` | `{a}` | " + " | ".join(cells[col] for col in columns) + " |")
    lines += ["", "Refusals, as the config prints them (after the pair's name):", ""]
    lines += [f"{n}. {reason}" for reason, n in reasons.items()]
    return "\n".join(lines)


def main() -> None:
    data = measure()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1) + "\n", "utf-8")
    applied = sum(c["outcome"] == "applied" for c in data["cells"])
    print(f"{len(data['cells'])} cells, {applied} applied -> {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
