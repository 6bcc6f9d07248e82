"""A causal LM for instruction tasks: LoRA or prefix tuning through PEFT, or full fine-tuning.

Every task is an ``instruction`` task: its rows are ``prompt + answer`` and its "head" is the
decoder's own LM head, so all tasks share every parameter and one forward serves a whole
multi-task batch (the FLAN recipe: one model, a mixture of instruction tasks). ``adapter``:

- ``lora`` (Hu et al. 2022): low-rank updates ``B·A`` (rank ``r``, scale ``alpha / r``) on
  ``target_modules`` (PEFT's default for the model type when not given); backbone frozen.
- ``prefix`` (Li & Liang 2021): ``prefix_length`` learned key/value vectors per layer
  (PEFT's prefix tuning, one prefix shared by the tasks of the mixture); backbone frozen.
- ``none``: every weight is trained.

Adapters are saved with PEFT's ``save_pretrained(..., safe_serialization=True)``
(``adapter/adapter_model.safetensors`` + ``adapter_config.json``) and reloaded onto the same
base model; a full fine-tune saves ``model.safetensors``. Answers are scored (the
log-likelihood of each allowed answer) and generated (greedy) here; with LoRA or full
fine-tuning both reuse the prompt's KV cache, with a prefix they recompute the forward (PEFT
passes the prefix as the KV cache, which transformers' ``generate`` would replace).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from polytask.errors import ConfigError, RunDirError
from polytask.models.base import ARCHITECTURES, ENCODER_DIR, MultiTaskModel
from polytask.segments import Segment
from polytask.tasks import IGNORE_INDEX, TaskSpec

ADAPTER_DIR = "adapter"


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``rows`` padded to the longest (left or right)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


@ARCHITECTURES.register("causal_lm")
class CausalLM(MultiTaskModel):
    """A decoder-only LM shared by instruction tasks; LoRA / prefix (PEFT) or full tuning."""

    def __init__(
        self,
        encoder: PreTrainedModel,
        specs: list[TaskSpec],
        pooling: str = "mean",
        head_hidden: int | None = None,
        head_dropout: float = 0.1,
        adapter: Literal["lora", "prefix", "none"] = "lora",
        r: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,  # PEFT's default; on CPU a LoRA dropout mask per layer is slow
        target_modules: list[str] | None = None,
        prefix_length: int = 16,
    ) -> None:
        super().__init__()
        others = sorted({s.type for s in specs} - {"instruction"})
        if others:
            raise ValueError(f"every task must be an instruction task, not {', '.join(others)}")
        if r < 1 or prefix_length < 1 or alpha <= 0 or not 0 <= dropout < 1:
            raise ValueError("r and prefix_length must be >= 1, alpha > 0, 0 <= dropout < 1")
        self.specs = {s.name: s for s in specs}
        self.adapter, self.r, self.alpha, self.dropout = adapter, r, alpha, dropout
        self.target_modules, self.prefix_length = target_modules, prefix_length
        self.base_config = encoder.config
        self.pad_id = int(encoder.config.pad_token_id or encoder.config.eos_token_id or 0)
        # a PreTrainedModel, or a PeftModel around one (save_pretrained and generate differ)
        self.decoder: Any = encoder if adapter == "none" else self._wrap(encoder)

    def _wrap(self, model: PreTrainedModel) -> nn.Module:
        """The PEFT model around ``model`` (its own weights frozen)."""
        from peft import LoraConfig, PrefixTuningConfig, TaskType, get_peft_model

        config: Any
        if self.adapter == "lora":
            config = LoraConfig(
                task_type=TaskType.CAUSAL_LM,
                r=self.r,
                lora_alpha=self.alpha,  # type: ignore[arg-type]  # PEFT scales by alpha / r
                lora_dropout=self.dropout,
                target_modules=self.target_modules,
            )
        else:
            config = PrefixTuningConfig(
                task_type=TaskType.CAUSAL_LM, num_virtual_tokens=self.prefix_length
            )
        try:
            return get_peft_model(model, config)
        except ValueError as exc:  # e.g. target_modules naming no module of this model
            raise ValueError(f"{self.adapter}: {str(exc).splitlines()[0]}") from None

    @classmethod
    def load_pretrained(cls, name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        from polytask.models.decoder import load_decoder

        return load_decoder(name)

    @classmethod
    def saved_backbone(cls, folder: Path, meta: dict[str, Any]) -> PreTrainedModel:
        """Full fine-tune: the saved config (weights follow); adapters: the pretrained base."""
        from polytask.models.decoder import decoder_from_config, load_decoder

        if meta.get("architecture", {}).get("adapter", "lora") == "none":
            return decoder_from_config(folder / ENCODER_DIR)
        try:
            base = str(meta["config"]["encoder"]["name"])
        except (KeyError, TypeError):
            raise RunDirError(f"{folder}: polytask.json does not name the base model") from None
        try:
            return load_decoder(base)[0]
        except ConfigError as exc:
            raise RunDirError(f"{folder}: cannot load the base model: {exc}") from None

    takes_labels = True  # see forward_rows
    chunks_rows = False  # with labels, an output holds answer tokens, not rows

    def forward_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        segments: list[Segment],
        labels: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per task, the logits ``[rows, length, vocabulary]``; with ``labels`` (training)
        and LoRA or full fine-tuning, only the logits that predict an answer token,
        ``[answer tokens, vocabulary]`` in row-major order of ``labels[:, 1:] != -100``
        (the LM head and its softmax are a fifth of a step's FLOPs; the answers are a few
        tokens of each row). A prefix runs through PEFT's own forward: full logits."""
        if labels is None or self.adapter == "prefix":
            logits = self.decoder(input_ids=input_ids, attention_mask=attention_mask).logits
            return {seg.task: logits[seg.start : seg.stop] for seg in segments}
        body = self.decoder if self.adapter == "none" else self.decoder.get_base_model()
        hidden = body.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        head = body.get_output_embeddings()
        out = {}
        for seg in segments:
            y = labels[seg.task].to(hidden.device)
            picked = y[:, 1:] != IGNORE_INDEX
            rows = hidden[seg.start : seg.stop, : y.shape[1] - 1]
            out[seg.task] = head(rows[picked])
        return out

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The trained parameters (adapter, or every weight): all tasks reach all of them."""
        return [(f"decoder.{n}", p) for n, p in self.decoder.named_parameters() if p.requires_grad]

    def task_parameters(self, task: str) -> list[tuple[str, nn.Parameter]]:
        return []

    def describe(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter,
            "r": self.r,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "target_modules": self.target_modules,
            "prefix_length": self.prefix_length,
        }

    def save_weights(self, folder: Path) -> None:
        """The decoder's config, and the adapter (PEFT, safetensors) or every weight."""
        self.base_config.save_pretrained(str(folder / ENCODER_DIR))
        if self.adapter == "none":
            super().save_weights(folder)
            return
        # PEFT's save_pretrained: the adapter's weights and config only
        self.decoder.save_pretrained(str(folder / ADAPTER_DIR), safe_serialization=True)

    def load_weights(self, folder: Path) -> None:
        if self.adapter == "none":
            super().load_weights(folder)
            return
        from peft.utils import get_peft_model_state_dict, load_peft_weights
        from peft.utils.save_and_load import set_peft_model_state_dict

        path = folder / ADAPTER_DIR
        if not (path / "adapter_model.safetensors").is_file():
            raise RunDirError(f"{folder}: missing {ADAPTER_DIR}/adapter_model.safetensors")
        weights = load_peft_weights(str(path), device="cpu")
        expected = set(get_peft_model_state_dict(self.decoder))
        if set(weights) != expected:
            extra = sorted(set(weights) ^ expected)[:3]
            raise RunDirError(f"{path}: adapter does not match the model ({extra})")
        set_peft_model_state_dict(self.decoder, weights)

    def saved_weight_files(self, folder: Path) -> list[Path]:
        if self.adapter == "none":
            return super().saved_weight_files(folder)
        return [folder / ADAPTER_DIR / "adapter_model.safetensors"]

    @property
    def _cached(self) -> bool:
        """Whether scoring and generation may reuse the KV cache (not with a prefix)."""
        return self.adapter != "prefix"

    def score_choices(self, prompts: list[list[int]], choices: list[list[int]]) -> torch.Tensor:
        """``[prompts, choices]`` log-likelihood of each answer (its token ids, end marker
        included) after each prompt: the sum of its tokens' log-probabilities."""
        k = len(choices)
        device = next(self.decoder.parameters()).device
        answers, answer_mask = _pad(choices, self.pad_id, left=False)
        answers, answer_mask = answers.to(device), answer_mask.to(device)
        if self._cached:
            ids, mask = _pad(prompts, self.pad_id, left=True)
            ids, mask = ids.to(device), mask.to(device)
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            out = self.decoder(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,  # only the last prompt position predicts an answer token
            )
            cache = out.past_key_values
            cache.batch_repeat_interleave(k)
            rows = answers.repeat(len(prompts), 1)
            start = mask.sum(1).repeat_interleave(k)[:, None]
            full_mask = torch.cat(
                [mask.repeat_interleave(k, 0), answer_mask.repeat(len(prompts), 1)], 1
            )
            rest = self.decoder(
                input_ids=rows,
                attention_mask=full_mask,
                position_ids=start + torch.arange(rows.shape[1], device=device),
                past_key_values=cache,
            ).logits
            logits = torch.cat([out.logits[:, -1:].repeat_interleave(k, 0), rest[:, :-1]], 1)
        else:
            rows_list = [p + c for p in prompts for c in choices]
            ids, mask = _pad(rows_list, self.pad_id, left=False)
            all_logits = self.decoder(
                input_ids=ids.to(device), attention_mask=mask.to(device)
            ).logits
            index = torch.tensor([len(p) - 1 for p in prompts for _ in choices], device=device)
            span = index[:, None] + torch.arange(answers.shape[1], device=device)
            span = span.clamp(max=all_logits.shape[1] - 1)
            logits = all_logits.gather(1, span[..., None].expand(-1, -1, all_logits.shape[-1]))
            rows = answers.repeat(len(prompts), 1)
        logp = F.log_softmax(logits.float(), dim=-1).gather(2, rows[..., None]).squeeze(2)
        keep = answer_mask.repeat(len(prompts), 1).to(logp.dtype)
        return (logp * keep).sum(1).view(len(prompts), k)

    def generate_greedy(
        self, prompts: list[list[int]], max_new_tokens: int, stop: list[int]
    ) -> list[list[int]]:
        """Greedy continuation of each prompt, up to (not including) a ``stop`` token."""
        device = next(self.decoder.parameters()).device
        if self._cached:
            ids, mask = _pad(prompts, self.pad_id, left=True)
            out = self.decoder.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stop,
                pad_token_id=self.pad_id,
            )
            new = out[:, ids.shape[1] :].tolist()
        else:
            rows = [list(p) for p in prompts]
            new = [[] for _ in prompts]
            done = [False] * len(prompts)
            for _ in range(max_new_tokens):
                ids, mask = _pad(rows, self.pad_id, left=False)
                logits = self.decoder(
                    input_ids=ids.to(device), attention_mask=mask.to(device)
                ).logits
                last = logits[torch.arange(len(rows)), mask.sum(1).to(device) - 1].argmax(-1)
                for i, token in enumerate(last.tolist()):
                    if not done[i]:
                        rows[i].append(token)
                        new[i].append(token)
                        done[i] = token in stop
                if all(done):
                    break
        cut = []
        for row in new:
            ends = [j for j, t in enumerate(row) if t in stop]
            cut.append(row[: ends[0]] if ends else row)
        return cut
