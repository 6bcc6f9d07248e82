"""What every gradient aggregator provides, and the registry they join.

An aggregator maps the per-task gradients of the shared parameters, a matrix ``G`` of shape
``[T, P]``, to one update vector. Every built-in method is a linear combination of the task
gradients, ``update = Σ_t c_t g_t``, whose coefficients ``c`` depend on ``G`` only through its
``T × T`` Gramian ``G Gᵀ``. So the core of each method is :meth:`Aggregator.weights`, which the
training loop can call on a Gramian accumulated layer by layer, without ever materialising
``G`` (see ``docs/per-task-gradients.md``).

The maths here never calls autograd: inputs are detached and solved on the CPU in float64.
The result is a deterministic function of the Gramian and the method's state (random
orders come from a seeded, checkpointed generator), so under data parallelism every rank
that all-reduces the Gramian and starts from the same state computes the same update.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from polytask.registry import Registry
from polytask.rng import SeededState

Array = npt.NDArray[np.float64]
Index = npt.NDArray[np.intp]

__all__ = ["AGGREGATORS", "Aggregator", "Array", "Index", "SeededState", "normalized"]


def normalized(gramian: Array) -> Array:
    """The Gramian divided by its trace (``Σ‖g_t‖²``), or unchanged when that is zero.

    Scaling all gradients by ``s`` scales the Gramian by ``s²``; the scale-invariant methods
    work on this normalised copy so their tolerances are relative, never absolute.
    """
    trace = float(np.trace(gramian))
    return gramian / trace if trace > 0.0 else gramian


class Aggregator(nn.Module, ABC):
    """Base class: per-task gradients ``G [T, P]`` (or their Gramian) → one update ``[P]``.

    Subclasses implement :meth:`_weights` on a float64 NumPy Gramian and declare the
    properties they guarantee, which the contract suite checks for every registered name:

    * ``non_conflicting``: ``g_t · update ≥ 0`` for every task ``t``.
    * ``permutation_equivariant``: permuting the tasks permutes nothing in the update.

    >>> agg = AGGREGATORS.get("mean")(n_tasks=2)
    >>> agg(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    tensor([0.5000, 0.5000])
    """

    non_conflicting: ClassVar[bool] = False
    #: Whether ``polytask check`` names this method when it measures strong interference
    #: (gradient surgery: PCGrad, CAGrad, UPGrad).
    advised_for_conflict: ClassVar[bool] = False
    permutation_equivariant: ClassVar[bool] = True
    #: Coefficients that never depend on the gradients (sum, mean): the training loop then
    #: takes one plain backward of the weighted loss instead of computing per-task gradients.
    gramian_free: ClassVar[bool] = False
    #: Whether the coefficients combine the gradients of every task in one step. False only
    #: for Gramian-free methods, whose fixed coefficient of task ``t`` (``weights`` of the
    #: identity) also scales a step that trains some of the tasks.
    needs_all_tasks: ClassVar[bool] = True
    #: Whether the method reads per-task gradients of *trainable shared* parameters: with
    #: none (``soft``, a frozen encoder) its Gramian is zero and it would stay at ``c = 1``.
    needs_shared_gradients: ClassVar[bool] = True
    #: Whether the coefficients come from two independent batches (MoDo, SDMGrad): every
    #: step draws a second batch of each task and :meth:`weights` receives the cross-Gramian
    #: ``G₁ G₂ᵀ`` of the two batches' gradients (not symmetric, so not symmetrised); the
    #: update is ``Σ_t c_t (g₁_t + g₂_t) / 2`` (:mod:`polytask.autograd.two_batch`). The
    #: config refuses a setting that cannot supply the second batch's per-task parameter
    #: gradients (``single_input: representation``, ``resolve_every``). Called on one matrix
    #: (``G Gᵀ``) such a method sees the two batches coincide.
    needs_two_batches: ClassVar[bool] = False
    #: Whether the update needs the ``[T, P]`` per-task gradient matrix itself, not only its
    #: Gramian (GradDrop, TrimmedMean, ExcessMTL, MoCo, DB-MTL: coordinate-wise rules or
    #: ``[T, P]`` state): such a method is a :class:`~polytask.aggregation.matrix.
    #: MatrixAggregator`, the engine hands it the matrix of the shared parameters'
    #: gradients (``T × P`` floats more while it is built) and the config refuses settings
    #: that never form it (``single_input: representation``, ``resolve_every``).
    needs_matrix: ClassVar[bool] = False

    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1:
            raise ValueError(f"n_tasks must be a positive integer, got {n_tasks!r}")
        self.n_tasks = n_tasks

    @property
    def needs_losses(self) -> bool:
        """Whether :meth:`weights` needs the per-task losses (only some MGDA normalisations)."""
        return False

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}"

    def forward(self, G: Tensor, losses: Tensor | None = None) -> Tensor:
        """The update ``weights(G Gᵀ) @ G`` in ``G``'s dtype.

        The Gramian is formed in ``G``'s dtype (float32 for half precision) so no float64
        copy of the ``[T, P]`` matrix is made; the ``T × T`` solve runs in float64.
        """
        if G.ndim != 2 or G.shape[0] != self.n_tasks:
            raise ValueError(f"expected a gradient matrix [{self.n_tasks}, P], got {list(G.shape)}")
        with torch.no_grad():
            work = G.detach()
            if work.dtype not in (torch.float32, torch.float64):
                work = work.float()
            coefficients = self.weights(work @ work.T, losses)
            return (coefficients.to(work.dtype) @ work).to(G.dtype)

    def weights(
        self, gramian: Tensor, losses: Tensor | None = None, eps: float | None = None
    ) -> Tensor:
        """Coefficients ``c [T]`` such that the update is ``Σ_t c_t g_t``.

        ``gramian`` is ``G Gᵀ`` (``[T, T]``); ``losses`` (``[T]``) is only read by methods
        whose :attr:`needs_losses` is true. A non-finite Gramian or loss gives NaN weights
        (and leaves the method's state untouched), so a mixed-precision grad scaler sees the
        overflow and skips the step instead of the run crashing here.
        """
        T = self.n_tasks
        if gramian.shape != (T, T):
            raise ValueError(f"expected a Gramian [{T}, {T}], got {list(gramian.shape)}")
        if losses is not None and losses.shape != (T,):
            raise ValueError(f"expected losses [{T}], got {list(losses.shape)}")
        # ``eps``: the precision the gradients were computed in (a float64 Gramian of float32
        # gradients still carries float32 noise); default: the Gramian's own dtype
        eps = float(torch.finfo(gramian.dtype).eps) if eps is None else eps
        matrix = gramian.detach().to("cpu", torch.float64).numpy()
        loss_array = None if losses is None else losses.detach().to("cpu", torch.float64).numpy()
        finite = np.isfinite(matrix).all() and (loss_array is None or np.isfinite(loss_array).all())
        if finite:
            square = matrix if self.needs_two_batches else 0.5 * (matrix + matrix.T)
            coefficients = self._weights(square, loss_array, eps)
        else:
            coefficients = np.full(T, np.nan)
        return torch.as_tensor(coefficients, dtype=gramian.dtype, device=gramian.device)

    @abstractmethod
    def _weights(self, gramian: Array, losses: Array | None, eps: float) -> Array:
        """The method: a symmetric float64 Gramian → float64 coefficients.

        ``eps`` is the machine epsilon of the precision the Gramian was computed in, for
        rank decisions that must not mistake float32 rounding noise for signal.
        """
        ...


AGGREGATORS: Registry[type[Aggregator]] = Registry("gradient aggregator")
