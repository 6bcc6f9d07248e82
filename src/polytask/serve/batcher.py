"""Dynamic batching: concurrent requests share one model call, run in one worker thread.

Request handlers :meth:`Batcher.submit` a job and await its future; the event loop never
runs torch. The worker thread takes the oldest queued job, then keeps taking queued jobs
until the batch holds ``max_batch`` inputs or ``max_wait_ms`` have passed since that oldest
job arrived (a job that already waited that long while the previous batch ran goes out at
once with whatever else is queued), calls ``run`` once on them all, and hands each job its
results back on its own event loop. ``max_batch=1`` turns batching off: every request is
its own model call, in arrival order.

A job never waits behind an unbounded batch: one whose inputs would overflow the batch
starts the next one (a single job larger than ``max_batch`` runs alone). If a batch fails,
each of its jobs is run again alone, so one bad job cannot fail the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from polytask.predict.predictor import Job

log = logging.getLogger("polytask.serve")
Results = list[list[dict[str, Any]]]


@dataclass
class _Pending:
    job: Job
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[dict[str, Any]]]
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """Counters since start: what ``/health`` reports and the tests read."""

    requests: int = 0
    inputs: int = 0
    batches: int = 0
    largest_batch: int = 0

    def as_dict(self) -> dict[str, Any]:
        mean = self.inputs / self.batches if self.batches else 0.0
        return {**self.__dict__, "mean_batch_inputs": round(mean, 2)}


class Batcher:
    """Groups submitted jobs into batches for ``run`` (``Predictor.run``), one at a time.

    >>> batcher = Batcher(predictor.run, max_batch=32, max_wait_ms=5)   # doctest: +SKIP
    >>> await batcher.submit(Job("sentiment", ["great day"]))           # doctest: +SKIP
    """

    def __init__(self, run: Callable[[list[Job]], Results], max_batch: int, max_wait_ms: float):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._carry: _Pending | None = None  # a job that did not fit the previous batch
        self._thread = threading.Thread(target=self._work, name="polytask-inference", daemon=True)
        self._thread.start()

    @property
    def batching(self) -> bool:
        return self.max_batch > 1

    async def submit(self, job: Job) -> list[dict[str, Any]]:
        """Queue ``job`` and wait for its predictions (one per input)."""
        loop = asyncio.get_running_loop()
        pending = _Pending(job, loop, loop.create_future())
        self._queue.put(pending)
        return await pending.future

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued jobs, then stop the worker thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            first = self._carry or self._queue.get()
            self._carry = None
            if first is None:
                return
            batch = self._gather(first)
            if batch is None:
                return
            self._run(batch)

    def _gather(self, first: _Pending) -> list[_Pending] | None:
        """``first`` plus the jobs that join it (``None``: stop after running nothing)."""
        batch, size = [first], len(first.job.inputs)
        deadline = first.arrived + self.max_wait
        while size < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                break
            if item is None:  # closing: run what we have, then stop
                self._run(batch)
                return None
            if size + len(item.job.inputs) > self.max_batch:
                self._carry = item
                break
            batch.append(item)
            size += len(item.job.inputs)
        return batch

    def _run(self, batch: list[_Pending]) -> None:
        jobs = [p.job for p in batch]
        self.stats.requests += len(jobs)
        self.stats.inputs += sum(len(j.inputs) for j in jobs)
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, sum(len(j.inputs) for j in jobs))
        try:
            results = self.run(jobs)
        except Exception as exc:
            if len(batch) == 1:
                _resolve(batch[0], error=exc)
                return
            log.warning("a batch of %d jobs failed (%s); running them one by one", len(batch), exc)
            for pending in batch:
                try:
                    _resolve(pending, self.run([pending.job])[0])
                except Exception as one:
                    _resolve(pending, error=one)
            return
        for pending, result in zip(batch, results, strict=True):
            _resolve(pending, result)


def _resolve(
    pending: _Pending,
    result: list[dict[str, Any]] | None = None,
    error: BaseException | None = None,
) -> None:
    """Complete ``pending``'s future on its own event loop (from the worker thread)."""

    def complete() -> None:
        if pending.future.done():  # the client went away and the handler was cancelled
            return
        if error is not None:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(result or [])

    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
        pending.loop.call_soon_threadsafe(complete)
