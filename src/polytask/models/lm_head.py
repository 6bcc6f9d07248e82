"""The masked-LM head: transform (dense → activation → LayerNorm) and a decoder tied to the
encoder's input word embeddings, laid out like BERT's ``cls.predictions``.

When the encoder's checkpoint folder holds an MLM head (``BertForMaskedLM``:
``cls.predictions.*``; RoBERTa-style: ``lm_head.*``) in safetensors, its transform and
bias are loaded; otherwise they start fresh. The decoder weight is the word-embedding
matrix itself (one tensor: counted once, saved once by safetensors' shared-tensor handling).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN

from polytask.errors import ConfigError

#: checkpoint key prefixes of a pretrained MLM head → this module's names
PRETRAINED_LAYOUTS = (
    {
        "cls.predictions.transform.dense.weight": "dense.weight",
        "cls.predictions.transform.dense.bias": "dense.bias",
        "cls.predictions.transform.LayerNorm.weight": "norm.weight",
        "cls.predictions.transform.LayerNorm.bias": "norm.bias",
        "cls.predictions.bias": "bias",
    },
    {
        "lm_head.dense.weight": "dense.weight",
        "lm_head.dense.bias": "dense.bias",
        "lm_head.layer_norm.weight": "norm.weight",
        "lm_head.layer_norm.bias": "norm.bias",
        "lm_head.bias": "bias",
    },
)


class MaskedLMHead(nn.Module):
    """hidden → dense → act → LayerNorm → (tied) decoder + bias: logits over the vocabulary."""

    def __init__(
        self, embeddings: nn.Embedding, hidden: int, activation: str = "gelu", eps: float = 1e-12
    ) -> None:
        super().__init__()
        vocab, width = embeddings.weight.shape
        self.dense = nn.Linear(hidden, width)
        self.act = ACT2FN[activation]
        self.norm = nn.LayerNorm(width, eps=eps)
        self.decoder = nn.Linear(width, vocab, bias=False)
        self.decoder.weight = embeddings.weight  # tied: the same Parameter
        self.bias = nn.Parameter(torch.zeros(vocab))
        self.pretrained = False

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.decoder(self.norm(self.act(self.dense(hidden)))) + self.bias
        return out

    @classmethod
    def for_encoder(cls, encoder: PreTrainedModel) -> MaskedLMHead:
        """The head for ``encoder``, with the checkpoint's pretrained MLM weights if any."""
        config = encoder.config
        if getattr(config, "is_decoder", False) or any(
            "CausalLM" in a or "LMHeadModel" in a for a in (config.architectures or [])
        ):
            raise ConfigError(
                "lm: masked LM needs an encoder (BERT-like); a causal LM trains with "
                "instruction tasks and architecture causal_lm"
            )
        embeddings = encoder.get_input_embeddings()
        if not isinstance(embeddings, nn.Embedding):
            raise ConfigError("lm: the encoder's input embeddings are not an nn.Embedding")
        activation = config.hidden_act if isinstance(config.hidden_act, str) else "gelu"
        eps = float(getattr(config, "layer_norm_eps", 1e-12))
        head = cls(embeddings, int(config.hidden_size), activation, eps)
        head.load_pretrained(Path(str(getattr(encoder, "name_or_path", "") or "")))
        return head

    def load_pretrained(self, folder: Path) -> bool:
        """Copy a pretrained MLM head from ``folder``'s safetensors; False when it has none."""
        files = _weight_files(folder)
        if not files:
            return False
        for layout in PRETRAINED_LAYOUTS:
            found = {}
            for file in files:
                with safe_open(str(file), "pt") as fh:
                    keys = set(fh.keys())
                    found.update({k: fh.get_tensor(k) for k in layout if k in keys})
            if len(found) != len(layout):
                continue
            own = dict(self.named_parameters())
            if any(own[layout[k]].shape != v.shape for k, v in found.items()):
                continue
            with torch.no_grad():
                for key, tensor in found.items():
                    own[layout[key]].copy_(tensor)
            self.pretrained = True
            return True
        return False


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (single file or sharded index)."""
    if not folder.is_dir():
        return []
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = set(json.loads(index.read_text("utf-8")).get("weight_map", {}).values())
        return [folder / n for n in sorted(names) if (folder / n).is_file()]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else []
