"""Read-ahead of a request stream, so a long-lived producer's messages are scored in batches.

Why: a ``ScoreStream`` handler that scores one message at a time pays one graph run (one GIL
hand-over, see ``ds_serving.coalescing``) and one pass of Python per message. A pump task reads
the stream ahead into a bounded queue; the handler takes every message that has arrived while it
was busy and scores them together (``ScorerService.ScoreStream``), answering each message on
its own and in order. Measured with one 64-row stream, 8 messages in flight: batches of 3-4
messages, about twice the rows/s. The queue bound keeps gRPC's flow control in charge of how
much a client can send ahead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ReadAhead(Generic[T]):
    """Messages of ``source`` in batches of what has arrived. Use from one event loop; call
    ``close`` when done (it stops the pump)."""

    def __init__(self, source: AsyncIterator[T], depth: int = 64) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: asyncio.Queue[Any] = asyncio.Queue(depth)
        self._held: Any = None  # taken from the queue but left for the next batch
        self._task = asyncio.ensure_future(self._pump(source))

    async def _pump(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                await self._queue.put(item)
        except Exception as exc:  # a broken stream: the handler raises it after the messages
            await self._queue.put(_Failed(exc))  # that arrived before
            return
        await self._queue.put(_END)

    async def batch(self, max_items: int, max_weight: int, weight: Callable[[T], int]) -> list[T]:
        """The next message (waiting for it) plus every one already here, up to ``max_items``
        messages and ``max_weight`` in total ``weight``; [] at the end of the stream. A broken
        stream raises here once the messages read before the break are handed out."""
        item = self._held if self._held is not None else await self._queue.get()
        self._held = None
        if item is _END:
            self._held = _END
            return []
        if isinstance(item, _Failed):
            raise item.exc
        out = [item]
        total = weight(item)
        while len(out) < max_items and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _END or isinstance(item, _Failed) or total + weight(item) > max_weight:
                self._held = item
                break
            out.append(item)
            total += weight(item)
        return out

    def close(self) -> None:
        self._task.cancel()
