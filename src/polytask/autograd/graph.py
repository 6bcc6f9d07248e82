"""What the segment split may rely on, checked before it is trusted.

Which shared layers the hooks of :mod:`polytask.autograd.hooks` can split, how often the
autograd graph uses each parameter (:func:`use_counts`: a use outside a hooked layer forces
the exact fallback), and which rows of the batch each task owns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, Node

SUPPORTED: tuple[type[nn.Module], ...] = (nn.Linear, nn.LayerNorm, nn.Embedding)
Selector = slice | Tensor  # the rows of one task: a slice, or an index for several segments


def unsupported_modules(model: nn.Module, shared: dict[int, nn.Parameter]) -> list[str]:
    """Modules owning a shared parameter whose per-task gradient the hooks cannot split."""
    bad = []
    for name, module in model.named_modules():
        if not any(id(p) in shared for p in module.parameters(recurse=False)):
            continue
        odd_embedding = isinstance(module, nn.Embedding) and (
            module.max_norm is not None or module.scale_grad_by_freq or module.sparse
        )
        if type(module) not in SUPPORTED or odd_embedding:
            bad.append(f"{name or '<model>'} ({type(module).__name__})")
        elif getattr(module, "gradient_checkpointing", False) is True:
            bad.append(f"{name} (gradient checkpointing)")
    return bad


def use_counts(
    roots: Sequence[Node], stop: Sequence[GradientEdge] = ()
) -> tuple[Counter[int], set[Node]]:
    """Walk the graph from ``roots``: uses of each leaf (by ``id``), nodes seen.

    Each use of a parameter in an op adds one edge into its accumulator, so comparing these
    counts with the hooked calls proves that no shared parameter is used outside a hooked
    module (e.g. an ``nn.Embedding`` weight read directly, as DeBERTa does for relative
    positions). Under autocast a weight is cast once and the cast reused by every call in the
    region (a forward in length chunks calls each layer once per chunk): a leaf reached
    through a cast counts the uses of that cast. The edges ``stop`` are not followed.
    """
    stops = {(edge.node, edge.output_nr) for edge in stop}
    into: Counter[Node] = Counter()  # edges into each node from the nodes seen
    casts: dict[Node, int] = {}  # a cast node whose only input is a leaf: that leaf's id
    counts: Counter[int] = Counter()
    seen: set[Node] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        inputs = [(c, nr) for c, nr in node.next_functions if c is not None]
        if node.name().startswith("ToCopyBackward") and len(inputs) == 1:
            leaf = getattr(inputs[0][0], "variable", None)
            if leaf is not None:
                casts[node] = id(leaf)
                continue
        for child, nr in inputs:
            if (child, nr) in stops:
                continue
            into[child] += 1
            variable = getattr(child, "variable", None)
            if variable is not None:
                counts[id(variable)] += 1
            stack.append(child)
    for node, leaf in casts.items():
        counts[leaf] += into[node]
    return counts, seen


def task_rows(segments: Sequence[Any], tasks: list[str], device: torch.device) -> list[Selector]:
    """Each task's rows of the batch: a slice for one segment, an index for several."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for s in segments:
        spans.setdefault(s.task, []).append((s.start, s.stop))
    missing = [t for t in tasks if t not in spans]
    if missing:
        raise ValueError(f"tasks {missing} have a loss but no rows in the batch's segments")
    return [
        slice(*spans[t][0])
        if len(spans[t]) == 1
        else torch.cat([torch.arange(a, b, device=device) for a, b in spans[t]])
        for t in tasks
    ]


def rows_within(selectors: Sequence[Selector], rows: Tensor, batch: int) -> list[Selector]:
    """Each selector's rows among ``rows`` (indices into a batch of ``batch`` rows), as
    positions in ``rows``: the tasks' rows of one length chunk of the batch.

    >>> rows_within([slice(0, 4), slice(4, 8)], torch.tensor([2, 3, 4]), 8)
    [slice(0, 2, None), slice(2, 3, None)]
    """
    if all(isinstance(s, slice) and s == slice(None) for s in selectors):
        return list(selectors)  # single-input: every task reads every row
    local: list[Selector] = []
    for sel in selectors:
        member = torch.zeros(batch, dtype=torch.bool, device=rows.device)
        member[sel] = True
        at = member[rows].nonzero().flatten()
        if at.numel() == 0:
            local.append(slice(0, 0))
        elif int(at[-1]) - int(at[0]) + 1 == at.numel():
            local.append(slice(int(at[0]), int(at[-1]) + 1))
        else:
            local.append(at)
    return local
