"""A ``[CLS]``-pooled sequence task of a BERT encoder as ``ElectraForSequenceClassification``:
a stock ``transformers`` class, no ``trust_remote_code``.

ELECTRA's classification head is the one ``transformers`` head of polytask's form: on the
first token, dropout → dense → GELU → dropout → linear (BERT's reads the pooler, dense +
tanh, into one linear layer). ``ElectraModel`` with ``embedding_size == hidden_size`` is
BERT's encoder without the pooler: the same embeddings, layers and names below the prefix.
polytask's first head layer (``inner`` ≤ ``hidden`` outputs) fills the first ``inner``
rows of ELECTRA's square dense layer; the other rows are zero, GELU(0) = 0, and the
matching columns of the last layer are zero, so the logits are polytask's exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: the encoder config fields ELECTRA shares with BERT
_SHARED = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
)


def fits(encoder: nn.Module, level: str, pooling: str, inner: int) -> bool:
    """Whether the task exports as ``ElectraForSequenceClassification``."""
    config: Any = encoder.config
    return (
        level == "sequence"
        and pooling == "cls"
        and config.model_type == "bert"
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and inner <= int(config.hidden_size)
    )


def electra(
    encoder: nn.Module, head: dict[str, torch.Tensor], task: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``config.json`` and weights; ``head``: ``head.1`` / ``head.3`` tensors (the first and
    last linear layers), ``task``: labels, problem type and the head's dropout."""
    from transformers import ElectraConfig

    source: Any = encoder.config
    fields = {k: getattr(source, k) for k in _SHARED}
    config = ElectraConfig(
        **fields,
        embedding_size=source.hidden_size,
        classifier_dropout=task["dropout"],
        id2label=task["id2label"],
        label2id=task["label2id"],
        problem_type=task["problem_type"],
    ).to_dict()
    config["architectures"] = ["ElectraForSequenceClassification"]
    weights = {
        f"electra.{k}": v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")
    }
    w1, b1, w2, b2 = (
        head[k] for k in ("head.1.weight", "head.1.bias", "head.3.weight", "head.3.bias")
    )
    hidden, inner = int(source.hidden_size), w1.shape[0]
    dense, dense_bias = w1.new_zeros(hidden, hidden), b1.new_zeros(hidden)
    dense[:inner], dense_bias[:inner] = w1, b1
    out = w2.new_zeros(w2.shape[0], hidden)
    out[:, :inner] = w2
    weights.update(
        {
            "classifier.dense.weight": dense,
            "classifier.dense.bias": dense_bias,
            "classifier.out_proj.weight": out,
            "classifier.out_proj.bias": b2.clone(),
        }
    )
    return config, weights
