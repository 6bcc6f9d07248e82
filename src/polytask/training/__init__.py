"""The pieces of the training loop in :mod:`polytask.train`: ``setup`` (build everything from
a config), ``step`` (one optimisation step), ``end`` (evaluate, keep the best, finish),
``state`` (checkpoint and resume), ``optim``, ``params``, ``runlog``, ``progress``."""
