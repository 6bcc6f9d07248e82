r"""``key=value`` overrides of a config: parsing, and applying one to the raw config dict
(dotted keys; list items by index or by task name). One-line :class:`ConfigError`\ s."""

from __future__ import annotations

import re
from typing import Any

import yaml

from polytask.errors import ConfigError
from polytask.registry import did_you_mean


def set_path(data: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    """Apply one ``a.b.c=value`` override; list items by index or by task name."""
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            index = list_index(node, part, dotted)
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: override '{dotted}': '{parts[i - 1]}' is not a section")
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})


def list_index(items: list[Any], part: str, dotted: str) -> int:
    if part.isdigit() and int(part) < len(items):
        return int(part)
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    names = [str(it.get("name")) for it in items if isinstance(it, dict)]
    raise ConfigError(f"override '{dotted}': no list item '{part}'{did_you_mean(part, names)}")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML 1.2's floats: ``1e-4`` is a number, not a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """A YAML document as Python values; exponent floats without a dot (``1e-4``, ``5E3``)
    are numbers, as YAML 1.2 and every user expects (PyYAML's 1.1 rules read a string)."""
    return yaml.load(text, Loader=_Loader)


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key=value`` strings; values are YAML scalars (``3``, ``true``, ``[a, b]``)."""
    parsed = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{pair}' is not of the form key=value")
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip(), value))
    return parsed
