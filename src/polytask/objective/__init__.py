"""From per-task losses to one update: loss weighting, then gradient aggregation.

The training loop hands every step's per-task losses to :meth:`Objective.backward`; it
never branches on a method's name, only on what a method declares it needs
(``gramian_free``, ``needs_grad_norms``, ``observes_same_batch``).

``core`` (:class:`Objective`, :func:`build_objective`), ``terms`` (the loss-space terms: a
step over some of the tasks, what a learned weighting trains on). Which combinations a step
applies is the config's one rule, :func:`polytask.config.rule.refusal` (read at load).
"""

from polytask.objective.core import Objective, build_objective

__all__ = ["Objective", "build_objective"]
