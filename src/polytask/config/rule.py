"""The one rule of what a step applies: which weighting, aggregator and architecture go
together when a step trains ``k`` of ``n`` tasks (read by the config at load, from the
capability flags the registry manifest records: no torch)."""

from __future__ import annotations

from polytask.config.manifest import Entry, listing


def refusal(
    weighting: tuple[str, Entry],
    aggregator: tuple[str, Entry],
    *,
    k: int,
    n_tasks: int,
    architecture: tuple[str, bool],
    resolve_every: int = 1,
) -> str | None:
    """Why a step would not apply this weighting and aggregator as configured, or None.

    The one rule, read from what each method class declares (``needs_all_tasks``,
    ``needs_shared_gradients``, ``needs_grad_norms``, ``gramian_free``, as the manifest records
    them: ``entry`` is :func:`polytask.config.manifest.listing` ``(...).get(name)``) and from
    the architecture (``(name, trains_shared)``): a step trains ``k`` of the ``n_tasks`` tasks.

    * ``k < n_tasks``: the weighting must weigh each task on its own loss and the
      aggregator must have fixed coefficients (:func:`polytask.objective.terms.subset_backward`).
    * no trainable shared parameters: no per-task gradient to combine or measure.
    * ``resolve_every`` > 1 (``aggregator.resolve_every``): the aggregator must solve a
      Gramian (``gramian_free`` false) and the weighting must not need gradient norms, which
      the steps that reuse the coefficients do not compute.

    Every accepted combination is applied by :class:`Objective`; the config refuses the
    others at load with this one line (the pair, and the fix).
    """
    (w_name, w_cls), (a_name, a_cls) = weighting, aggregator
    arch, shared = architecture
    pair = f"weighting '{w_name}' with aggregator '{a_name}'"
    if resolve_every != 1:
        reused = _resolve_refusal(weighting, aggregator, resolve_every)
        if reused is not None:
            return f"{pair}: {reused}"
    if k < n_tasks and (w_cls.needs_all_tasks or a_cls.needs_all_tasks):
        if w_cls.needs_all_tasks:
            why = f"'{w_name}' weighs every task's loss together"
            fix = f"a per-task weighting ({', '.join(_names('weightings', 'needs_all_tasks'))})"
        else:
            why = f"'{a_name}' combines the gradients of every task in one step"
            fix = f"aggregator {' or '.join(_names('aggregators', 'needs_all_tasks'))}"
        return (
            f"{pair}: {why}, but sampler.tasks_per_step is {k} of {n_tasks} tasks: "
            f"set sampler.tasks_per_step: all, or use {fix}"
        )
    if not shared and (a_cls.needs_shared_gradients or w_cls.needs_grad_norms):
        if a_cls.needs_shared_gradients:
            name, stays = a_name, "its coefficients would stay 1, the sum"
            fix = f"aggregator {' or '.join(_names('aggregators', 'needs_shared_gradients'))}"
        else:
            name, stays, fix = w_name, "its weights would stay 1, equal weighting", "a weighting"
            fix += (
                f" without gradient norms ({', '.join(_names('weightings', 'needs_grad_norms'))})"
            )
        return (
            f"{pair} on architecture '{arch}': it trains no shared parameters, so '{name}' "
            f"has no per-task gradients to work on ({stays}): use {fix}, or an architecture "
            "that trains a shared encoder"
        )
    return None


def _resolve_refusal(
    weighting: tuple[str, Entry], aggregator: tuple[str, Entry], every: int
) -> str | None:
    """Why ``aggregator.resolve_every: every`` would not apply to this pair, or None."""
    (w_name, w_cls), (a_name, a_cls) = weighting, aggregator
    option = f"aggregator.resolve_every is {every}"
    undo = "remove aggregator.resolve_every (or set it to 1)"
    if a_cls.gramian_free:
        solving = ", ".join(_names("aggregators", "gramian_free"))
        return (
            f"{option}, but '{a_name}' has fixed coefficients (no Gramian is solved, so none "
            f"is reused): {undo}, or use an aggregator that solves one ({solving})"
        )
    if w_cls.needs_grad_norms:
        return (
            f"{option}, but '{w_name}' needs the per-task gradient norms of every step, which "
            f"the steps reusing the coefficients do not compute: {undo}, or use a weighting "
            f"without gradient norms ({', '.join(_names('weightings', 'needs_grad_norms'))})"
        )
    return None


def two_batch_refusal(
    aggregator: tuple[str, Entry], *, single_input: str | None, resolve_every: int = 1
) -> str | None:
    """Why an aggregator that ``needs_two_batches`` (MoDo, SDMGrad) would not get the second
    batch's per-task parameter gradients it solves on, every step, or None: under
    ``train.single_input: representation`` the engine measures gradients at the shared
    representation (rows of one batch, not comparable across two), and
    ``aggregator.resolve_every`` skips the solve (and so the second batch) on most steps."""
    name, entry = aggregator
    if not entry.needs_two_batches:
        return None
    why = f"aggregator '{name}' solves on the cross-Gramian of two batches' parameter gradients"
    others = " or ".join(_names("aggregators", "needs_two_batches")[:4])
    if single_input == "representation":
        return (
            f"{why}, but train.single_input is representation (gradients at one batch's "
            f"representation rows): set train.single_input: exact, or use aggregator {others}"
        )
    if resolve_every != 1:
        return (
            f"{why} drawn on every step, but aggregator.resolve_every is {resolve_every}: "
            f"remove aggregator.resolve_every, or use aggregator {others}"
        )
    return None


def matrix_refusal(
    aggregator: tuple[str, Entry], *, single_input: str | None, resolve_every: int = 1
) -> str | None:
    """Why an aggregator that ``needs_matrix`` (GradDrop, TrimmedMean, ExcessMTL, MoCo, DB-MTL)
    would not get the ``[T, P]`` matrix of the shared parameters' per-task gradients every
    step, or None: ``single_input: representation`` measures gradients at the shared
    representation instead, and ``resolve_every`` forms no per-task gradients on most steps."""
    name, entry = aggregator
    if not entry.needs_matrix:
        return None
    others = " or ".join(_names("aggregators", "needs_matrix")[:4])
    if single_input == "representation":
        return (
            f"aggregator '{name}' needs the per-task gradients of the shared parameters, but "
            f"train.single_input is representation: set train.single_input: exact, or use "
            f"aggregator {others}"
        )
    if resolve_every != 1:
        return (
            f"aggregator '{name}' needs the per-task gradients of every step, but "
            f"aggregator.resolve_every is {resolve_every}: remove aggregator.resolve_every, "
            f"or use aggregator {others}"
        )
    return None


def _names(key: str, flag: str) -> list[str]:
    """The registered methods whose capability ``flag`` is false (for a fix's choices)."""
    return [name for name, entry in listing(key).items() if not getattr(entry, flag)]
