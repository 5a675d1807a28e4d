"""The worker threads of large graph runs: results, errors, runs cancelled before they start,
and a shutdown that lets the run in flight finish."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from typing import Any

import numpy as np
import pytest

from ds_serving.runpool import RunPool


class Scorer:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate, self.started, self.calls = gate, threading.Event(), []

    def run(self, inputs: np.ndarray, explain: bool) -> tuple[np.ndarray, Any]:
        self.calls.append(len(inputs))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if not len(inputs):
            raise ValueError("no rows")
        return inputs.sum(axis=1), (inputs if explain else None)


def test_results_and_errors_reach_the_awaiting_request() -> None:
    pool = RunPool(2)

    async def main() -> None:
        rows = np.arange(6, dtype=np.float32).reshape(3, 2)
        scores, errors = await pool.run(Scorer(), rows, True)
        np.testing.assert_array_equal(scores, [1, 5, 9])
        assert errors is rows
        with pytest.raises(ValueError, match="no rows"):
            await pool.run(Scorer(), np.empty((0, 2), np.float32), False)

    asyncio.run(main())
    pool.shutdown(wait=True)
    assert all(t.daemon and not t.is_alive() for t in pool._threads)

    async def after() -> None:  # no worker is left to answer: refused, not left waiting
        await pool.run(Scorer(), np.ones((1, 2), np.float32), False)

    with pytest.raises(RuntimeError, match="shut down"):
        asyncio.run(after())


def test_a_run_cancelled_before_it_starts_is_skipped_and_shutdown_waits_for_the_busy_one() -> None:
    """As with run_in_executor: a request the client gave up on while its run was still queued
    costs no graph run; a run already going ends before ``shutdown(wait=True)`` returns."""
    pool = RunPool(1)
    gate = threading.Event()
    busy, queued = Scorer(gate), Scorer()

    async def main() -> None:
        first = pool.run(busy, np.ones((4, 2), np.float32), False)
        assert await asyncio.to_thread(busy.started.wait, 10)
        second = pool.run(queued, np.ones((2, 2), np.float32), False)
        second.cancel()  # the one worker is busy: this run has not started
        gate.set()
        scores, _ = await first
        np.testing.assert_array_equal(scores, [2, 2, 2, 2])

    asyncio.run(main())
    pool.shutdown(wait=True)
    assert busy.calls == [4] and queued.calls == []


def test_shutdown_with_wait_returns_only_after_the_run_in_flight() -> None:
    pool = RunPool(1)
    gate = threading.Event()
    busy = Scorer(gate)

    async def main() -> None:
        pending = pool.run(busy, np.ones((3, 2), np.float32), False)
        assert await asyncio.to_thread(busy.started.wait, 10)
        stopping = threading.Thread(target=pool.shutdown, args=(True,))
        stopping.start()
        stopping.join(0.2)
        assert stopping.is_alive()  # the run holds it
        gate.set()
        await pending
        await asyncio.to_thread(stopping.join, 10)
        assert not stopping.is_alive()

    asyncio.run(main())


def test_an_idle_worker_pins_no_scorer_and_threads_start_with_the_first_run() -> None:
    """A reload replaces the scorer: the last one a worker ran (or skipped, its request
    cancelled) must be freed, not kept alive by an idle thread with its onnxruntime session."""
    pool = RunPool(1)
    assert pool._threads == []  # a server built but never serving starts no thread
    gate = threading.Event()
    scorers = [Scorer(gate), Scorer(), Scorer()]  # busy, then one skipped, one run

    async def main(busy: Scorer, skipped: Scorer, ran: Scorer) -> None:
        first = pool.run(busy, np.ones((2, 2), np.float32), False)
        assert await asyncio.to_thread(busy.started.wait, 10)
        second = pool.run(skipped, np.ones((2, 2), np.float32), False)
        second.cancel()
        gate.set()
        await first
        await pool.run(ran, np.ones((2, 2), np.float32), False)

    asyncio.run(main(*scorers))
    refs = [weakref.ref(s) for s in scorers]
    scorers.clear()
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert pool.shutdown(wait=True, timeout=10) == []


def test_shutdown_waits_no_longer_than_its_timeout_and_names_the_busy_worker() -> None:
    pool = RunPool(1, "run")
    gate = threading.Event()
    busy = Scorer(gate)

    async def main() -> None:
        pending = pool.run(busy, np.ones((1, 2), np.float32), False)
        assert await asyncio.to_thread(busy.started.wait, 10)
        assert await asyncio.to_thread(pool.shutdown, True, 0.05) == ["run_0"]
        gate.set()
        await pending

    asyncio.run(main())
    assert pool.shutdown(wait=True, timeout=10) == []
