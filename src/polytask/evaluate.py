"""Evaluation: every example of a split once, batched by length, metrics per task.

With an ``accelerator`` running several processes, each rank predicts every N-th batch and
the predictions are gathered (``gather_for_metrics``) on every rank before the metrics, so
each example counts once and every rank computes the same metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from polytask.data.batching import collate, eval_batches
from polytask.distributed import gather_objects
from polytask.models import MultiTaskModel
from polytask.tasks import TaskSpec, task_type

if TYPE_CHECKING:
    from accelerate import Accelerator


@torch.inference_mode()
def predict_split(
    model: MultiTaskModel,
    spec: TaskSpec,
    dataset: datasets.Dataset,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    accelerator: Accelerator | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> tuple[list[Any], list[Any], float]:
    """Predictions and references (in dataset order) and the mean loss of one task's split.

    ``tokenizer`` is needed by task types that generate text (``instruction``).
    """
    ttype = task_type(spec.type)
    n = len(dataset)
    preds: list[Any] = [None] * n
    refs: list[Any] = [None] * n
    loss_sum, loss_rows = 0.0, 0
    size = min(batch_size, ttype.eval_rows or batch_size)
    # task types that generate or score text themselves (every example on every rank)
    own = ttype.own_predictions(model, spec, dataset, size, tokenizer)
    if own is not None and own.loss is not None:
        return own.predictions, own.references, own.loss
    rank, world = (0, 1)
    if accelerator is not None:
        rank, world = accelerator.process_index, accelerator.num_processes
    mine: list[tuple[int, Any, Any]] = []
    # the answers came from own_predictions: only the loss is left, and a model that takes
    # the labels computes just the logits it needs (a causal LM: the answer positions)
    loss_only = own is not None and getattr(model, "module", model).takes_labels
    for indices in list(eval_batches(list(dataset["length"]), size))[rank::world]:
        rows = ttype.prepare(spec, dataset[indices], None)
        batch = collate([(spec, rows)], pad_id).to(device)
        given = {"labels": batch.labels} if loss_only else {}
        logits = model(
            batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.segments, **given
        )[spec.name]
        labels = batch.labels[spec.name]
        units = ttype.loss_units(spec, labels)
        loss_sum += float(ttype.loss(spec, logits, labels)) * units
        loss_rows += units
        if own is not None:
            continue
        batch_preds, batch_refs = ttype.eval_predictions(spec, logits, rows)
        mine += zip(indices, batch_preds, batch_refs, strict=True)
    for i, p, r in gather_objects(accelerator, mine):
        preds[i], refs[i] = p, r
    if world > 1:
        parts = gather_objects(accelerator, [(loss_sum, loss_rows)])
        loss_sum, loss_rows = sum(p[0] for p in parts), sum(p[1] for p in parts)
    if own is not None:
        preds, refs = own.predictions, own.references
    return preds, refs, loss_sum / max(1, loss_rows)


def split_baseline(spec: TaskSpec, dataset: datasets.Dataset) -> dict[str, float | None]:
    """What the task type's trivial predictor scores on one split
    (:meth:`~polytask.tasks.TaskType.baseline_metrics` of its ``target`` column, rounded;
    ``None``: undefined for it; ``{}``: the type has none). Needs no model."""
    if "target" not in dataset.column_names:
        return {}
    values = task_type(spec.type).baseline_metrics(spec, list(dataset["target"]))
    return {k: None if v is None else float(np.round(v, 6)) for k, v in values.items()}


def evaluate(
    model: MultiTaskModel,
    splits: dict[str, datasets.Dataset],
    specs: dict[str, TaskSpec],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    with_majority: bool = False,
    accelerator: Accelerator | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics (and loss) of every task on its given split; restores the model's mode after.

    ``accelerator``: on several processes, each predicts its share of the batches and every
    rank gets the same metrics over every example (all ranks must call this together)."""
    was_training = model.training
    model.eval()
    out = {}
    for name, dataset in splits.items():
        spec, ttype = specs[name], task_type(specs[name].type)
        preds, refs, loss = predict_split(
            model, spec, dataset, batch_size, pad_id, device, accelerator, tokenizer
        )
        metrics = ttype.metrics(spec, preds, refs)
        metrics["loss"] = loss
        metrics.update(ttype.loss_metrics(spec, loss))
        if with_majority:  # what a trivial predictor scores (undefined ones left out)
            baseline = ttype.baseline_metrics(spec, refs)
            metrics.update({k: v for k, v in baseline.items() if v is not None})
        out[name] = {k: float(np.round(v, 6)) for k, v in metrics.items()}
    model.train(was_training)
    return out
