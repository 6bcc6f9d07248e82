"""The per-task gradient engine: the only code that runs backward or writes ``.grad``.

``engine`` (:class:`~polytask.autograd.engine.PerTaskGradients`), ``hooks`` (segment capture
of the shared layers), ``passes`` (per-task backward passes), ``dist`` (all-reduce across
ranks), ``gramian`` (Gramian and cosines of per-task gradients).
"""
