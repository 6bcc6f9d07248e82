"""Measure before training, never train for real: ``check`` (interference and advice),
``rules`` (its decision rules), ``affinity`` (task affinity by lookahead steps)."""
