"""The pieces of the training loop in :mod:`polytask.train`: ``setup`` (build everything from
a config), ``prepare`` (accelerator, run directory, streams: everything before the first
step), ``step`` (one optimisation step), ``end`` (evaluate, keep the best, finish), ``state``
(checkpoint and resume), ``optim``, ``params``, ``runlog``, ``progress``."""
