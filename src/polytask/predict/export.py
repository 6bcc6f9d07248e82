"""``polytask export``: one task of a trained run as a folder plain ``transformers`` loads.

The folder holds the tokenizer, ``config.json`` (the encoder's config with ``id2label`` /
``label2id``, ``problem_type`` and the head's size) and ``model.safetensors`` (the encoder
and the task's head), plus ``modeling_polytask.py`` (:mod:`polytask.predict.hf_modeling`,
torch and transformers only): no ``transformers`` class computes polytask's head (masked
mean or ``[CLS]`` pooling, then dropout → linear → GELU → linear), so the folder loads with
``AutoModelForSequenceClassification`` / ``AutoModelForTokenClassification`` and
``trust_remote_code=True``. Regression folds the de-standardisation (training mean and
std) into the last linear layer: the logit is the value in the targets' units.

Only hard sharing (``hard``) and ``lora`` (the task's adapters, and the shared one, merged
into the encoder's weights) are one encoder and one head per task; every other architecture
mixes tasks inside the model (experts, gates, stitches, per-task copies or conditioning)
and is refused.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from polytask.checkpoint import read_meta, write_folder
from polytask.errors import PolytaskError
from polytask.predict import export_native
from polytask.predict.predictor import Predictor, model_folder
from polytask.tasks import TaskSpec, task_type
from polytask.tasks.base import ExportForm

#: architectures whose task is one encoder and one head (lora: after merging its adapters)
EXPORTABLE = ("hard", "lora")
MODELING = "modeling_polytask"
_AUTO = {
    "sequence": ("AutoModelForSequenceClassification", "PolytaskForSequenceClassification"),
    "token": ("AutoModelForTokenClassification", "PolytaskForTokenClassification"),
}


def export_task(run_dir: str | Path, task: str, out: str | Path) -> dict[str, Any]:
    """Write ``task`` of the run (or model folder) ``run_dir`` to the folder ``out``;
    returns what was written (auto class, problem type, labels)."""
    arch = str(read_meta(model_folder(run_dir)).get("architecture", {}).get("name", "unknown"))
    if arch not in EXPORTABLE:  # refused before the model is built
        raise PolytaskError(
            f"architecture '{arch}' cannot export a single-task model: only "
            f"{' and '.join(EXPORTABLE)} are one encoder and one head per task"
        )
    predictor = Predictor(run_dir)
    spec = predictor.specs[task] if task in predictor.specs else predictor.spec(task)
    form = task_type(spec.type).export_form(spec)
    if spec.auxiliary or form is None:
        raise PolytaskError(
            f"task '{task}' ({spec.type}{', auxiliary' if spec.auxiliary else ''}) cannot "
            "export: only served classification, regression and tagging tasks can"
        )
    model: Any = predictor.model  # hard or lora: .encoder, .heads, .pooling (.active)
    encoder = _merged_encoder(model, task) if arch == "lora" else model.encoder
    config, weights, modeling = _build(encoder, spec, form, model.heads[task].net, model.pooling)
    tokenizer = copy.deepcopy(predictor.tokenizer)
    tokenizer.model_max_length = predictor.task_lengths.get(task, predictor.max_length)

    def fill(tmp: Path) -> None:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in weights.items()},
            str(tmp / "model.safetensors"),
            metadata={"format": "pt"},
        )
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tokenizer.save_pretrained(str(tmp))
        if modeling is not None:
            (tmp / f"{MODELING}.py").write_text(modeling, encoding="utf-8")

    write_folder(Path(out), fill)
    auto = _AUTO[task_type(spec.type).level][0]
    return {
        "task": task,
        "auto_class": auto,
        "class": config["architectures"][0],
        "remote_code": modeling is not None,
        "problem_type": config["problem_type"],
    }


def load_without_polytask(jobs: dict[str, Any], workdir: Path, timeout: float = 600) -> Any:
    """Load exported folders in a fresh interpreter with transformers alone (polytask never
    imported, hubs offline) and return what they predict: ``jobs`` and the result are as
    :mod:`polytask.predict.export_load` describes. Raises if the script fails."""
    script = Path(__file__).with_name("export_load.py")
    (workdir / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        [sys.executable, str(script), str(workdir / "jobs.json"), str(workdir / "out.json")],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(workdir),
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"export_load.py failed:\n{done.stderr}")
    return json.loads((workdir / "out.json").read_text())


def _build(
    encoder: nn.Module, spec: TaskSpec, form: ExportForm, head: nn.Sequential, pooling: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor], str | None]:
    """``config.json``, the weights and the modeling file (None: a stock class): ELECTRA's
    classifier where the head fits it (:mod:`export_native`), else polytask's own."""
    level = task_type(spec.type).level
    config = _config(encoder, spec, form, head, pooling, level)
    head_weights = _head_weights(head, form)
    if export_native.fits(encoder, level, pooling, config["polytask_head_inner"]):
        keys = ("id2label", "label2id", "problem_type")
        task = {k: config[k] for k in keys} | {"dropout": config["polytask_head_dropout"]}
        native, weights = export_native.electra(encoder, head_weights, task)
        return native, weights, None
    weights = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    weights.update(head_weights)
    return config, weights, _modeling_source(encoder)


