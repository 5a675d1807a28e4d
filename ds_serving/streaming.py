"""Read-ahead of a request stream, so a long-lived producer's messages are scored in batches.

Why: a ``ScoreStream`` handler that scores one message at a time pays one graph run (one GIL
hand-over, see ``ds_serving.coalescing``) and one pass of Python per message. A pump task reads
the stream ahead; the servicer takes every message that has arrived while it was busy and scores
them together (``ds_serving.servicer.ScorerService.ScoreStream``), answering each message on its
own and in order. What the pump holds is bounded by a weight budget (bytes), always at least one
message, so gRPC's flow control, not this buffer, decides how far a client can send ahead.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ReadAhead(Generic[T]):
    """Messages of ``source`` in batches of what has arrived. ``weight`` (e.g. bytes) of what
    is held never exceeds ``budget`` except for a single message. Use from one event loop; call
    ``close`` when done (it stops the pump)."""

    def __init__(
        self, source: AsyncIterator[T], weight: Callable[[T], int], budget: int
    ) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        self._weight = weight
        self._budget = budget
        self._items: deque[tuple[Any, int]] = deque()  # (message or marker, its weight)
        self._held = 0  # total weight of the messages in _items
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._task = asyncio.ensure_future(self._pump(source))

    async def _pump(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                w = self._weight(item)
                while self._items and self._held + w > self._budget:
                    self._room.clear()
                    await self._room.wait()
                self._items.append((item, w))
                self._held += w
                self._arrived.set()
        except Exception as exc:  # a broken stream: raised after the messages before it
            self._items.append((_Failed(exc), 0))
        else:
            self._items.append((_END, 0))
        self._arrived.set()

    async def batch(self, max_items: int, max_weight: int) -> list[T]:
        """The next message (waiting for it) plus every one already here, up to ``max_items``
        messages and ``max_weight`` in total weight; [] at the end of the stream. A broken
        stream raises here once the messages read before the break are handed out."""
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        head = self._items[0][0]
        if head is _END:
            return []
        if isinstance(head, _Failed):
            raise head.exc
        out: list[T] = []
        total = 0
        while self._items and len(out) < max_items:
            item, w = self._items[0]
            if item is _END or isinstance(item, _Failed):
                break
            if out and total + w > max_weight:
                break
            out.append(item)
            self._items.popleft()
            total += w
            self._held -= w
        self._room.set()
        return out

    def close(self) -> None:
        self._task.cancel()
