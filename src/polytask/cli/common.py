"""What every command module shares: the consoles, ``[CONFIG] [key=value ...]``, the rank."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from polytask.errors import PolytaskError

out = Console(soft_wrap=True)
err = Console(stderr=True)


def split_args(args: list[str] | None) -> tuple[str | None, list[str]]:
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


def main_rank() -> bool:
    """Whether this is rank 0 of a distributed launch (or not distributed at all)."""
    return os.environ.get("RANK", "0") == "0"
