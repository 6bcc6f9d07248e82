"""Measure before training, never train for real: ``check`` (interference and advice),
``rules`` (its decision rules), ``affinity`` (task affinity by lookahead steps)."""

#: head-only steps before check measures the gradient cosines (``--head-warmup``): with random
#: heads every pair reads near 0, whatever the tasks (docs/check.md, "Random heads")
HEAD_WARMUP = 40
