"""The per-task gradient engine: with its helpers in :mod:`polytask.autograd` (``passes``,
``steps``, ``hooks``) the only code that runs backward passes or writes ``.grad``.

Loss weightings and gradient aggregators (pure maths) never call autograd themselves; the
training loop hands the per-task losses here. Two entry points:

* :func:`weighted_backward`: one backward of ``Σ_t w_t L_t`` (loss-space methods).
* :class:`PerTaskGradients`: per-task gradients ``g_t`` of the shared parameters, their
  ``T × T`` Gramian (float64, accumulated parameter by parameter, never a ``[T, P]``
  concatenation), ``c = combine(Gramian)`` from a gradient aggregator, then
  ``.grad = Σ_t c_t g_t`` for shared parameters and ``∇(w_t L_t)`` for task ``t``'s head
  (``backward_fixed``: the same for a given ``c``, one backward plus a head-only pass; a
  :class:`~polytask.autograd.matrix.MatrixCombine` instead gets the ``[T, P]`` matrix).

Methods (``GradStats.method``), chosen per step from the batch layout:

* ``"segments"`` — multi-input (each task owns rows of one concatenated batch): exact, one
  forward and ONE backward, ≈ 1× an equal-weighted step. Needs a shared part that never
  mixes rows (true of transformer encoders; see :mod:`polytask.autograd.hooks`).
* ``"per-task"`` — exact, one ``torch.autograd.grad`` per task over the same graph (same
  dropout masks): ≈ (1 + 2T)/3 × the step. Single-input batches (every task's loss reads
  the same rows) with ``single_input="exact"``, and the fallback of ``"segments"`` when a
  shared layer cannot be split (warned once per reason).
* ``"representation"`` — single-input, MGDA-UB style (Sener & Koltun 2018, "Multi-Task
  Learning as Multi-Objective Optimization"): ``c`` comes from the Gramian of the per-task
  gradients w.r.t. the shared representation ``z`` (the encoder's output) instead of the
  parameters; then ONE encoder backward of ``Σ_t c_t ∂(w_t L_t)/∂z``, which writes exactly
  ``Σ_t c_t g_t``. Only ``c`` is approximate. ≈ 1.0–1.1×.

* ``"unshared"`` — the model shares no parameters (soft sharing): one backward, each task's
  parameters get ``∇(w_t L_t)``; the Gramian is zero and ``c = 1`` (nothing to combine).

``g_t`` is the gradient of the weighted loss ``w_t L_t``. ``.grad`` is accumulated as autograd
does (added when it exists). Data parallel: with ``torch.distributed`` initialised (world
size > 1) the per-task pieces (or, for ``"representation"``, the Gramian) are all-reduced
before ``combine`` so every rank computes the same ``c``, and written gradients are averaged
over ranks here — so run the forward on the unwrapped module (``accelerator.unwrap_model``),
never through DDP's reducer hooks. Every rank must pass the same tasks in the same order.

>>> engine = PerTaskGradients(model)                                      # doctest: +SKIP
>>> with engine.capture(batch.segments):                                  # doctest: +SKIP
...     losses = task_losses(model, batch, specs)
>>> stats = engine.backward(losses, aggregator.weights)                   # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from torch.autograd.graph import get_gradient_edge

from polytask.autograd.dist import all_reduce_pieces, world_size
from polytask.autograd.gramian import gramian_of, gramian_to_cosine
from polytask.autograd.graph import SUPPORTED, task_rows, unsupported_modules, use_counts
from polytask.autograd.hooks import SegmentCapture
from polytask.autograd.matrix import MatrixCombine, matrix_step
from polytask.autograd.passes import (
    accumulate,
    owner_of,
    per_task_passes,
    write_grads,
)
from polytask.autograd.stats import Combine, GradStats, coefficients, grad_stats
from polytask.autograd.steps import fixed_step, representation_step, unshared_step
from polytask.segments import overlapping

if TYPE_CHECKING:
    from accelerate import Accelerator

    from polytask.models.base import MultiTaskModel
    from polytask.segments import Segment

__all__ = ["GradStats", "PerTaskGradients", "gramian_to_cosine", "weighted_backward"]


def weighted_backward(
    accelerator: Accelerator,
    losses: dict[str, torch.Tensor],
    weights: dict[str, float],
    retain_graph: bool = False,
) -> torch.Tensor:
    """Backpropagate ``Σ_t w_t · L_t`` once; returns the weighted total (detached).

    ``retain_graph``: keep the forward graph for a per-task backward that follows.
    """
    total = torch.stack([losses[t] * weights[t] for t in losses]).sum()
    accelerator.backward(total, retain_graph=retain_graph)
    return total.detach()


@dataclass
class _Step:
    method: str
    segments: list[Segment]
    capture: SegmentCapture | None = None
    # the representation: the last encoder output of each length chunk's rows (a second
    # call on the same rows, e.g. one forward per task, replaces it: the check then fails)
    z: dict[int | None, Tensor] = field(default_factory=dict)


class PerTaskGradients:
    """Per-task gradients of a multi-task model's shared parameters, combined by Gramian.

    ``single_input`` picks the method for batches whose tasks share rows: ``"exact"``
    (``"per-task"``) or ``"representation"``; ``representation`` is the module whose output
    (or first output) is ``z`` — by default the outermost module owning exactly the shared
    parameters (``HardSharing.encoder``). ``shared`` defaults to
    ``model.shared_parameters()``. A shared layer other than ``nn.Linear``, ``nn.LayerNorm``
    or ``nn.Embedding`` makes every multi-input step use exact per-task passes (warned once).
    """

    def __init__(
        self,
        model: MultiTaskModel,
        single_input: Literal["exact", "representation"] = "exact",
        representation: nn.Module | None = None,
        shared: Sequence[tuple[str, nn.Parameter]] | None = None,
    ) -> None:
        if single_input not in ("exact", "representation"):
            raise ValueError(f"single_input must be 'exact' or 'representation': {single_input!r}")
        self.model, self.single_input = model, single_input
        named = model.shared_parameters() if shared is None else shared
        self.shared = [(n, p) for n, p in named if p.requires_grad]
        self._by_id = {id(p): p for _, p in self.shared}
        self._warned: set[str] = set()
        bad = unsupported_modules(model, self._by_id)
        self.fallback = f"unsupported shared layers {', '.join(bad)}" if bad else None
        if self.fallback:
            self._warn(self.fallback)
        self._modules = [
            m
            for m in model.modules()
            if type(m) in SUPPORTED and any(id(p) in self._by_id for p in m.parameters(False))
        ]
        self._representation = representation
        if single_input == "representation" and representation is None and self.shared:
            self._representation = owner_of(model, set(self._by_id))
        self._step: _Step | None = None
        if not self.shared:
            warnings.warn(
                "polytask: the model shares no parameters (e.g. soft sharing): the gradient "
                "aggregator has nothing to combine (every task's gradient is applied as is) and "
                "the shared gradient norms are 0",
                RuntimeWarning,
                stacklevel=2,
            )

    def _warn(self, reason: str) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(
                f"polytask: per-task gradients by exact per-task passes (≈(1+2T)/3 × a step): "
                f"{reason}",
                RuntimeWarning,
                stacklevel=3,
            )

    @contextmanager
    def capture(self, segments: Sequence[Segment]) -> Iterator[None]:
        """Wrap the model's forward of a batch laid out as ``segments``."""
        segments = list(segments)
        if not self.shared:
            self._step = _Step("unshared", segments)
            yield
            return
        if overlapping(segments):
            method = "representation" if self.single_input == "representation" else "per-task"
        else:
            method = "per-task" if self.fallback else "segments"
        step = self._step = _Step(method, segments)
        if method == "segments" or (method == "per-task" and not self.fallback):
            batch = max(s.stop for s in segments)
            step.capture = SegmentCapture(self._modules, self._by_id, batch)
            step.capture.window = lambda: getattr(self.model, "chunk_rows", None)
            with step.capture:
                yield
        elif method == "representation":
            assert self._representation is not None

            def keep(module: nn.Module, args: Any, out: Any) -> None:
                rows = getattr(self.model, "chunk_rows", None)
                step.z[None if rows is None else id(rows)] = (
                    out if isinstance(out, Tensor) else out[0]
                )

            handle = self._representation.register_forward_hook(keep)
            try:
                yield
            finally:
                handle.remove()
        else:
            yield

    def discard(self) -> None:
        """Drop a captured forward without a backward (a skipped step): frees its inputs."""
        self._step = None

    def backward(
        self,
        losses: dict[str, Tensor],
        combine: Combine,
        loss_weights: dict[str, float] | None = None,
        keep_task_grads: bool = False,
        grad_scale: float = 1.0,
    ) -> GradStats:
        """Per-task gradients → Gramian → ``c = combine(Gramian)`` → write ``.grad``.

        ``combine`` maps the float64 ``[T, T]`` Gramian (tasks in ``losses`` order) to
        ``c [T]``, e.g. ``aggregator.weights``. ``keep_task_grads`` returns the per-task
        gradients of every shared parameter in :attr:`GradStats.task_grads`.

        ``grad_scale`` (fp16 loss scaling, ``accelerator.scaler.get_scale()``): the losses
        are backpropagated times ``s`` (so small activation gradients survive in fp16) and
        ``.grad`` is written times ``s``, as the grad scaler expects before it unscales;
        the Gramian, ``c`` and the logged norms are those of the unscaled gradients.
        """
        step, self._step = self._step, None
        if step is None:
            raise RuntimeError("run the forward inside `with engine.capture(segments):` first")
        tasks = list(losses)
        w = loss_weights or {}
        weighted = [losses[t] * (w.get(t, 1.0) * grad_scale) for t in tasks]
        unscale = 1.0 / (grad_scale * grad_scale)
        heads = [[p for _, p in self.model.task_parameters(t) if p.requires_grad] for t in tasks]
        if step.method == "unshared":
            return unshared_step(tasks, weighted, heads, keep_task_grads)
        method = self._check(step, weighted)
        if method == "representation" and isinstance(combine, MatrixCombine):
            raise RuntimeError("a matrix aggregator needs the parameters' per-task gradients")
        if method == "representation":
            zs, shared = list(step.z.values()), [p for _, p in self.shared]
            args = (tasks, weighted, heads, combine, keep_task_grads, unscale)
            return representation_step(zs, shared, *args)
        if method == "segments":
            assert step.capture is not None
            rows = task_rows(step.segments, tasks, weighted[0].device)
            pieces, head_grads = step.capture.run(rows, weighted, heads)
        elif step.capture is not None:  # single-input, hooked: T activation-gradient passes
            pieces, head_grads = step.capture.run_each(weighted, heads)
        else:
            pieces, head_grads = per_task_passes([p for _, p in self.shared], weighted, heads)
        shared = [p for _, p in self.shared]
        if world_size() > 1:
            all_reduce_pieces(pieces, shared, len(tasks))
        gramian = gramian_of([piece.flat() for piece in pieces.values()], len(tasks)) * unscale
        if isinstance(combine, MatrixCombine):  # the method needs the [T, P] matrix itself
            c = matrix_step(shared, pieces, combine, len(tasks), grad_scale)
        else:
            c = coefficients(combine, gramian)
            for p in shared:
                if id(p) in pieces:
                    accumulate(p, pieces[id(p)].combine(c, p.shape))
        write_grads(heads, head_grads)
        kept = None
        if keep_task_grads:
            kept = {n: pieces[id(p)].full(p.shape) for n, p in self.shared if id(p) in pieces}
        return grad_stats(tasks, gramian, c, method, kept)

    def backward_fixed(self, losses: dict[str, Tensor], c: Tensor, grad_scale: float = 1.0) -> None:
        """``.grad`` as :meth:`backward` writes it for the given coefficients ``c`` (tasks in
        ``losses`` order), from one backward and no per-task gradients
        (:func:`~polytask.autograd.steps.fixed_step`): for a step that reuses an earlier
        step's ``c`` (``aggregator.resolve_every``). Its forward needs no :meth:`capture`."""
        self._step = None
        tasks = list(losses)
        heads = [[p for _, p in self.model.task_parameters(t) if p.requires_grad] for t in tasks]
        weighted = [losses[t] * grad_scale for t in tasks]
        fixed_step([p for _, p in self.shared], weighted, heads, c)

    def _check(self, step: _Step, weighted: list[Tensor]) -> str:
        """The method this step can use: a failed safety check falls back to per-task passes."""
        roots = [loss.grad_fn for loss in weighted if loss.grad_fn is not None]
        reason = None
        if step.capture is not None:
            reason = step.capture.check(roots)
        elif step.method == "representation":
            if not step.z or not all(z.requires_grad for z in step.z.values()):
                raise RuntimeError("the representation module produced no differentiable output")
            counts, _ = use_counts(roots, stop=[get_gradient_edge(z) for z in step.z.values()])
            if any(k in self._by_id for k in counts):
                reason = "the losses reach shared parameters other than through the representation"
        if world_size() > 1:  # every rank must take the same path (collectives below)
            flag = torch.tensor([float(reason is not None)], device=weighted[0].device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            reason = reason or ("another rank fell back" if flag.item() > 0 else None)
        if reason is not None:
            self._warn(reason)
            step.capture = None  # plain per-task passes
            return "per-task"
        return step.method
