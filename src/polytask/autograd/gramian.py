"""Gramians of per-task gradient matrices and the cosines they imply (float64, CPU)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def gramian_to_cosine(gramian: Tensor) -> Tensor:
    """Pairwise cosine similarities from a Gramian; 0 for pairs with a zero-norm gradient.

    >>> gramian_to_cosine(torch.tensor([[4.0, -2.0], [-2.0, 1.0]]))
    tensor([[ 1., -1.],
            [-1.,  1.]])
    """
    norms = gramian.diagonal().clamp(min=0).sqrt()
    outer = norms[:, None] * norms[None, :]
    safe = torch.where(outer > 0, outer, torch.ones_like(outer))
    return torch.where(outer > 0, gramian / safe, torch.zeros_like(gramian)).clamp(-1.0, 1.0)


def gramian_of(matrices: Sequence[Tensor], n_tasks: int, chunk: int = 1 << 15) -> Tensor:
    """``Σ_k M_k M_kᵀ`` in float64 for ``[T, n_k]`` matrices, on the CPU.

    Converted to float64 a cache-sized column block at a time: exact float64 products of
    the stored gradients, at the memory traffic of reading them once.
    """
    device = matrices[0].device if matrices else "cpu"
    gramian = torch.zeros(n_tasks, n_tasks, dtype=torch.float64, device=device)
    for m in matrices:
        for start in range(0, m.shape[1], chunk):
            block = m[:, start : start + chunk].double()
            gramian.addmm_(block, block.T)
    return gramian.cpu()
