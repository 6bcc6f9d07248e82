"""LoRA per task: one PEFT LoRA adapter per task (optionally plus a shared one) on one encoder.

Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models" (ICLR). Each adapted
linear layer ``W`` of the encoder gets, per task, ``W x + (alpha / r) · B A x`` with ``A``
``[r, in]`` and ``B`` ``[out, r]`` (``B`` starts at zero). The adapters are PEFT's own LoRA
layers (``peft.functional.inject_adapter_in_model``, one named adapter per task, and
``"shared"`` when ``shared_adapter``); a task's rows run with its adapter (and the shared
one) active, so a multi-task batch costs one encoder forward per task, over that task's
rows only. The encoder stays frozen by default (``freeze_encoder=False`` also fine-tunes
it, shared). Saved as PEFT adapters: ``adapters/<name>/adapter_config.json`` and
``adapter_model.safetensors``, loadable with ``peft.PeftModel.from_pretrained``.
See ``docs/architectures/lora.md``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from peft.functional import (
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_adapter,
    set_peft_model_state_dict,
)
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import PreTrainedModel

from polytask.errors import RunDirError, first_line
from polytask.models.base import ARCHITECTURES, WEIGHTS_FILE
from polytask.models.hard import HardSharing
from polytask.segments import Segment
from polytask.tasks import TaskSpec

SHARED = "shared"  # the shared adapter's name (no task may take it while it exists)
ADAPTERS = "adapters"  # the folder of a saved model that holds one PEFT adapter per name
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # how a PeftModel names the wrapped model's tensors


@ARCHITECTURES.register("lora")
class LoraPerTask(HardSharing):
    """Hard sharing with one PEFT LoRA adapter per task (and, optionally, a shared adapter).

    ``r``, ``alpha`` (PEFT's ``lora_alpha``), ``dropout`` (``lora_dropout``) and
    ``target_modules`` (None: PEFT's default for the encoder's model type, ``query`` and
    ``value`` for BERT) keep PEFT's defaults. ``shared_adapter`` adds one adapter every task
    runs with (trained by every task's loss: what gradient aggregators combine);
    ``freeze_encoder=False`` also fine-tunes the encoder itself.

    >>> from transformers import BertConfig, BertModel
    >>> encoder = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, intermediate_size=64, vocab_size=50))
    >>> specs = [TaskSpec("a", "classification", labels=["x", "y"]),
    ...          TaskSpec("b", "classification", labels=["x", "y"])]
    >>> model = LoraPerTask(encoder, specs, r=4, shared_adapter=True)
    >>> sorted(model.adapters), model.trains_shared({"shared_adapter": True})
    (['a', 'b', 'shared'], True)
    """

    encodes_shared_rows_once = False  # each task its own adapter: one forward per task

    @classmethod
    def trains_shared(cls, kwargs: dict[str, Any]) -> bool:
        # the task adapters are per task; the shared adapter and an unfrozen encoder are shared
        return bool(kwargs.get("shared_adapter", False)) or not kwargs.get("freeze_encoder", True)

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
        r: int = 8,
        alpha: int = 8,
        dropout: float = 0.0,
        target_modules: list[str] | None = None,
        shared_adapter: bool = False,
        freeze_encoder: bool = True,
    ) -> None:
        _check_args(r, alpha, dropout, target_modules, shared_adapter, freeze_encoder)
        if shared_adapter and any(s.name == SHARED for s in specs):
            raise ValueError(f"a task is named '{SHARED}', the shared adapter's name: rename it")
        super().__init__(encoder, specs, pooling, head_hidden, head_dropout)
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.shared_adapter, self.freeze_encoder = shared_adapter, freeze_encoder
        names = [s.name for s in specs] + ([SHARED] if shared_adapter else [])
        config = LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules
        )
        with warnings.catch_warnings():  # PEFT warns that a second adapter joins the first
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            for name in names:
                inject_adapter_in_model(config, encoder, adapter_name=name)
        resolved = encoder.peft_config[names[0]]
        assert isinstance(resolved, LoraConfig)  # PEFT resolves None to its default list
        self.target_modules: list[str] = sorted(resolved.target_modules or [])
        self.adapters: dict[str, list[tuple[str, nn.Parameter]]] = {
            name: [(f"encoder.{n}", p) for n, p in _adapter_parameters(encoder, name)]
            for name in names
        }
        adapter_ids = {id(p) for ps in self.adapters.values() for _, p in ps}
        for p in encoder.parameters():  # inject froze the encoder; the adapters train
            p.requires_grad_(id(p) in adapter_ids or not freeze_encoder)

    def active(self, task: str) -> list[str]:
        """The adapters ``task``'s rows run with."""
        return [task, SHARED] if self.shared_adapter else [task]

    @contextmanager
    def _switched(self, task: str) -> Iterator[None]:
        """Run with ``task``'s adapters active. PEFT's ``set_adapter`` also marks inactive
        adapters frozen: the trainable flags are put back, so every adapter keeps training."""
        flags = [(p, p.requires_grad) for ps in self.adapters.values() for _, p in ps]
        set_adapter(self.encoder, self.active(task))
        for p, flag in flags:
            p.requires_grad_(flag)
        yield

    def forward_rows(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None,
        segments: list[Segment],
    ) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        outer = self.chunk_rows  # the whole batch's rows of this call (None: every row)
        try:
            for seg in segments:  # one encoder forward per task's rows, its adapters active
                span = slice(seg.start, seg.stop)
                local = torch.arange(seg.start, seg.stop, device=input_ids.device)
                # the per-task gradient engine maps each call of a shared layer to its rows
                self.chunk_rows = local if outer is None else outer[local]
                types = None if token_type_ids is None else token_type_ids[span]
                part = [Segment(seg.task, 0, seg.stop - seg.start)]
                with self._switched(seg.task):
                    out.update(
                        super().forward_rows(input_ids[span], attention_mask[span], types, part)
                    )
        finally:
            self.chunk_rows = outer
        return out

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        own = {id(p) for name in self.specs for _, p in self.adapters[name]}
        return [(n, p) for n, p in super().shared_parameters() if id(p) not in own]

    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        return [*self.adapters[task], *super().task_parameters(task)]

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        # the pretrained weights train at train.lr; every adapter (new) at train.head_lr
        new = {id(p) for ps in self.adapters.values() for _, p in ps}
        return [(n, p) for n, p in super().shared_parameters() if id(p) not in new]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "r": self.r,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "target_modules": self.target_modules,
            "shared_adapter": self.shared_adapter,
            "freeze_encoder": self.freeze_encoder,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.describe().items())

    def save_weights(self, folder: Path) -> None:
        """Every tensor but the adapters in ``model.safetensors``; each adapter as a PEFT
        adapter folder ``adapters/<name>/`` (config JSON + safetensors)."""
        adapter_ids = {id(p) for ps in self.adapters.values() for _, p in ps}
        rest, seen = {}, set()
        for name, tensor in self.state_dict(keep_vars=True).items():
            if id(tensor) in adapter_ids or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            rest[name] = tensor.detach().cpu().contiguous()
        save_file(rest, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        for name in self.adapters:
            target = folder / ADAPTERS / name
            target.mkdir(parents=True, exist_ok=True)
            self.encoder.peft_config[name].save_pretrained(str(target))
            weights = get_peft_model_state_dict(self.encoder, adapter_name=name)
            weights = {PEFT_PREFIX + k: v.detach().cpu().contiguous() for k, v in weights.items()}
            save_file(weights, str(target / ADAPTER_WEIGHTS), metadata={"format": "pt"})

    def load_weights(self, folder: Path) -> None:
        """Load what :meth:`save_weights` wrote (or one file holding every tensor)."""
        rest = _read(folder / WEIGHTS_FILE)
        covered: set[str] = set()
        for name, params in self.adapters.items():
            path = folder / ADAPTERS / name / ADAPTER_WEIGHTS
            if not path.is_file():
                continue
            weights = {k.removeprefix(PEFT_PREFIX): v for k, v in _read(path).items()}
            result = set_peft_model_state_dict(self.encoder, weights, adapter_name=name)
            unexpected: list[str] = list(getattr(result, "unexpected_keys", []))
            if unexpected:
                raise RunDirError(f"{path}: adapter does not match the model {unexpected[:3]}")
            covered |= {n for n, _ in params}
        missing, unexpected = self.load_state_dict(rest, strict=False)
        # a tied tensor (the MLM decoder is the word embeddings) was saved under one name
        state = self.state_dict(keep_vars=True)
        loaded = {id(state[k]) for k in rest if k in state}
        missing = [k for k in missing if k not in covered and id(state[k]) not in loaded]
        if missing or unexpected:
            raise RunDirError(
                f"{folder}: weights do not match the model "
                f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
            )

    def saved_weight_files(self, folder: Path) -> list[Path]:
        adapters = [folder / ADAPTERS / name / ADAPTER_WEIGHTS for name in self.adapters]
        return [folder / WEIGHTS_FILE, *adapters]

    def report(self) -> dict[str, Any]:
        """Trainable parameters per task (adapter + head) and of the shared part."""
        encoder = sum(p.numel() for _, p in self.encoder_parameters())
        per_task = {
            t: sum(p.numel() for _, p in self.task_parameters(t) if p.requires_grad)
            for t in self.specs
        }
        shared = sum(p.numel() for _, p in self.shared_parameters() if p.requires_grad)
        return {
            "lora": {
                "encoder_parameters": encoder,
                "encoder_frozen": self.freeze_encoder,
                "trainable_shared": shared,
                "trainable_per_task": per_task,
            }
        }


def _adapter_parameters(encoder: nn.Module, name: str) -> list[tuple[str, nn.Parameter]]:
    """The parameters of adapter ``name`` (PEFT names them ``...lora_A.<name>.weight``)."""
    pattern = re.compile(rf"\.lora_[A-Za-z_]+\.{re.escape(name)}(\.|$)")
    return [(n, p) for n, p in encoder.named_parameters() if pattern.search(n)]


def _read(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise RunDirError(f"{path.parent}: missing {path.name}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error type, or OSError
        raise RunDirError(f"{path}: cannot load weights ({first_line(exc)})") from None


def _check_args(
    r: Any, alpha: Any, dropout: Any, target_modules: Any, shared: Any, freeze: Any
) -> None:
    """A clear ValueError for each ill-typed or out-of-range argument (never coerced)."""

    def whole(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if not whole(r) or r < 1:
        raise ValueError(f"r must be an integer >= 1 (the adapter rank), got {r!r}")
    if not whole(alpha) or alpha < 1:
        raise ValueError(f"alpha must be an integer >= 1 (PEFT's lora_alpha), got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    if target_modules is not None and (
        not isinstance(target_modules, list)
        or not target_modules
        or not all(isinstance(m, str) and m for m in target_modules)
    ):
        raise ValueError(
            "target_modules must be a non-empty list of module names or null, "
            f"got {target_modules!r}"
        )
    for key, value in (("shared_adapter", shared), ("freeze_encoder", freeze)):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
