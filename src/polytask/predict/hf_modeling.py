"""The modeling file ``polytask export`` writes beside an exported task: the encoder with
polytask's pooling and head, for ``transformers`` alone (``trust_remote_code=True``).

No ``transformers`` class computes polytask's head: a BERT sequence classifier reads the
pooler (dense + tanh on ``[CLS]``) into one linear layer and a token classifier is one
linear layer, where polytask pools by the masked mean (or takes ``[CLS]``) and runs dropout
→ linear → GELU → linear. This file imports torch and transformers only (never polytask);
``polytask export`` copies it as ``modeling_polytask.py`` with the encoder's config class
on the import line below, and names its classes in ``config.json``'s ``auto_map``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import BertConfig as EncoderConfig  # polytask export: the encoder's config
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput


class _PolytaskModel(PreTrainedModel):
    """The encoder (``AutoModel`` of the config) and polytask's head ``head``."""

    config_class = EncoderConfig
    base_model_prefix = "encoder"
    _supports_sdpa = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.encoder = AutoModel.from_config(config)
        hidden, inner = config.hidden_size, config.polytask_head_inner
        self.head = nn.Sequential(
            nn.Dropout(config.polytask_head_dropout),
            nn.Linear(hidden, inner),
            nn.GELU(),
            nn.Linear(inner, config.num_labels),
        )
        self.post_init()

    def hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden: torch.Tensor = out.last_hidden_state
        return hidden


class PolytaskForSequenceClassification(_PolytaskModel):
    """Pooled (``config.polytask_pooling``: ``mean`` over real tokens, or ``cls``) head
    logits. Regression (``num_labels=1``): the value in the training targets' units."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        hidden = self.hidden(input_ids, attention_mask, token_type_ids)
        if self.config.polytask_pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        logits = self.head(pooled)
        loss = None
        if labels is not None:
            if self.config.problem_type == "regression":
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            elif self.config.problem_type == "multi_label_classification":
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits))
            else:
                loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class PolytaskForTokenClassification(_PolytaskModel):
    """The head's logits at every position (polytask reads a word's tag at its first piece)."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput:
        logits = self.head(self.hidden(input_ids, attention_mask, token_type_ids))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return TokenClassifierOutput(loss=loss, logits=logits)
