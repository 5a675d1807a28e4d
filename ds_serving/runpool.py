"""Worker threads for large graph runs, answered on the event loop with one callback.

``loop.run_in_executor(ThreadPoolExecutor)`` costs, per run, a ``concurrent.futures.Future``
(a Condition, a lock, done callbacks), a ``_WorkItem``, the pool's idle-semaphore check, and
``wrap_future`` chaining both futures with their own callbacks, Python that runs on the loop and
on the worker, which must take the GIL for it. Here the loop's future is settled from the
worker with one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import queue
import threading
import time
import weakref
from typing import Any

import numpy as np


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # cancelled meanwhile: the client went away
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class RunPool:
    """``workers`` threads running ``scorer.run(inputs, explain=explain)``, started with the
    first run.

    Daemon threads, so a process that never stops the pool still exits; the server's stop
    joins them after its grace period, and so does an exit hook for pools never stopped, so a
    normal exit cuts no run short (``ThreadPoolExecutor`` joined its threads at exit too). A
    worker keeps no reference to its last run (scorer, rows, future): a model replaced by a
    reload is freed, not pinned by an idle thread."""

    def __init__(self, workers: int, name: str = "ds-scorer-run") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._workers, self._name = workers, name
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()

    def run(self, scorer: Any, inputs: np.ndarray, explain: bool
            ) -> asyncio.Future[tuple[np.ndarray, np.ndarray | None]]:
        if self._closed:  # no worker would take it: refuse, as a shut-down executor does
            raise RuntimeError("the run pool is shut down")
        if not self._threads:
            self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[np.ndarray, np.ndarray | None]] = loop.create_future()
        self._queue.put((loop, future, scorer, inputs, explain))
        return future

    def _start(self) -> None:
        with self._start_lock:
            if self._threads or self._closed:
                return
            threads = [threading.Thread(target=self._work, name=f"{self._name}_{i}",
                                        daemon=True) for i in range(self._workers)]
            for thread in threads:
                thread.start()
            self._threads = threads
            _LIVE.add(self)

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            _run_one(item)
            del item  # nothing of the last run outlives it here

    def shutdown(self, wait: bool = False, timeout: float | None = None) -> list[str]:
        """Let the workers end once the runs queued before this are done (or skipped); with
        ``wait``, join them within ``timeout`` seconds (None: no limit). The names of workers
        still running, if any."""
        self._closed = True
        with self._start_lock:
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        if not wait:
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t.is_alive()]


def _run_one(item: tuple[Any, ...]) -> None:
    """One queued run, answered on its loop; its locals (the scorer, the rows) end with it."""
    loop, future, scorer, inputs, explain = item
    if future.cancelled():  # as run_in_executor: a run not started yet is skipped
        return
    try:
        value, ok = scorer.run(inputs, explain=explain), True
    except BaseException as exc:  # handed to the awaiting request
        value, ok = exc, False
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        loop.call_soon_threadsafe(_settle, future, ok, value)


_LIVE: weakref.WeakSet[RunPool] = weakref.WeakSet()


@atexit.register
def _join_at_exit() -> None:
    """Pools nobody stopped: their runs in flight end before the interpreter does (a daemon
    thread inside onnxruntime at finalization can abort the process)."""
    for pool in list(_LIVE):
        pool.shutdown(wait=True)
