"""Per-task gradients of a shared encoder from ONE backward pass, split by batch segment.

Helpers of :mod:`polytask.autograd.engine` (the only caller). Multi-input mode: each task owns rows
``start:stop`` of one concatenated batch, and a transformer encoder never mixes rows
(attention stays inside an example, LayerNorm is per token). In one backward of the summed
loss the gradient ``δ`` reaching a layer's output rows of task ``t`` is then exactly the one
``L_t`` alone would send, so the per-task weight gradient of a linear layer is the segment
product ``δ[rows_t]ᵀ x[rows_t]`` — the matmul autograd would do, split by task. See
``docs/per-task-gradients.md``.

Forward hooks record each shared ``nn.Linear`` / ``nn.LayerNorm`` / ``nn.Embedding`` input (and
which rows it computed: a forward in length chunks calls each layer once per chunk) and put a
tensor hook on its output. The backward is ``torch.autograd.grad`` with ``inputs`` = the
heads' parameters and the outputs of the layers fed by token ids: the shared parameters are
not among the inputs, so autograd's engine prunes their weight-gradient kernels and the
tensor hooks compute the per-task pieces instead — the same FLOPs as one ordinary step.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, Node, get_gradient_edge

from polytask.autograd.graph import Selector, rows_within, use_counts
from polytask.autograd.pieces import Piece, add_piece, same_layout


@dataclass
class _Call:
    module: nn.Module
    x: Tensor | None  # the module's input, detached; None once its pieces are computed
    node: Node | None  # grad_fn of the hooked output (reachability)
    rows: Tensor | None = None  # the batch rows this call computed (None: every row)
    fired: int = -1  # single-input mode: the last task whose pass reached this call


class SegmentCapture:
    """Records a forward of the shared layers; during the backward, splits their gradients.

    Use as a context manager around the forward, then :meth:`check` and :meth:`run`.
    """

    def __init__(self, modules: list[nn.Module], shared: dict[int, nn.Parameter], batch: int):
        self.modules, self.shared, self.batch = modules, shared, batch
        # in a chunked forward: the batch rows the running call computes (None: every row)
        self.window: Callable[[], Tensor | None] = lambda: None
        self._local: dict[int, list[Selector]] = {}  # id(call rows): the tasks' rows in them
        self.calls: list[_Call] = []
        self.leaves: list[GradientEdge] = []  # outputs of calls whose input needs no gradient
        self.problems: list[str] = []
        self.pieces: dict[int, Piece] = {}
        self.selectors: list[Selector] = []
        self.active = False
        # single-input mode (run_each): the pass's task, the task count, the parameters
        # written in this pass, and each parameter's tasks written so far
        self.task: int | None = None
        self.n_tasks = 0
        self._written: set[int] = set()
        self._filled: dict[int, set[int]] = {}
        self.seen: set[Node] = set()  # graph nodes reachable from the losses
        self._handles: list[Any] = []

    def __enter__(self) -> SegmentCapture:
        hook = self._forward
        self._handles = [m.register_forward_hook(hook, with_kwargs=True) for m in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
    ) -> Tensor | None:
        if not (torch.is_grad_enabled() and isinstance(out, Tensor) and out.requires_grad):
            return None
        x = args[0] if args else kwargs.get("input")
        if self.active or not isinstance(x, Tensor) or out.dim() < 2:
            self.problems.append(f"{type(module).__name__}: called in an unexpected way")
            return None
        changed = None
        rows = self.window()
        n = self.batch if rows is None else len(rows)
        if out.shape[0] != n and out.shape[0] == 1 == x.shape[0]:
            # broadcast over the batch (BERT's position embeddings): expand, so that the
            # hook sees each row's gradient before autograd sums them
            out = changed = out.expand(n, *out.shape[1:])
            x = x.expand(n, *x.shape[1:])
        if out.shape[0] != n or x.shape[0] != n:
            self.problems.append(f"{type(module).__name__}: rows {out.shape[0]} != {n}")
            return None
        out.register_hook(partial(self._backward, len(self.calls)))
        self.calls.append(_Call(module, x.detach(), out.grad_fn, rows))
        if not (x.is_floating_point() and x.requires_grad):
            self.leaves.append(get_gradient_edge(out))
        return changed

    def check(self, roots: Sequence[Node]) -> str | None:
        """Why the split would be wrong for this graph, or None when it is exact.

        Every use of a shared parameter in the graph (an edge into its accumulator) must
        be a reachable call of a hooked module; otherwise (a weight read directly, a layer
        run on unexpected shapes) the caller falls back to per-task passes.
        """
        if self.problems:
            return self.problems[0]
        counts, self.seen = use_counts(roots)
        covered: Counter[int] = Counter()
        for call in self.calls:
            if call.node in self.seen:
                covered.update(id(p) for p in call.module.parameters(recurse=False))
        if any(k in self.shared and n != covered[k] for k, n in counts.items()):
            return "a shared parameter is used outside its layer (e.g. read directly)"
        return None

    def run(
        self,
        tasks_rows: list[Selector],
        weighted: list[Tensor],
        heads: list[list[nn.Parameter]],
    ) -> tuple[dict[int, Piece], list[list[Tensor | None]]]:
        """ONE backward of ``Σ_t w_t L_t``; returns the shared pieces and each head's grads."""
        self.selectors = tasks_rows
        inputs: list[Any] = [p for ps in heads for p in ps] + self.leaves
        self.active = True
        try:
            grads = torch.autograd.grad(torch.stack(weighted).sum(), inputs, allow_unused=True)
        finally:
            self.active = False
        missed = [
            type(c.module).__name__ for c in self.calls if c.x is not None and c.node in self.seen
        ]
        if missed or self.problems:  # cannot happen after check(); never return wrong grads
            raise RuntimeError(
                f"polytask: shared layers missed their gradient: {missed or self.problems}"
            )
        sizes = [0, *itertools.accumulate(len(ps) for ps in heads)]
        return self._release(), [list(grads[a:b]) for a, b in itertools.pairwise(sizes)]

    def run_each(
        self, weighted: list[Tensor], heads: list[list[nn.Parameter]]
    ) -> tuple[dict[int, Piece], list[list[Tensor | None]]]:
        """Single-input: one activation-gradient pass per task over the same graph.

        Every task reads every row, so the split by rows cannot apply; instead each pass
        backpropagates one task's loss with the shared parameters pruned from autograd's
        inputs, and the hooks write that task's weight gradients straight into its slot of
        a ``[T, *shape]`` buffer (embeddings: only the rows the batch's tokens use).
        """
        T = self.n_tasks = len(weighted)
        self.selectors = [slice(None)]
        head_grads: list[list[Tensor | None]] = []
        for t, (loss, ps) in enumerate(zip(weighted, heads, strict=True)):
            self.task, self._written = t, set()
            inputs: list[Any] = [*ps, *self.leaves]
            self.active = True
            try:
                grads = torch.autograd.grad(loss, inputs, retain_graph=t < T - 1, allow_unused=True)
            finally:
                self.active = False
            head_grads.append(list(grads[: len(ps)]))
            if loss.grad_fn is not None:
                _, reached = use_counts([loss.grad_fn])
                missed = [
                    type(c.module).__name__
                    for c in self.calls
                    if c.node in reached and c.fired != t
                ]
                if missed:  # cannot happen after check(); never return wrong grads
                    raise RuntimeError(f"polytask: shared layers missed their gradient: {missed}")
        for key, piece in self.pieces.items():  # slots of tasks that never reached a layer
            for t in set(range(T)) - self._filled.get(key, set()):
                piece.values[t].zero_()
        self.task, self._filled = None, {}
        return self._release(), head_grads

    def _release(self) -> dict[int, Piece]:
        """The pieces; the graph's hooks keep `self` alive until it goes: drop the rest."""
        pieces, self.pieces = self.pieces, {}
        self.calls, self.leaves, self.seen, self._local = [], [], set(), {}
        return pieces

    def _selectors(self, rows: Tensor | None) -> list[Selector]:
        """Each task's rows among a call's ``rows`` (positions in that call's input)."""
        if rows is not None and id(rows) not in self._local:
            self._local[id(rows)] = rows_within(self.selectors, rows, self.batch)
        return self.selectors if rows is None else self._local[id(rows)]

    def _backward(self, index: int, grad: Tensor) -> None:
        call = self.calls[index]
        if not self.active or call.x is None:
            return
        x = call.x
        if self.task is None:  # one pass: the input is no longer needed
            call.x = None
        else:
            call.fired = self.task
        selectors = self._selectors(call.rows)
        if isinstance(call.module, nn.Embedding):
            self._embedding(call.module, x, grad, selectors)
        elif isinstance(call.module, nn.LayerNorm):
            ns = tuple(call.module.normalized_shape)
            xhat = F.layer_norm(x, ns, None, None, call.module.eps)

            def norm_weight(d: Tensor, rows: Selector, out: Tensor) -> None:
                torch.sum(d * xhat[rows].reshape(d.shape).to(d), 0, out=out)

            self._split(call.module, norm_weight, grad, ns, selectors)
        elif isinstance(call.module, nn.Linear):
            width = x.shape[-1]

            def linear_weight(d: Tensor, rows: Selector, out: Tensor) -> None:
                torch.mm(d.T, x[rows].reshape(-1, width).to(d), out=out)

            self._split(call.module, linear_weight, grad, grad.shape[-1:], selectors)

    def _split(
        self,
        module: nn.Linear | nn.LayerNorm,
        weight_into: Callable[[Tensor, Selector, Tensor], None],
        grad: Tensor,
        tail: Sequence[int],
        selectors: list[Selector],
    ) -> None:
        """Per-task weight (``weight_into(δ_t, rows_t, out)``) and bias ``Σ δ_t`` of a layer."""
        w, b = module.weight, module.bias
        W = self._slots(w, len(selectors)) if w is not None and id(w) in self.shared else None
        B = self._slots(b, len(selectors)) if b is not None and id(b) in self.shared else None
        grad = grad.to(w.dtype if w is not None else grad.dtype)
        for t, rows in enumerate(selectors):
            d = grad[rows].reshape(-1, *tail)
            if W is not None:
                weight_into(d, rows, W[0][t])
            if B is not None:
                torch.sum(d, 0, out=B[0][t])
        for param, slots in ((w, W), (b, B)):
            if param is not None and slots is not None and not slots[1]:
                self._commit(id(param), Piece(slots[0]))

    def _slots(self, p: Tensor, n: int) -> tuple[Tensor, bool]:
        """Where a layer writes its per-selector gradients of ``p``, and whether that is
        already the final buffer (single-input: this task's slot, on its first write)."""
        if self.task is None:
            return p.new_empty(n, *p.shape), False
        piece = self.pieces.get(id(p))
        if piece is None:  # slots of tasks that never write are zeroed at the end
            piece = self.pieces[id(p)] = Piece(p.new_empty(self.n_tasks, *p.shape))
        if id(p) in self._written or piece.rows is not None:
            return p.new_empty(1, *p.shape), False
        self._written.add(id(p))
        self._filled.setdefault(id(p), set()).add(self.task)
        return piece.values[self.task : self.task + 1], True

    def _commit(self, key: int, piece: Piece) -> None:
        """Add a piece computed into a temporary (embeddings; a layer called twice)."""
        if self.task is None:
            add_piece(self.pieces, key, piece)
            return
        old, t = self.pieces.get(key), self.task
        filled = self._filled.setdefault(key, set())
        self._written.add(key)
        if old is not None and same_layout(old.rows, piece.rows):
            if t in filled:
                old.values[t] += piece.values[0]
            else:
                old.values[t] = piece.values[0]
            filled.add(t)
            return
        # first piece of an embedding, or other rows: widen to T zeroed slots and merge
        values = piece.values.new_zeros(self.n_tasks, *piece.values.shape[1:])
        values[t] = piece.values[0]
        add_piece(self.pieces, key, Piece(values, piece.rows))
        filled.update(range(self.n_tasks))  # every slot of a merged piece is defined

    def _embedding(
        self, module: nn.Embedding, ids: Tensor, grad: Tensor, selectors: list[Selector]
    ) -> None:
        """Per-task index-add of the output gradient into the rows each task's tokens used."""
        w = module.weight
        if id(w) not in self.shared:
            return
        rows, inverse = torch.unique(ids, return_inverse=True)
        width = grad.shape[-1]
        values = w.new_zeros(len(selectors), len(rows), width)
        for t, sel in enumerate(selectors):
            values[t].index_add_(0, inverse[sel].reshape(-1), grad[sel].reshape(-1, width).to(w))
        if module.padding_idx is not None:  # autograd leaves the padding row's gradient at 0
            values[:, rows == module.padding_idx] = 0
        self._commit(id(w), Piece(values, rows))
