"""Data parallel training on Accelerate: which rows a rank trains on, and global loss values.

``train.batch_size`` is the **global** micro-batch of a task. Every rank draws the same
task(s) from the same seeded sampler and the same batch indices from the same seeded
:class:`~polytask.data.batching.TaskStream`, then keeps its own contiguous slice of them
(:func:`shard`). Each rank backpropagates its slice's loss rescaled by its share of the
batch's labelled units (:func:`sync_losses`), so the average over ranks that DDP (or the
per-task gradient engine, :mod:`polytask.autograd.dist`) takes is exactly the gradient of the
global batch's loss — N processes with batch B train like 1 process with batch B, up to
float summation order. Loss weightings, NaN checks and logs all see the global batch's
per-task losses, identical on every rank, so every rank takes the same decisions.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from polytask.errors import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator


def shard(indices: list[int], rank: int, world: int) -> tuple[list[int], bool]:
    """Rank ``rank``'s contiguous slice of a global batch, and whether its rows count.

    Slices differ in size by at most one row. A rank left without a row (a batch shorter
    than the number of processes) gets a copy of one row that must not count (``False``):
    every rank then runs the same forward layout and the collectives stay in step.

    >>> shard(list(range(10)), 1, 4), shard([7], 1, 2)
    (([3, 4, 5], True), ([7], False))
    """
    base, extra = divmod(len(indices), world)
    start = rank * base + min(rank, extra)
    stop = start + base + (rank < extra)
    if stop > start:
        return indices[start:stop], True
    return [indices[rank % len(indices)]], False


@dataclass
class StepLosses:
    """One step's losses as each rank backpropagates them, and the global batch's values."""

    backprop: dict[str, Tensor]  # averaged over ranks: the global batch's gradient
    values: dict[str, Tensor]  # the global batch's per-task losses (detached, every rank)
    finite: bool  # every loss and extra term finite on every rank


def sync_losses(
    accelerator: Accelerator,
    losses: dict[str, Tensor],
    units: dict[str, int] | None = None,
    extra: dict[str, Tensor] | None = None,
) -> StepLosses:
    """Global per-task losses from each rank's ``loss = sum / units`` (one all-reduce).

    ``units``: labelled units (rows; tokens for tagging) behind each of this rank's losses,
    0 for rows that do not count (see :func:`shard`). A task's global loss is
    ``Σ_r L_r u_r / Σ_r u_r``; rank ``r`` backpropagates ``L_r · W u_r / Σ_r u_r`` so that
    the mean of the ranks' gradients is the global loss's. ``extra`` terms (an
    architecture's regularisers) are only checked for finiteness. One process: the losses
    as they are (no collective).
    """
    extra = extra or {}
    names = list(losses)
    local = [v.detach().float() for v in losses.values()]
    checks = [*local, *(v.detach().float() for v in extra.values())]
    world = accelerator.num_processes
    if world == 1:
        finite = bool(torch.isfinite(torch.stack(checks)).all()) if checks else True
        return StepLosses(losses, {n: v for n, v in zip(names, local, strict=True)}, finite)
    if units is None:
        raise ValueError("sync_losses: give each loss's units when training on several ranks")
    u = torch.tensor([float(units[n]) for n in names], dtype=torch.float64)
    sums = torch.stack(local).double().cpu() * u
    bad = torch.tensor([float(not bool(torch.isfinite(torch.stack(checks)).all()))])
    packed = torch.cat([sums, u, bad.double()]).to(accelerator.device)
    total = accelerator.reduce(packed, reduction="sum").cpu()
    n = len(names)
    g_sums, g_units, g_bad = total[:n], total[n : 2 * n], float(total[2 * n])
    device = local[0].device if local else accelerator.device
    values, backprop = {}, {}
    for i, name in enumerate(names):
        units_all = float(g_units[i])
        value = float(g_sums[i]) / units_all if units_all > 0 else 0.0
        values[name] = torch.tensor(value, dtype=torch.float32, device=device)
        share = world * float(u[i]) / units_all if units_all > 0 else 0.0
        backprop[name] = losses[name] * share
    finite = g_bad == 0 and all(math.isfinite(float(v)) for v in values.values())
    return StepLosses(backprop, values, finite)


def gather_objects(accelerator: Accelerator | None, items: list[Any]) -> list[Any]:
    """Every rank's ``items`` concatenated (rank order), on every rank; as is on one process."""
    if accelerator is None or accelerator.num_processes == 1:
        return items
    gathered: list[Any] = accelerator.gather_for_metrics(items, use_gather_object=True)
    return gathered


def weights_sharded(accelerator: Accelerator) -> bool:
    """Whether FSDP or DeepSpeed holds the parameters (sharded over ranks, or their gradients
    and optimiser state): a full state dict has to be gathered, and the per-task gradient
    engine cannot run there, since it writes ``.grad`` of whole parameters itself."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def set_deepspeed_batch(accelerator: Accelerator, batch_size: int) -> None:
    """DeepSpeed sizes its batch from a prepared dataloader, which polytask does not use:
    give it each rank's share of the global batch (``train.batch_size`` per task)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    if config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        config["train_micro_batch_size_per_gpu"] = max(1, batch_size // accelerator.num_processes)


def check_sharded_weights(
    accelerator: Accelerator, needs_task_gradients: bool, methods: str, monitor: bool
) -> bool:
    """Refuse per-task gradient methods when FSDP or DeepSpeed hold the weights (they own
    or shard the parameters' gradients); returns whether gradient monitoring stays on."""
    if not weights_sharded(accelerator):
        return monitor
    backend = accelerator.distributed_type.value
    if needs_task_gradients:
        raise ConfigError(
            f"{methods} need per-task gradients, which run on DDP or one process, not {backend}: "
            "use a DDP launch config (configs/accelerate/) or a loss-space method"
        )
    if monitor:
        warnings.warn(
            f"polytask: train.monitor_every is ignored under {backend} (gradient cosines need "
            "per-task gradients of whole parameters)",
            RuntimeWarning,
            stacklevel=2,
        )
    return False


def make_accelerator(
    mixed_precision: str, log_with: list[str] | None = None, project_dir: str | None = None
) -> Accelerator:
    """The run's :class:`~accelerate.Accelerator` (devices and processes come from the launcher).

    ``split_batches=True`` states polytask's batch semantics to Accelerate (the batch size
    is global, split over ranks) so the LR scheduler steps once per optimisation step, not
    once per process. ``find_unused_parameters``: a step that trains some of the tasks
    leaves the other heads without a gradient. Raises :class:`ConfigError` for fp16 on a
    CPU (Accelerate would silently train in fp32 there). ``log_with``: Accelerate's trackers
    (``tensorboard``, ``mlflow``, ``wandb``), writing under ``project_dir``.
    """
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState, PartialState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != mixed_precision:
        if PartialState().num_processes > 1:
            raise ConfigError(
                f"train.mixed_precision={mixed_precision}: this process already trains with "
                f"{state.get('_mixed_precision')}; run one precision per launch"
            )
        # one process (a notebook, a test session): a new run may use another precision
        AcceleratorState._reset_state()
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launched not in ("no", mixed_precision):
        warnings.warn(
            f"polytask: the launcher asked for {launched} mixed precision; polytask follows the "
            f"run config's train.mixed_precision={mixed_precision}",
            RuntimeWarning,
            stacklevel=2,
        )
    kwargs: dict[str, Any] = {
        "mixed_precision": mixed_precision,
        "dataloader_config": DataLoaderConfiguration(split_batches=True),
        "kwargs_handlers": [DistributedDataParallelKwargs(find_unused_parameters=True)],
        "log_with": log_with or None,
        "project_dir": project_dir,
    }
    accelerator = Accelerator(**kwargs)
    if accelerator.num_processes == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # started as one of several processes (torchrun, `accelerate launch --multi_gpu`) on
        # a host where Accelerate found no GPU backend: Accelerate forms its CPU (gloo)
        # group only when told to use the CPU. Without this, N copies would train alone.
        AcceleratorState._reset_state(reset_partial_state=True)
        accelerator = Accelerator(cpu=True, **kwargs)
    device = accelerator.device.type
    if mixed_precision == "fp16" and device == "cpu":
        raise ConfigError(
            "train.mixed_precision: fp16 needs a GPU (Accelerate trains fp16 with loss scaling "
            "on CUDA and similar devices); this run is on the CPU: use bf16 or no"
        )
    if mixed_precision == "bf16" and device == "cpu" and not native_cpu_bf16():
        warnings.warn(
            "polytask: this CPU has no native bf16 (torch.ops.mkldnn._is_mkldnn_bf16_supported() "
            "is False): bf16 autocast runs several times slower than fp32 here",
            RuntimeWarning,
            stacklevel=2,
        )
    return accelerator


def native_cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
