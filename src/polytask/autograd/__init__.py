"""The per-task gradient engine: the only code that runs backward or writes ``.grad``.

``engine`` (:class:`~polytask.autograd.engine.PerTaskGradients`), ``steps`` (its
representation and unshared methods), ``stats`` (:class:`~polytask.autograd.stats.GradStats`),
``hooks`` (segment capture of the shared layers), ``graph`` (the checks the split relies on),
``pieces`` (per-task gradients of one parameter), ``passes`` (per-task backward passes and
``.grad`` writes), ``dist`` (all-reduce across ranks), ``gramian`` (Gramian and cosines).
"""
