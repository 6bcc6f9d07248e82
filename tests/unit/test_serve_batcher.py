"""The dynamic batcher on a fake model: grouping, limits, order, failures, batching off."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from polytask.predict.predictor import Job
from polytask.serve.batcher import Batcher


class FakeModel:
    """Echoes its inputs; records the jobs of every call; can be slow or fail on a word."""

    def __init__(self, delay: float = 0.0, poison: str | None = None) -> None:
        self.calls: list[list[Job]] = []
        self.delay, self.poison = delay, poison
        self.threads: set[str] = set()

    def run(self, jobs: list[Job]) -> list[list[dict[str, Any]]]:
        self.threads.add(threading.current_thread().name)
        self.calls.append(list(jobs))
        time.sleep(self.delay)
        if self.poison and any(self.poison in job.inputs for job in jobs):
            raise RuntimeError("poisoned")
        return [[{"echo": x, "task": job.task} for x in job.inputs] for job in jobs]


async def submit_all(batcher: Batcher, jobs: list[Job]) -> list[Any]:
    return await asyncio.gather(*(batcher.submit(j) for j in jobs), return_exceptions=True)


def test_concurrent_jobs_share_calls_within_max_batch() -> None:
    model = FakeModel(delay=0.02)
    batcher = Batcher(model.run, max_batch=8, max_wait_ms=50)
    jobs = [Job(f"t{i % 3}", [f"x{i}", f"y{i}"]) for i in range(20)]  # 40 inputs
    results = asyncio.run(submit_all(batcher, jobs))
    batcher.close()
    for job, result in zip(jobs, results, strict=True):
        assert result == [{"echo": x, "task": job.task} for x in job.inputs]
    sizes = [sum(len(j.inputs) for j in call) for call in model.calls]
    assert max(sizes) <= 8 and sum(sizes) == 40
    assert len(model.calls) == 5  # 4 jobs of 2 inputs per call
    assert [j for call in model.calls for j in call] == jobs  # arrival order kept
    assert model.threads == {"polytask-inference"}
    assert batcher.stats.as_dict() == {
        "requests": 20,
        "inputs": 40,
        "batches": 5,
        "largest_batch": 8,
        "mean_batch_inputs": 8.0,
    }


def test_batching_off_runs_each_request_alone() -> None:
    model = FakeModel()
    batcher = Batcher(model.run, max_batch=1, max_wait_ms=50)
    jobs = [Job("t", ["a", "b", "c"]), Job("t", ["d"]), Job("u", ["e"])]
    asyncio.run(submit_all(batcher, jobs))
    batcher.close()
    assert not batcher.batching
    assert model.calls == [[j] for j in jobs]  # a 3-input job larger than max_batch runs alone


def test_wait_is_bounded_when_alone() -> None:
    model = FakeModel()
    batcher = Batcher(model.run, max_batch=32, max_wait_ms=30)

    async def one() -> float:
        start = time.perf_counter()
        await batcher.submit(Job("t", ["a"]))
        return time.perf_counter() - start

    elapsed = asyncio.run(one())
    batcher.close()
    assert 0.025 <= elapsed < 1.0


def test_a_failing_job_fails_alone() -> None:
    model = FakeModel(delay=0.01, poison="bad")
    batcher = Batcher(model.run, max_batch=16, max_wait_ms=50)
    jobs = [Job("t", ["ok1"]), Job("t", ["bad"]), Job("t", ["ok2"])]
    results = asyncio.run(submit_all(batcher, jobs))
    batcher.close()
    assert results[0] == [{"echo": "ok1", "task": "t"}]
    assert isinstance(results[1], RuntimeError)
    assert results[2] == [{"echo": "ok2", "task": "t"}]
    assert len(model.calls[0]) == 3  # tried together first, then one by one


def test_close_finishes_queued_jobs() -> None:
    model = FakeModel(delay=0.05)
    batcher = Batcher(model.run, max_batch=2, max_wait_ms=0)

    async def main() -> list[Any]:
        tasks = [asyncio.ensure_future(batcher.submit(Job("t", [str(i)]))) for i in range(5)]
        await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, batcher.close)
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert [r[0]["echo"] for r in results] == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(("max_batch", "max_wait_ms"), [(0, 5), (4, -1)])
def test_bad_settings(max_batch: int, max_wait_ms: float) -> None:
    with pytest.raises(ValueError, match="must be >= "):
        Batcher(FakeModel().run, max_batch, max_wait_ms)
