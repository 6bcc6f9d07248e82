"""The registries as the config sees them, read from a committed manifest without importing
torch: each registered name, its one-line description, constructor signature (types,
defaults, ``Field`` constraints), capability flags and, for architectures, whether it trains
shared parameters.

The manifest (``config/registries.json``) is written from the live registries by
``python -m polytask.config.manifest_build --write`` (``make manifest``);
``tests/unit/test_manifest.py`` fails when the committed file differs from what the live
registries give, so it cannot go stale. The constructors' own checks, which need torch, run
when the methods are built (:func:`polytask.config.constructors.check_constructors`).

A name registered at run time (a plugin's method or task type, so its registry module is
already imported) is read from the live registry: the manifest never hides a registration,
and never imports a registry itself.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from functools import cached_property
from importlib import resources
from typing import Any

from polytask.config.signatures import decode_fields
from polytask.errors import ConfigError
from polytask.registry import (
    SUPPLIED,
    Fields,
    Problem,
    check_kwargs,
    signature_fields,
    unknown_name,
)

MANIFEST_FILE = "registries.json"
#: the registries of the manifest, in ``polytask ls`` order
KEYS = ("architectures", "samplers", "task_types", "weightings", "aggregators")
#: Constructor arguments of every architecture that polytask fills itself.
ARCHITECTURE_SUPPLIED = ("self", "encoder", "specs", "pooling", "head_hidden", "head_dropout")
#: Constructor arguments of every sampler that polytask fills itself.
SAMPLER_SUPPLIED = ("self", "sizes", "seed")
#: each registry's module and name, and the constructor arguments polytask supplies (None:
#: not configured from YAML)
LIVE: dict[str, tuple[str, str, tuple[str, ...] | None]] = {
    "architectures": ("polytask.models.base", "ARCHITECTURES", ARCHITECTURE_SUPPLIED),
    "samplers": ("polytask.samplers", "SAMPLERS", SAMPLER_SUPPLIED),
    "task_types": ("polytask.tasks.base", "TASK_TYPES", None),
    "weightings": ("polytask.weighting.base", "WEIGHTINGS", SUPPLIED),
    "aggregators": ("polytask.aggregation.base", "AGGREGATORS", SUPPLIED),
}

__all__ = [
    "KEYS",
    "MANIFEST_FILE",
    "Entry",
    "Listing",
    "bind",
    "listing",
    "read_manifest",
    "summary",
]

#: words whose period does not end a sentence ("e.g. x", "Perez et al. 2018")
ABBREVIATIONS = frozenset({"e.g", "i.e", "al", "cf", "vs", "etc", "approx", "resp", "eq", "fig"})
_CODE = re.compile(r"(`+).+?\1")  # an inline literal: ``x``, `x`


def summary(doc: str | None) -> str:
    """A docstring's first sentence, whole: the first paragraph's lines joined, cut at the
    first ``.``, ``!`` or ``?`` that is followed by a space and not lower case, outside inline
    literals and parentheses, and not the period of an abbreviation (``e.g.``, ``et al.``).

    >>> summary("Route each token. to ``top_k`` (e.g. x) of ``a. B``, et al. 2018. Then.")
    'Route each token. to ``top_k`` (e.g. x) of ``a. B``, et al. 2018.'
    """
    paragraph = re.split(r"\n\s*\n", (doc or "").strip(), maxsplit=1)[0]
    text = " ".join(paragraph.split())
    masked = _CODE.sub(lambda m: "_" * len(m.group(0)), text)  # neither case nor "."
    depth = 0
    for i, char in enumerate(masked):
        depth += (char in "([{") - (char in ")]}")
        if char not in ".!?" or depth > 0 or masked[i + 1 : i + 2] not in ("", " "):
            continue
        following = masked[i + 2 : i + 3]
        word = masked[:i].rsplit(" ", 1)[-1].lstrip("(\"'").lower()
        if following.islower() or word in ABBREVIATIONS:
            continue
        return text[: i + 1]
    return text


class Entry:
    """One registered name: ``doc`` (its docstring's first sentence), ``fields`` (the configurable
    constructor arguments) and its capability flags as attributes (``entry.needs_all_tasks``)."""

    def __init__(self, name: str, stored: dict[str, Any]) -> None:
        self.name = name
        self.doc: str = stored["doc"]
        self._stored = stored

    @cached_property
    def fields(self) -> Fields:
        return decode_fields(self._stored.get("args", {}))

    def __getattr__(self, flag: str) -> bool:
        flags = self.__dict__.get("_stored", {}).get("flags", {})
        if flag not in flags:
            raise AttributeError(f"'{self.name}' records no capability '{flag}'")
        return bool(flags[flag])

    def trains_shared(self, kwargs: dict[str, Any]) -> bool:
        """The architecture's ``trains_shared(kwargs)``, from the table the manifest holds
        over the arguments it reads (``kwargs``: bound, every argument present)."""
        table = self._stored["trains_shared"]
        key = [kwargs[arg] for arg in table["reads"]]
        for values, shared in table["cases"]:
            if values == key:
                return bool(shared)
        raise ConfigError(f"architecture '{self.name}': no trains_shared case for {key}")


class LiveEntry(Entry):
    """A name registered at run time, read from its live class (the same attributes)."""

    def __init__(self, name: str, cls: Any, supplied: tuple[str, ...] | None) -> None:
        super().__init__(name, {"doc": summary(getattr(cls, "__doc__", None))})
        self._cls, self._supplied = cls, supplied

    @cached_property
    def fields(self) -> Fields:
        return signature_fields(self._cls, self._supplied or ())

    def __getattr__(self, flag: str) -> bool:
        return bool(getattr(self.__dict__["_cls"], flag))

    def trains_shared(self, kwargs: dict[str, Any]) -> bool:
        return bool(self._cls.trains_shared(kwargs))


class Listing:
    """A registry as the manifest records it: ``names()``, ``get(name)`` (a did-you-mean
    :class:`ConfigError` for an unknown name), ``in``, ``items()``, like
    :class:`polytask.registry.Registry`."""

    def __init__(self, kind: str, entries: dict[str, Entry]) -> None:
        self.kind = kind
        self._entries = entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(unknown_name(self.kind, name, self.names())) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def items(self) -> list[tuple[str, Entry]]:
        return [(n, self._entries[n]) for n in self.names()]


def read_manifest() -> dict[str, Any]:
    """The committed manifest as stored (plain JSON)."""
    text = resources.files("polytask.config").joinpath(MANIFEST_FILE).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@functools.cache
def _stored(key: str) -> Listing:
    stored = read_manifest()["registries"][key]
    entries = {name: Entry(name, entry) for name, entry in stored["entries"].items()}
    return Listing(stored["kind"], entries)


def listing(key: str) -> Listing:
    """The registry ``key`` (one of :data:`KEYS`) as the manifest records it, with any name
    registered at run time in an already imported live registry."""
    stored = _stored(key)
    module, attr, supplied = LIVE[key]
    live = getattr(sys.modules.get(module), attr, None)
    if live is None:  # not imported: only the built-in names, as the manifest records them
        return stored
    extra = [name for name in live.names() if name not in stored]
    if not extra:
        return stored
    entries: dict[str, Entry] = dict(stored.items())
    entries.update({name: LiveEntry(name, live.get(name), supplied) for name in extra})
    return Listing(stored.kind, entries)


def bind(key: str, name: str, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Check a section's ``name`` and hyperparameters against the manifest's signature:
    the typed values (defaults filled) and every problem (an unknown name is one, at
    ``name``)."""
    registry = listing(key)
    if name not in registry:
        return {}, [Problem(("name",), unknown_name(registry.kind, name, registry.names()))]
    return check_kwargs(registry.get(name).fields, name, kwargs)