def _config(
    encoder: nn.Module,
    spec: TaskSpec,
    form: ExportForm,
    head: nn.Sequential,
    pooling: str,
    level: str,
) -> dict[str, Any]:
    """The encoder's config as ``config.json``, with the task's labels and head."""
    labels, problem = list(form.labels), form.problem_type
    auto, cls = _AUTO[level]
    dropout, first = head[0], head[1]
    assert isinstance(dropout, nn.Dropout) and isinstance(first, nn.Linear)
    config: dict[str, Any] = _encoder_config(encoder).to_dict()
    config.pop("auto_map", None)
    config.update(
        {
            "architectures": [cls],
            "auto_map": {auto: f"{MODELING}.{cls}"},
            "id2label": {str(i): name for i, name in enumerate(labels)},
            "label2id": {name: i for i, name in enumerate(labels)},
            "problem_type": problem,
            "polytask_pooling": pooling,
            "polytask_head_inner": int(first.out_features),
            "polytask_head_dropout": float(dropout.p),
            "polytask_task": spec.name,
        }
    )
    return config


def _head_weights(head: nn.Sequential, form: ExportForm) -> dict[str, torch.Tensor]:
    """The head's tensors as ``head.N.*``; the task's output map folded into the last layer
    (regression: ``y = std * z + mean``, the weight times std, the bias times std plus mean)."""
    out = {f"head.{k}": v.detach().clone() for k, v in head.state_dict().items()}
    if (form.scale, form.shift) != (1.0, 0.0):
        last = len(head) - 1
        weight, bias = out[f"head.{last}.weight"].double(), out[f"head.{last}.bias"].double()
        out[f"head.{last}.weight"] = weight.mul(form.scale).float()
        out[f"head.{last}.bias"] = bias.mul(form.scale).add(form.shift).float()
    return out


def _encoder_config(encoder: nn.Module) -> Any:
    return encoder.config


def _merged_encoder(model: Any, task: str) -> nn.Module:
    """A copy of the lora model's encoder with ``task``'s active adapters (its own and the
    shared one) merged into the base weights, the LoRA layers replaced by the merged ones."""
    from peft.tuners.lora import LoraLayer

    encoder: nn.Module = copy.deepcopy(model.encoder)
    active = model.active(task)
    for name, module in list(encoder.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(adapter_names=active)
            parent_name, _, child = name.rpartition(".")
            parent = encoder.get_submodule(parent_name) if parent_name else encoder
            setattr(parent, child, module.get_base_layer())
    encoder.__dict__.pop("peft_config", None)
    return encoder


def _modeling_source(encoder: nn.Module) -> str:
    """:mod:`hf_modeling`'s source with the encoder's config class on its import line."""
    text = Path(__file__).with_name("hf_modeling.py").read_text("utf-8")
    config_class = type(_encoder_config(encoder)).__name__
    old = "from transformers import BertConfig as EncoderConfig"
    assert old in text
    return text.replace(old, f"from transformers import {config_class} as EncoderConfig")
