"""What every architecture provides, and the registry they join."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_model
from torch import nn

from polytask.errors import RunDirError
from polytask.io import load_weights
from polytask.models.chunking import chunk_plan, forward_in_chunks
from polytask.registry import Registry
from polytask.segments import Segment
from polytask.tasks import TaskSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WEIGHTS_FILE = "model.safetensors"
ENCODER_DIR = "encoder"


class MultiTaskModel(nn.Module, ABC):
    """Base class: maps a concatenated multi-task batch to each task's head output.

    ``forward`` returns ``{task: logits}`` for the tasks present in ``segments``: ``[n, C]``
    for sequence-level tasks, ``[n, L, C]`` for token-level ones (rows of that segment).
    """

    specs: dict[str, TaskSpec]
    #: whether training passes each task's labels to ``forward`` as ``labels=`` (a causal LM
    #: then computes only the logits that predict answer tokens)
    takes_labels: bool = False
    #: whether :meth:`forward` may run a batch in length chunks, one :meth:`forward_rows`
    #: call each at its own padded width (:mod:`polytask.models.chunking`); False where an
    #: output is not one entry per row (the causal LM's answer-token logits)
    chunks_rows: bool = True
    #: during a chunk's :meth:`forward_rows` call, that chunk's rows of the whole batch (an
    #: index tensor; None when the call computes every row): the per-task gradient engine
    #: maps each call of a shared layer to the tasks' rows with it
    chunk_rows: torch.Tensor | None = None
    #: whether tasks reading the same rows (overlapping segments, ``tasks.N.inputs``) share
    #: one encoder forward; False where the encoder runs once per task (own encoders, or an
    #: encoder conditioned on the task)
    encodes_shared_rows_once: bool = True

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Each present task's head output. Rows of very different lengths (a long task next
        to short ones) are computed in length chunks, each at its own padded width, so a
        step costs its real tokens; the outputs are those of one padded forward."""
        # extra arguments (labels=) are per row of the whole batch: one call (causal LM)
        chunks = chunk_plan(attention_mask, segments) if self.chunks_rows and not kwargs else []
        if not chunks:
            return self.forward_rows(input_ids, attention_mask, token_type_ids, segments, **kwargs)
        return forward_in_chunks(self, chunks, input_ids, attention_mask, token_type_ids, segments)

    @abstractmethod
    def forward_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
    ) -> dict[str, torch.Tensor]:
        """The architecture's forward of one padded batch (or chunk) laid out as ``segments``."""
        ...

    @abstractmethod
    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters every task's loss can reach (the shared encoder)."""
        ...

    @abstractmethod
    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        """Parameters only ``task``'s loss reaches (its head)."""
        ...

    @staticmethod
    def encode(
        encoder: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """``encoder``'s last hidden states ``[B, L, H]``; ``token_type_ids`` only when given."""
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return out.last_hidden_state

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Pretrained parameters, trained at ``train.lr``; every other parameter (heads, new
        modules) gets ``train.head_lr``. Default: the shared parameters."""
        return self.shared_parameters()

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain arguments that rebuild this architecture (saved in ``polytask.json``)."""
        ...

    def regularization(self) -> dict[str, torch.Tensor]:
        """Extra loss terms of the architecture for the latest training forward, already
        scaled by their coefficients: ``{"soft_penalty": ..., "load_balance": ...}``.

        The training loop adds them to the objective (outside loss weighting and gradient
        aggregation: they belong to no task) and logs their values. Default: none.
        """
        return {}

    def report(self) -> dict[str, Any]:
        """JSON-ready diagnostics gathered since :meth:`reset_report` (e.g. MoE routing
        shares per task); written to ``report.json`` and shown by ``eval``. Default: none."""
        return {}

    def reset_report(self) -> None:
        """Start gathering :meth:`report` afresh (called before each evaluation)."""

    @classmethod
    def trains_shared(cls, kwargs: dict[str, Any]) -> bool:
        """Whether the model built with the architecture's own arguments ``kwargs`` trains
        parameters that every task's loss reaches: what gradient aggregators combine and
        GradNorm measures. The config refuses those methods where this is false; the
        contract suite checks it against :meth:`shared_parameters` of a built model."""
        return True

    @classmethod
    def load_pretrained(cls, name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The pretrained backbone this architecture is built on, and its tokenizer.
        Default: an encoder (``AutoModel``, see :func:`polytask.models.encoder.load_encoder`)."""
        from polytask.models.encoder import load_encoder

        return load_encoder(name)

    @classmethod
    def saved_backbone(cls, folder: Path, meta: dict[str, Any]) -> PreTrainedModel:
        """The backbone to rebuild a saved model (``folder``, its ``polytask.json`` as
        ``meta``) on before :meth:`load_weights`. Default: the saved encoder config with
        random weights (every weight is in the saved file)."""
        from polytask.models.encoder import encoder_from_config

        return encoder_from_config(folder / ENCODER_DIR)

    def save_weights(self, folder: Path) -> None:
        """Write the weights :meth:`load_weights` restores. Default: every tensor of the
        model in one ``model.safetensors`` (tied tensors once)."""
        save_model(self, str(folder / WEIGHTS_FILE))

    def load_weights(self, folder: Path) -> None:
        """Load what :meth:`save_weights` wrote; :class:`RunDirError` when it does not fit."""
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise RunDirError(f"{folder}: missing {WEIGHTS_FILE}")
        load_weights(self, weights)

    def saved_weight_files(self, folder: Path) -> list[Path]:
        """The safetensors files :meth:`save_weights` writes into ``folder`` (checked whole
        before a resumed run starts)."""
        return [folder / WEIGHTS_FILE]


ARCHITECTURES: Registry[type[MultiTaskModel]] = Registry("architecture")
