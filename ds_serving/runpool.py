"""Worker threads for large graph runs, answered on the event loop with one callback.

``loop.run_in_executor(ThreadPoolExecutor)`` costs, per run, a ``concurrent.futures.Future``
(a Condition, a lock, done callbacks), a ``_WorkItem``, the pool's idle-semaphore check, and
``wrap_future`` chaining both futures with their own callbacks, Python that runs on the loop and
on the worker, which must take the GIL for it. Here the loop's future is settled from the
worker with one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
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
    """``workers`` threads running ``scorer.run(inputs, explain=explain)``.

    Daemon threads, so a process that never stops the pool still exits; the server's stop
    joins them (``shutdown(wait=True)``, after its grace period), so a normal exit cuts no run
    short, as ``ThreadPoolExecutor``'s exit hook did."""

    def __init__(self, workers: int, name: str = "ds-scorer-run") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def run(self, scorer: Any, inputs: np.ndarray, explain: bool
            ) -> asyncio.Future[tuple[np.ndarray, np.ndarray | None]]:
        if self._closed:  # no worker would take it: refuse, as a shut-down executor does
            raise RuntimeError("the run pool is shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[np.ndarray, np.ndarray | None]] = loop.create_future()
        self._queue.put((loop, future, scorer, inputs, explain))
        return future

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            loop, future, scorer, inputs, explain = item
            if future.cancelled():  # as run_in_executor: a run not started yet is skipped
                continue
            try:
                value, ok = scorer.run(inputs, explain=explain), True
            except BaseException as exc:
                value, ok = exc, False
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_settle, future, ok, value)
            del item, future, value, inputs

    def shutdown(self, wait: bool = False) -> None:
        """Let the workers end once the runs queued before this are done (or skipped)."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
