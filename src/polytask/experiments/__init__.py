"""Experiments built from whole runs: ``compare`` (multi-task vs single-task baselines),
``summary`` (its statistics and tables), ``sweep`` (auxiliary-weight sweeps), ``diversity``,
and ``evaluate_run`` (a trained run on one split)."""
