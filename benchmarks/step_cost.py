"""Cost of a step with per-task gradients, as a multiple of one equal-weighted step.

Bundled all-MiniLM-L6-v2, CPU, random token ids, T tasks with 3-way heads. Two batch layouts:

* ``multi-input``: each task owns ``--per-task`` rows of one concatenated batch;
* ``single-input``: ``--per-task`` rows that every task labels (its own head and labels).

A step is forward + backward (+ aggregation and writing ``.grad``), no optimiser. Impls:

* ``equal``: one backward of ``Σ_t L_t`` — the denominator of every ratio;
* ``polytask-segments`` / ``polytask-exact`` / ``polytask-representation``: polytask's
  engine (:class:`polytask.autograd.engine.PerTaskGradients`) with every registered aggregator
  (the two-batch ones, MoDo and SDMGrad, with the second batch the loop draws for them: two
  forwards and two per-task backwards a step);
  ``aggregate_ms`` is the median time of the aggregator's own maths (its solver) per step;
* ``polytask-weighting``: polytask's :class:`polytask.objective.Objective` with every
  registered loss weighting (``sum`` aggregator), as the training loop runs it — FAMO
  includes its extra no-grad forward (``famo[next_batch]``: the variant without it),
  GradNorm its per-task gradient norms;
* ``naive-loop``: one ``backward(retain_graph=True)`` per task, flattened ``[T, P]`` matrix,
  polytask's UPGrad on it, gradient copied back (the LibMTL pattern);
* ``torchjd``: torchjd 0.18 ``autojac.mtl_backward`` on the encoder's last hidden state,
  then ``jac_to_grad(shared, UPGrad())``.
* ``cost-model`` (single-input): the parts of a step timed alone — a forward ``F``, an
  activation-only backward ``A`` (``autograd.grad`` to the embedding output: no weight
  gradients) and the equal step ``F + B`` — and two floors computed from them:
  ``floor_act`` = ``(F + T·A + B) / (F + B)`` (T activation passes and one weighted backward,
  as if the Gramian were free) and ``floor_exact`` = ``(F + T·B) / (F + B)`` (T activation
  passes and T weight-gradient passes: the FLOPs of exact per-task parameter gradients).

Each (mode, T, impl) runs in its own process (its peak RSS is ``peak_mb``); inside it the
equal step and the impl's methods alternate over ``--repeats`` rounds, and the ratio is of
medians measured side by side in that process. Writes ``benchmarks/results/step_cost.json``.

    python benchmarks/step_cost.py [--tasks 2 4 8] [--per-task 16] [--length 64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "step_cost.json"
ENCODER = "bundled:all-minilm-l6-v2"
IMPLS = {
    "multi-input": ("equal", "polytask-segments", "polytask-weighting", "naive-loop", "torchjd"),
    "single-input": (
        "equal",
        "polytask-exact",
        "polytask-representation",
        "naive-loop",
        "torchjd",
        "cost-model",
    ),
}
Step = Callable[[], None]
BASELINE = " baseline"  # the equal step's key; no registered method can be named so


def _setup(mode: str, n_tasks: int, per_task: int, length: int, seed: int = 0) -> Any:
    """The model (train mode: dropout on) and one fixed random batch."""
    import torch

    from polytask.models.encoder import load_encoder
    from polytask.models.hard import HardSharing
    from polytask.segments import Segment
    from polytask.tasks import TaskSpec

    torch.manual_seed(seed)
    encoder, _ = load_encoder(ENCODER)
    specs = [TaskSpec(f"t{i}", "classification", labels=["a", "b", "c"]) for i in range(n_tasks)]
    model = HardSharing(encoder, specs).train()
    rows = per_task * n_tasks if mode == "multi-input" else per_task
    ids = torch.randint(1000, int(encoder.config.vocab_size), (rows, length))
    lengths = torch.randint(length // 2, length + 1, (rows,))
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    starts = [per_task * i if mode == "multi-input" else 0 for i in range(n_tasks)]
    segments = [Segment(f"t{i}", s, s + per_task) for i, s in enumerate(starts)]
    labels = {s.task: torch.randint(0, 3, (per_task,)) for s in segments}
    return model, (ids * mask, mask, segments, labels)


def _losses(model: Any, batch: Any) -> dict[str, Any]:
    import torch.nn.functional as F

    ids, mask, segments, labels = batch
    logits = model(ids, mask, None, segments)
    return {t: F.cross_entropy(logits[t], labels[t]) for t in labels}


def _equal(model: Any, batch: Any) -> dict[str, Step]:
    import torch

    def step() -> None:
        torch.stack(list(_losses(model, batch).values())).sum().backward()

    return {BASELINE: step}


def _polytask(
    model: Any,
    batch: Any,
    n_tasks: int,
    how: str,
    notes: list[str],
    solver_s: dict[str, list[float]],
    only: list[str] | None = None,
) -> dict[str, Step]:
    import torch

    from polytask.autograd.engine import PerTaskGradients
    from polytask.autograd.matrix import MatrixCombine

    try:
        from polytask.aggregation import AGGREGATORS
    except ImportError as error:  # the aggregation package is built by another helper
        notes.append(f"polytask.aggregation not importable ({error}); 'sum' only")
        AGGREGATORS = None
    single = "representation" if how == "representation" else "exact"
    engine = PerTaskGradients(model, single_input=single)
    steps: dict[str, Step] = {}
    names = AGGREGATORS.names() if AGGREGATORS is not None else ["sum"]
    for name in [n for n in names if not only or n in only]:
        if AGGREGATORS is None:
            agg: Any = lambda g, losses=None: torch.ones(g.shape[0], dtype=g.dtype)  # noqa: E731
            matrix = False
        else:
            try:
                built = AGGREGATORS.get(name)(n_tasks=n_tasks)
                # a needs_matrix method gets the [T, P] matrix (its aggregate), not a Gramian
                matrix = built.needs_matrix
                agg = built.aggregate if matrix else built.weights
            except ImportError as error:
                notes.append(f"{name}: {error}")
                continue

        spent = solver_s.setdefault(name, [])
        if AGGREGATORS is not None and getattr(built, "needs_two_batches", False):
            if single == "representation":  # refused there: no per-task parameter gradients
                notes.append(f"{name}: needs two batches, not run on the representation")
                continue
            steps[name] = _two_batch_step(engine, model, batch, agg, spent)
            continue

        def step(agg: Any = agg, spent: list[float] = spent, matrix: bool = matrix) -> None:
            with engine.capture(batch[2]):
                losses = _losses(model, batch)
            values = torch.stack([v.detach() for v in losses.values()])

            def timed(gramian: Any) -> Any:
                start = time.perf_counter()
                weights = agg(gramian, values)
                spent.append(time.perf_counter() - start)
                return weights

            engine.backward(losses, MatrixCombine(timed) if matrix else timed)

        steps[name] = step
    return steps


def _two_batch_step(engine: Any, model: Any, batch: Any, agg: Any, spent: list[float]) -> Step:
    """MoDo / SDMGrad as the loop runs them: the first batch's forward and per-task backward,
    a second batch of the same layout (other random rows: the sampler's second draw), its
    forward and per-task backward, the cross-Gramian and the update
    (:func:`polytask.autograd.two_batch.two_batch_backward`)."""
    import torch

    from polytask.autograd.two_batch import SecondBatch, two_batch_backward

    ids, mask, segments, labels = batch
    gen = torch.Generator().manual_seed(1)
    other = (
        torch.randint(1000, int(ids.max()) + 1, ids.shape, generator=gen) * mask,
        mask,
        segments,
        {t: torch.randint(0, 3, v.shape, generator=gen) for t, v in labels.items()},
    )

    def timed(gramian: Any) -> Any:
        start = time.perf_counter()
        weights = agg(gramian)
        spent.append(time.perf_counter() - start)
        return weights

    def step() -> None:
        with engine.capture(segments):
            first = _losses(model, batch)
        second = SecondBatch(segments, lambda: _losses(model, other))
        scale = torch.ones(len(first))
        two_batch_backward(engine, first, second, scale, timed)

    return step


def _weighting(model: Any, batch: Any, n_tasks: int) -> dict[str, Step]:
    """Every loss weighting through the training loop's Objective (``sum`` aggregator)."""
    import torch
    from accelerate import Accelerator

    from polytask.objective import build_objective
    from polytask.weighting import WEIGHTINGS

    accelerator = Accelerator(cpu=True)
    tasks = list(batch[3])
    steps: dict[str, Step] = {}
    variants: list[tuple[str, str, dict[str, Any]]] = [(n, n, {}) for n in WEIGHTINGS.names()]
    variants.append(("famo[next_batch]", "famo", {"update": "next_batch"}))
    for label, name, kwargs in variants:
        if name == "static":
            kwargs = {"weights": [1.0 + t for t in range(n_tasks)]}
        kinds = ["classification"] * n_tasks
        objective = build_objective(
            tasks, dict.fromkeys(tasks, 1.0), kinds, (name, kwargs), ("sum", {})
        )
        objective.attach(model)

        def step(objective: Any = objective) -> None:
            with objective.capture(batch[2]):
                losses = _losses(model, batch)
            objective.backward(accelerator, losses)
            if objective.weighting.observes_same_batch:
                with torch.no_grad():
                    objective.observe(_losses(model, batch))
            else:
                objective.observe(losses)

        steps[label] = step
    return steps


def _naive(model: Any, batch: Any, n_tasks: int, notes: list[str]) -> dict[str, Step]:
    """T backward(retain_graph=True), a flattened [T, P] matrix, aggregated, copied back."""
    import torch

    try:
        from polytask.aggregation import AGGREGATORS

        aggregate: Any = AGGREGATORS.get("upgrad")(n_tasks=n_tasks)
        name = "upgrad"
    except ImportError as error:
        notes.append(f"naive-loop: polytask UPGrad unavailable ({error}); mean instead")
        aggregate, name = (lambda G: G.mean(0)), "mean"
    shared = [p for _, p in model.shared_parameters()]
    sizes = [p.numel() for p in shared]

    def step() -> None:
        losses = list(_losses(model, batch).values())
        G = torch.zeros(len(losses), sum(sizes))
        for t, loss in enumerate(losses):
            loss.backward(retain_graph=t < len(losses) - 1)
            for p, row in zip(shared, G[t].split(sizes), strict=True):
                if p.grad is not None:
                    row.copy_(p.grad.reshape(-1))
                    p.grad = None
        for p, g in zip(shared, aggregate(G).split(sizes), strict=True):
            p.grad = g.view_as(p).clone()

    return {name: step}


def _torchjd(model: Any, batch: Any, notes: list[str]) -> dict[str, Step]:
    try:
        from torchjd.aggregation import UPGrad
        from torchjd.autojac import jac_to_grad, mtl_backward
    except ImportError as error:
        notes.append(f"torchjd not importable ({error})")
        return {}
    kept: list[Any] = []  # the encoder's last hidden state of the latest forward

    def keep(module: Any, args: Any, out: Any) -> None:
        kept[:] = [out[0]]

    model.encoder.register_forward_hook(keep)
    heads = [[p for _, p in model.task_parameters(t)] for t in batch[3]]
    shared = [p for _, p in model.shared_parameters()]
    aggregator = UPGrad()

    def step() -> None:
        losses = list(_losses(model, batch).values())
        mtl_backward(losses, features=kept[0], tasks_params=heads)
        jac_to_grad([p for p in shared if getattr(p, "jac", None) is not None], aggregator)

    return {"upgrad": step}


def _cost_model(model: Any, batch: Any) -> dict[str, Step]:
    """A forward alone, and a forward plus an activation-only backward (see module doc)."""
    import torch

    kept: list[Any] = []

    def keep(module: Any, args: Any, out: Any) -> None:
        kept[:] = [out]

    model.encoder.embeddings.register_forward_hook(keep)

    def forward() -> None:
        torch.stack(list(_losses(model, batch).values())).sum()

    def activation() -> None:
        total = torch.stack(list(_losses(model, batch).values())).sum()
        torch.autograd.grad(total, kept[0])

    return {"forward": forward, "forward+activation_backward": activation}


def _floors(times: dict[str, list[float]], n_tasks: int) -> dict[str, float]:
    """The two floors of the cost model from the medians of its parts."""
    f = statistics.median(times["forward"])
    a = statistics.median(times["forward+activation_backward"]) - f
    step = statistics.median(times[BASELINE])
    b = step - f
    return {
        "floor_act": round((f + n_tasks * a + b) / step, 3),
        "floor_exact": round((f + n_tasks * b) / step, 3),
    }


def measure(mode: str, n_tasks: int, impl: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the child: time the impl's methods alternating with the equal step."""
    import torch

    torch.set_num_threads(args.threads)
    model, batch = _setup(mode, n_tasks, args.per_task, args.length)
    notes: list[str] = []
    steps = _equal(model, batch)
    solver_s: dict[str, list[float]] = {}
    if impl == "polytask-weighting":
        steps |= _weighting(model, batch, n_tasks)
    elif impl.startswith("polytask"):
        how = impl.split("-")[1]
        steps |= _polytask(model, batch, n_tasks, how, notes, solver_s, args.methods)
    elif impl == "naive-loop":
        steps |= _naive(model, batch, n_tasks, notes)
    elif impl == "torchjd":
        steps |= _torchjd(model, batch, notes)
    elif impl == "cost-model":
        steps |= _cost_model(model, batch)
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats + 1):  # round 0 is the warm-up
        for name in names[r % len(names) :] + names[: r % len(names)]:
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            steps[name]()
            if r > 0:
                times[name].append(time.perf_counter() - start)
        if r == 0:  # forget the warm-up's solver times too
            for spent in solver_s.values():
                spent.clear()
    equal = statistics.median(times[BASELINE])
    ratios = {n: round(statistics.median(times[n]) / equal, 3) for n in names if n != BASELINE}
    if impl == "cost-model":
        ratios |= _floors(times, n_tasks)
    return {
        "mode": mode,
        "T": n_tasks,
        "impl": impl,
        "equal_s": round(equal, 4),
        "ratios": ratios if impl != "equal" else {"equal": 1.0},
        "aggregate_ms": {n: round(1000 * statistics.median(v), 2) for n, v in solver_s.items()},
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "notes": notes,
    }


def _child(mode: str, n_tasks: int, impl: str, args: argparse.Namespace) -> dict[str, Any]:
    job = json.dumps({"mode": mode, "T": n_tasks, "impl": impl})
    cmd = [sys.executable, __file__, "--child", job, "--threads", str(args.threads)]
    cmd += ["--per-task", str(args.per_task), "--length", str(args.length)]
    cmd += ["--repeats", str(args.repeats)]
    cmd += ["--methods", *args.methods] if args.methods else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"mode": mode, "T": n_tasks, "impl": impl, "error": tail[0]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'mode':<13}{'T':>3}  {'method':<28}{'impl':<25}{'ratio_vs_equal':>15}{'peak_mb':>9}"
        f"{'aggregate_ms':>14}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['mode']:<13}{r['T']:>3}  {r['method']:<28}{r['impl']:<25}"
            f"{r['ratio_vs_equal']:>14.2f}x{r['peak_mb']:>9}"
            + (f"{r['aggregate_ms']:>14.2f}" if r.get("aggregate_ms") is not None else "")
        )
    return "\n".join(lines)


