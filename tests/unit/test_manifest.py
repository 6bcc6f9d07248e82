"""The registry manifest: the committed file is what the live registries give, the config
validates against it without importing torch, and it binds as the live signatures do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from polytask.config import manifest
from polytask.config.manifest_build import live_registries, render
from polytask.registry import bind

REGENERATE = "python -m polytask.config.manifest_build --write (or make manifest)"


def test_committed_manifest_is_what_the_live_registries_give() -> None:
    committed = Path(manifest.__file__).with_name(manifest.MANIFEST_FILE).read_text("utf-8")
    assert committed == render(), f"the registry manifest is out of date: run {REGENERATE}"


@pytest.mark.parametrize("key", manifest.KEYS)
def test_every_name_binds_its_defaults_as_the_live_signature_does(key: str) -> None:
    registry, supplied = live_registries()[key]
    assert manifest.listing(key).names() == registry.names()
    if supplied is None:
        return
    for name in registry.names():
        required = {"weights": [1.0, 2.0]} if name == "static" else {}
        values, problems = manifest.bind(key, name, required)
        assert not problems
        assert values == bind(registry, name, required, key, supplied=supplied), name


def test_trains_shared_follows_the_live_architectures() -> None:
    registry, _ = live_registries()["architectures"]
    for name in registry.names():
        entry = manifest.listing("architectures").get(name)
        for frozen in (False, True):
            kwargs, _ = manifest.bind("architectures", name, {})
            if "freeze_encoder" in kwargs:
                kwargs["freeze_encoder"] = frozen
            assert entry.trains_shared(kwargs) == registry.get(name).trains_shared(kwargs), name


# a fresh interpreter runs the CLI, then reports which heavy modules it imported
PROBE = """
import json, sys
from polytask.cli.main import main
sys.argv = ["polytask", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = [m for m in ("torch", "transformers", "accelerate") if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}))
"""


def probe(*args: str) -> tuple[dict[str, object], list[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    *printed, last = done.stdout.strip().splitlines()
    return json.loads(last), done.stderr.strip().splitlines(), "\n".join(printed)


def test_ls_prints_every_registered_name_without_torch() -> None:
    result, _, printed = probe("ls")
    assert result == {"code": 0, "heavy": []}
    for key in manifest.KEYS:
        for name, entry in manifest.listing(key).items():
            assert f"  {name:<14} {entry.doc}".rstrip() in printed


def test_a_bad_config_fails_one_line_per_problem_without_torch(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "tasks:\n  - {name: a, type: classification, data: {bundled: tweet_sentiment}}\n"
        "sampler: {name: temprature}\n"
        "train: {batch_sise: 16, lr: fast}\n"
    )
    for command in ("train", "check"):
        result, stderr, _ = probe(command, str(path))
        assert result == {"code": 2, "heavy": []}, (command, stderr)
        assert [line.split(": ", 3)[2] for line in stderr] == ["sampler.name", "train", "train.lr"]
        assert all(line.startswith(f"error: {path}: ") for line in stderr)


def test_validating_a_good_config_imports_no_torch() -> None:
    code = (
        "import sys\nfrom polytask.config import load_config\n"
        "for name in ('demo', 'instruct', 'diversity_mixed'):\n    load_config(name)\n"
        "print([m for m in ('torch', 'transformers') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("doc", "first"),
    [
        ("One line.", "One line."),
        ("Wraps\n    onto two lines. Then more.", "Wraps onto two lines."),
        ("Cites (Perez et al. 2018). Then.", "Cites (Perez et al. 2018)."),
        ("Lists e.g. a few. Then.", "Lists e.g. a few."),
        ("Keeps ``a. B`` and `c. D` whole. Then.", "Keeps ``a. B`` and `c. D` whole."),
        ("Keeps (a. B) whole. Then.", "Keeps (a. B) whole."),
        ("Numbers 0.75 and 1. and on. Then.", "Numbers 0.75 and 1. and on."),
        ("Ends before a literal. ``x`` starts the next.", "Ends before a literal."),
        ("First paragraph\nonly.\n\nSecond. paragraph.", "First paragraph only."),
        ("", ""),
    ],
)
def test_summary_is_the_first_sentence_whole(doc: str, first: str) -> None:
    assert manifest.summary(doc) == first


@pytest.mark.parametrize("key", manifest.KEYS)
def test_no_listed_description_ends_mid_sentence(key: str) -> None:
    registry, _ = live_registries()[key]
    for name, entry in manifest.listing(key).items():
        doc = registry.get(name).__doc__ or ""
        paragraph = " ".join(doc.strip().split("\n\n")[0].split())
        assert entry.doc.endswith("."), (name, entry.doc)
        assert entry.doc == manifest.summary(doc), name
        assert paragraph.startswith(entry.doc), name
        rest = paragraph[len(entry.doc) :]
        assert rest == "" or (rest[0] == " " and not rest[1].islower()), (name, rest)
        assert entry.doc.count("``") % 2 == 0 and entry.doc.count("(") == entry.doc.count(")")
