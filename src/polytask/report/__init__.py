"""The HTML report of run, compare, leaderboard and check folders: reads run folders,
imports no training.

``html`` (:func:`~polytask.report.html.write_report`), ``load`` (a run folder read back),
``run`` (a run's sections), ``sections`` (shared HTML pieces), ``leaderboard`` (the
leaderboard section), ``plots`` (PNG figures).
"""
