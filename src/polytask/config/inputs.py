"""Shared inputs: a task that reads another task's rows (``inputs: OTHER``).

Two label columns of one file (the party and the speaker of the same statement) are two
tasks over the same inputs. With ``inputs: party`` on the speaker task, every step that
trains either task draws the same rows for both, encodes them once, and each task's head
reads that one representation with its own labels (a missing label masks that task only).
The per-task gradients of such a step come from the engine's single-input mode,
``train.single_input``: ``exact`` (one activation-gradient pass per task) or
``representation`` (MGDA-UB: the Gramian of the gradients at the encoder's output).

The checks here run at config load: the two tasks must read the same data with the same
text columns and length; the data loader then checks that the rows are the same, row for
row (:func:`polytask.training.setup.check_shared_rows`). ``config`` is the
:class:`~polytask.config.run.RunConfig` being validated (typed loosely: that module imports
this one).
"""

from __future__ import annotations

from typing import Any

from polytask.config.manifest import listing
from polytask.registry import did_you_mean

#: task types whose inputs are built per task (a prompt, or a language-modelling text)
OWN_INPUTS = ("instruction", "lm")


def check_shared_inputs(config: Any) -> list[str]:
    """One message per wrong ``inputs`` (or a ``train.single_input`` that cannot apply)."""
    names = [t.name for t in config.tasks]
    problems: list[str] = []
    for t in config.tasks:
        if t.inputs is None:
            continue
        key = f"tasks.{t.name}.inputs"
        if t.inputs not in names:
            problems.append(f"{key}: '{t.inputs}' is not a task{did_you_mean(t.inputs, names)}")
            continue
        source = config.task(t.inputs)
        why = _mismatch(t.name, source.name, config)
        if why is not None:
            problems.append(f"{key}: {why}")
    if config.train.single_input is not None and not any(t.inputs for t in config.tasks):
        problems.append(
            "train.single_input: no task reads another task's rows (tasks.N.inputs), so no "
            "step has shared inputs; remove it"
        )
    return problems


def _mismatch(name: str, source_name: str, config: Any) -> str | None:
    """Why task ``name`` cannot read the rows of ``source_name``, or None."""
    task, source = config.task(name), config.task(source_name)
    if source.name == task.name:
        return "a task cannot read its own rows; name another task"
    if source.inputs is not None:
        return (
            f"'{source.name}' reads the rows of '{source.inputs}' itself; "
            f"write inputs: {source.inputs}"
        )
    for t in (task, source):
        if t.type in OWN_INPUTS:
            return f"'{t.name}' is an {t.type} task: its inputs are built per task"
        if t.held_out:
            return f"'{t.name}' is held out (never trained): no step shares its rows"
    arch, architectures = config.architecture.name, listing("architectures")
    if arch in architectures and not architectures.get(arch).encodes_shared_rows_once:
        once = [n for n, e in architectures.items() if e.encodes_shared_rows_once]
        return (
            f"architecture '{arch}' runs its encoder once per task, so shared rows would "
            f"still be encoded once per task; use {', '.join(once)}, or remove inputs"
        )
    if task.data != source.data:
        return f"'{name}' and '{source.name}' must read the same data (their data sections differ)"
    if (task.columns.text, task.columns.text_pair) != (
        source.columns.text,
        source.columns.text_pair,
    ):
        return f"'{name}' and '{source.name}' must read the same text columns"
    if task.max_length != source.max_length:
        return f"'{name}' and '{source.name}' must cut their texts at the same max_length"
    return None
