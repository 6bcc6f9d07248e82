"""The :class:`Objective`: a step's per-task losses → weights → coefficients → ``.grad``
(through :mod:`polytask.autograd`, which alone runs the backward passes)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any, Literal

import torch
from accelerate import Accelerator
from torch import nn

from polytask.aggregation import AGGREGATORS, Aggregator
from polytask.aggregation.matrix import MatrixAggregator
from polytask.autograd.engine import PerTaskGradients, weighted_backward
from polytask.autograd.matrix import MatrixCombine
from polytask.autograd.passes import average_grads
from polytask.autograd.two_batch import SecondBatch, step_backward
from polytask.models import MultiTaskModel
from polytask.objective.resolve import grad_scale, resolver, reuse_backward
from polytask.objective.terms import learned_term, named, subset_backward
from polytask.registry import build
from polytask.segments import Segment
from polytask.weighting import WEIGHTINGS, LossWeighting


class Objective(nn.Module):
    """A loss weighting and a gradient aggregator over a fixed list of tasks.

    Both are ``nn.Module`` s held here, so their parameters (uncertainty's log σ²) reach the
    optimiser through :meth:`parameters` and their buffers reach checkpoints through
    :meth:`state_dict`. When the aggregator needs per-task gradients (anything but
    ``sum``/``mean``) or the weighting needs their norms (``gradnorm``), the forward must
    run inside :meth:`capture` so the per-task gradient engine sees it.

    ``resolve_every`` (N > 1): a Gramian aggregator's coefficients are solved on one full step
    in N and reused in between (:mod:`polytask.objective.resolve`, held in :attr:`resolve`).
    """

    def __init__(
        self,
        tasks: list[str],
        task_weights: dict[str, float],
        weighting: LossWeighting,
        aggregator: Aggregator,
        single_input: Literal["exact", "representation"] = "exact",
        resolve_every: int = 1,
    ) -> None:
        super().__init__()
        self.single_input = single_input  # per-task gradients of tasks reading the same rows
        self.tasks = list(tasks)
        self.task_weights = dict(task_weights)
        self.weighting = weighting
        self.aggregator = aggregator
        self._engine: PerTaskGradients | None = None
        self._monitor: PerTaskGradients | None = None
        self._active: PerTaskGradients | None = None  # the engine of the current step
        self._second: SecondBatch | None = None  # a two-batch aggregator's second batch
        self._reusing = False  # the current step reuses the cached coefficients
        self.resolve = resolver(len(tasks), resolve_every, aggregator, weighting)

    @property
    def needs_task_gradients(self) -> bool:
        return not self.aggregator.gramian_free or self.weighting.needs_grad_norms

    def attach(self, model: MultiTaskModel, monitor: bool = False) -> None:
        """Bind the per-task gradient engine to the (unwrapped) model, when needed.

        ``monitor``: methods that need no per-task gradients (``sum``/``mean`` with a
        loss-space weighting) get an engine too, used only on the steps :meth:`capture`
        is told to monitor; their update is unchanged (the aggregator's fixed weights).
        """
        trains_shared = any(p.requires_grad for _, p in model.shared_parameters())
        if self.needs_task_gradients and not trains_shared:  # the config refuses it
            raise ValueError(
                f"{type(self.aggregator).__name__}/{type(self.weighting).__name__} need "
                "trainable shared parameters; this model has none"
            )
        mode = self.single_input
        self._engine = PerTaskGradients(model, mode) if self.needs_task_gradients else None
        self._monitor = (
            PerTaskGradients(model, mode)
            if monitor and self._engine is None and model.shared_parameters()
            else None
        )
        self._active = None

    def uses_engine(self, segments: list[Segment], monitor: bool = False) -> bool:
        """Pick the engine for a step (before its forward): True when one will run."""
        full = {s.task for s in segments} == set(self.tasks)
        engine = self._engine or (self._monitor if monitor else None)
        # a reuse step writes .grad itself too (no capture): True, on the unwrapped module
        cache = self.resolve
        self._reusing = full and self._engine is not None and cache is not None and not cache.due
        self._active = engine if full and not self._reusing else None
        return self._active is not None or self._reusing

    def capture(self, segments: list[Segment]) -> AbstractContextManager[None]:
        """Context for the forward of a batch: lets the engine split gradients by task.

        Call :meth:`uses_engine` first to monitor a step; without it the step uses the
        method's own engine (if any).
        """
        if self._active is None:
            self.uses_engine(segments)
        if self._active is None:
            return nullcontext()
        return self._active.capture(segments)

    def _vector(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([losses[t].detach().float() for t in self.tasks])

    def discard(self) -> None:
        """Forget a captured forward whose step is skipped (no backward follows)."""
        if self._active is not None:
            self._active.discard()
        self._active, self._reusing = None, False

    def backward(
        self,
        accelerator: Accelerator,
        losses: dict[str, torch.Tensor],
        extra: dict[str, torch.Tensor] | None = None,
        values: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, Any]:
        """Backpropagate this step's objective; returns what to log (weights, norms, cosines).

        ``extra`` are the architecture's own loss terms (``model.regularization()``): added
        as they are, outside weighting and aggregation, and logged as ``regularization``.
        ``values``: the per-task loss values the weighting and the aggregator see, when they
        differ from ``losses`` (data parallel: ``losses`` are each rank's rescaled share,
        ``values`` the global batch's losses, the same on every rank — see
        :mod:`polytask.distributed`). Parameters of the weighting (learned loss weights)
        live outside the DDP-wrapped model: their gradients are averaged over ranks here.
        """
        extra = {k: v for k, v in (extra or {}).items() if v.requires_grad}
        engine, self._active = self._active, None
        reuse, self._reusing = self._reusing, False
        engine = self._engine if reuse else engine
        seen = values if values is not None else losses
        if extra and engine is not None and all(t in losses for t in self.tasks):
            # the engine frees the forward graph: backpropagate the extra terms first
            floats = {k: v.float() for k, v in extra.items()}
            weighted_backward(accelerator, floats, dict.fromkeys(floats, 1.0), retain_graph=True)
            log = self._backward(accelerator, losses, {}, engine, seen, reuse)
        else:
            log = self._backward(accelerator, losses, extra, engine, seen, reuse)
        if extra:
            log["regularization"] = {k: round(float(v.detach()), 6) for k, v in extra.items()}
        average_grads([p for p in self.parameters() if p.grad is not None])
        return log

    def _backward(
        self,
        accelerator: Accelerator,
        losses: dict[str, torch.Tensor],
        extra: dict[str, torch.Tensor],
        engine: PerTaskGradients | None,
        values: dict[str, torch.Tensor],
        reuse: bool = False,
    ) -> dict[str, Any]:
        if any(t not in losses for t in self.tasks):
            return self._subset_backward(accelerator, losses, extra, values)
        device = next(iter(losses.values())).device
        vector = self._vector(values).to(device)
        w = self.weighting(vector)
        static = torch.tensor([self.task_weights[t] for t in self.tasks], device=device)
        log: dict[str, Any] = {"weights": named(self.tasks, w * static)}
        regularizer = self.weighting.regularizer().to(device)
        if engine is None:
            coef = (w * static).detach() * self._fixed_scale().to(w)
            terms = {t: losses[t] * coef[i] for i, t in enumerate(self.tasks)}
            terms["_learned"] = learned_term(w * static, vector, regularizer)
            terms.update({f"_extra_{k}": v for k, v in extra.items()})
            weighted_backward(accelerator, terms, dict.fromkeys(terms, 1.0))
            return log
        coef = (w * static).detach()
        # a Gramian-free aggregator keeps its update exactly when the engine runs (to monitor,
        # or for GradNorm's norms): its fixed weights scale each task's loss, so its head
        # too, as the plain backward would
        fixed = self._fixed_scale().to(coef) if self.aggregator.gramian_free else None
        step = coef if fixed is None else coef * fixed
        scaled = {t: losses[t] * step[i] for i, t in enumerate(self.tasks)}
        learned = learned_term(w * static, vector, regularizer)
        if reuse and self.resolve is not None:  # the aggregator is not called
            return {**log, **reuse_backward(accelerator, engine, scaled, learned, self.resolve)}
        dtype = next(iter(losses.values())).dtype
        combine = self._combine(vector, dtype, accelerator) if fixed is None else _ones
        if isinstance(self.aggregator, MatrixAggregator):  # the [T, P] matrix; losses: w_t L_t
            combine = MatrixCombine(partial(self.aggregator.aggregate, losses=vector * step))
        needs, (second, self._second) = self.aggregator.needs_two_batches, (self._second, None)
        stats = step_backward(engine, scaled, step, combine, grad_scale(accelerator), second, needs)
        if stats is None:  # the second batch's loss is not finite: nothing is applied
            return {**log, "skipped": "non-finite loss (second batch)"}
        if self.resolve is not None:
            self.resolve.step(stats.weights)
        if fixed is not None:  # report them as the aggregator's weights on ∇(w_t L_t)
            stats.weights, stats.norms = fixed.cpu(), stats.norms / fixed.cpu()
        if self.weighting.needs_grad_norms:
            norms = stats.norms.to(device) / coef.clamp(min=1e-12)
            learned = learned + self.weighting.balancing_loss(norms, vector)
        if learned.requires_grad:
            weighted_backward(accelerator, {"learned": learned}, {"learned": 1.0})
        log.update(
            {
                "combine": named(self.tasks, stats.weights),
                "grad_norm": named(self.tasks, stats.norms),
                "cosine": [[round(float(v), 4) for v in row] for row in stats.cosine],
                "grad_method": stats.method,
            }
        )
        return log

    def pair(self, second: SecondBatch) -> None:
        """A two-batch aggregator's second batch, before :meth:`backward` (autograd.two_batch)."""
        self._second = second

    def _subset_backward(
        self,
        accelerator: Accelerator,
        losses: dict[str, torch.Tensor],
        extra: dict[str, torch.Tensor],
        values: dict[str, torch.Tensor],
    ) -> dict[str, Any]:
        """A step over some of the tasks (:func:`polytask.objective.terms.subset_backward`)."""
        parts = (self.tasks, self.task_weights, self.weighting, self._fixed_scale)
        return subset_backward(accelerator, *parts, losses, extra, values)

    def _fixed_scale(self) -> torch.Tensor:
        """A Gramian-free aggregator's weights (``sum``: ones, ``mean``: 1/T)."""
        return self.aggregator.weights(torch.eye(len(self.tasks), dtype=torch.float64))

    def _combine(self, vector: torch.Tensor, dtype: torch.dtype, accelerator: Accelerator) -> Any:
        """``c`` from the Gramian, solved in float64 on the CPU (:class:`Aggregator`).

        ``eps`` is the precision the per-task gradients carry: the losses' dtype's, or the autocast
        dtype's under mixed precision (activation gradients arrive in bf16/fp16 even though
        the per-task weight gradients are accumulated in float32), so rank decisions do not
        take half-precision rounding for signal."""
        losses = vector.cpu() if self.aggregator.needs_losses else None
        precision = float(torch.finfo(dtype).eps)
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
            str(getattr(accelerator, "mixed_precision", "no"))
        )
        if half is not None:
            precision = max(precision, float(torch.finfo(half).eps))

        def combine(gramian: torch.Tensor) -> torch.Tensor:
            return self.aggregator.weights(gramian, losses, eps=precision)

        return combine

    def observe(self, losses: dict[str, torch.Tensor]) -> None:
        """After the optimiser step: let stateful weightings see the (new) losses."""
        if all(t in losses for t in self.tasks):
            self.weighting.observe(self._vector(losses))
            return
        index = [i for i, t in enumerate(self.tasks) if t in losses]
        seen = torch.stack([losses[self.tasks[i]].detach().float() for i in index])
        self.weighting.observe_subset(seen, index)


def _ones(gramian: torch.Tensor) -> torch.Tensor:
    return torch.ones(gramian.shape[0], dtype=gramian.dtype, device=gramian.device)


def build_objective(
    tasks: list[str],
    task_weights: dict[str, float],
    kinds: list[str],
    weighting: tuple[str, dict[str, Any]],
    aggregator: tuple[str, dict[str, Any]],
    single_input: Literal["exact", "representation"] = "exact",
    resolve_every: int = 1,
) -> Objective:
    """Build from plain arguments: task names, static weights, task kinds, (name, kwargs) pairs.

    ``kinds`` ("regression"/"classification" per task) fills a weighting's ``kinds``
    argument when the config leaves it out (uncertainty weighting's two forms).
    ``resolve_every``: solve the aggregator's coefficients on one full step in N
    (:mod:`polytask.objective.resolve`).
    """
    n = len(tasks)
    w_name, w_kwargs = weighting
    if "kinds" in _arguments(WEIGHTINGS.get(w_name)) and "kinds" not in w_kwargs:
        w_kwargs = {**w_kwargs, "kinds": kinds}
    built_w = build(WEIGHTINGS, w_name, w_kwargs, n, "weighting")
    built_a = build(AGGREGATORS, aggregator[0], aggregator[1], n, "aggregator")
    assert isinstance(built_w, LossWeighting) and isinstance(built_a, Aggregator)
    return Objective(tasks, task_weights, built_w, built_a, single_input, resolve_every)


def _arguments(cls: type) -> list[str]:
    import inspect

    return list(inspect.signature(cls).parameters)