def _run_all(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One child process per (mode, T, impl); one row per (mode, T, impl, method)."""
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for mode in args.modes:
        for n_tasks in args.tasks:
            for impl in IMPLS[mode]:
                if args.impls and impl not in args.impls:
                    continue
                res = _child(mode, n_tasks, impl, args)
                if "error" in res:
                    errors.append(res)
                    print(f"  {mode} T={n_tasks} {impl}: FAILED {res['error']}", file=sys.stderr)
                    continue
                for note in res["notes"]:
                    print(f"  note ({mode} T={n_tasks} {impl}): {note}", file=sys.stderr)
                for method, ratio in res["ratios"].items():
                    rows.append(
                        {
                            "mode": mode,
                            "T": n_tasks,
                            "method": method,
                            "impl": impl,
                            "ratio_vs_equal": ratio,
                            "peak_mb": res["peak_mb"],
                            "equal_step_s": res["equal_s"],
                            "aggregate_ms": res.get("aggregate_ms", {}).get(method),
                            "repeats": args.repeats,
                            "run": args.run,  # the invocation: rows of one run share it
                        }
                    )
    return rows, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--modes", nargs="+", choices=list(IMPLS), default=list(IMPLS))
    impls = sorted({i for group in IMPLS.values() for i in group})
    parser.add_argument("--impls", nargs="+", choices=impls, help="only these (default: all)")
    parser.add_argument(
        "--methods", nargs="+", help="only these aggregators in the polytask engine impls"
    )
    parser.add_argument("--per-task", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default 2; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="smoke test: T=2, tiny batch")
    parser.add_argument("--out", type=Path, help=f"default {RESULTS} (--quick: a temp file)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of --out that this run did not measure (other modes, T, impls)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job = json.loads(args.child)
        args.threads = args.threads or 2
        print(json.dumps(measure(job["mode"], job["T"], job["impl"], args)))
        return
    if args.quick:  # tiny steps: fixed per-parameter costs dominate, ratios mean little
        args.tasks, args.per_task, args.length, args.repeats = [2], 2, 16, 1
    if args.threads is None:  # tiny steps on 2 shared cores stall in OpenMP spin-waits
        args.threads = 1 if args.quick else 2
    if args.out is None:  # a smoke test never overwrites the real results
        args.out = Path(tempfile.gettempdir()) / "step_cost.quick.json" if args.quick else RESULTS
    args.run = time.strftime("%Y-%m-%dT%H:%M:%S")
    rows, errors = _run_all(args)
    import torch

    notes: list[str] = []
    repeats = args.repeats
    if args.merge and args.out.is_file():
        old = json.loads(args.out.read_text())
        # with --methods only those methods' rows are replaced (the impl's others are kept)
        key = lambda r: (r["mode"], r["T"], r["impl"], r["method"] if args.methods else None)  # noqa: E731
        ran = {key(r) for r in rows}
        kept = [r for r in old["rows"] if key(r) not in ran]
        for r in kept:
            r.setdefault("repeats", old.get("repeats"))
        rows = kept + rows
        repeats = old.get("repeats", repeats)  # the rounds of most rows; each row has its own
        notes = [*old.get("notes", []), *old.get("merge_notes", [])]

    result = {
        "benchmark": "step_cost",
        "encoder": "all-MiniLM-L6-v2",
        "torch": torch.__version__,
        "threads": args.threads,
        "per_task": args.per_task,
        "length": args.length,
        "repeats": repeats,
        "quick": args.quick,
        "impls": args.impls,
        "rows": rows,
        "errors": errors,
    }
    if args.merge:
        result["merge_notes"] = [
            *notes,
            f"{time.strftime('%Y-%m-%d')}: re-measured modes {args.modes}, T={args.tasks}, "
            f"impls {args.impls or 'all'}"
            + (f", methods {args.methods}" if args.methods else "")
            + f" with {args.repeats} rounds (the rows' 'repeats')",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(_table(rows))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
