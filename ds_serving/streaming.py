"""Read-ahead of a request stream, so a long-lived producer's messages are scored in batches.

Why: a ``ScoreStream`` handler that scores one message at a time pays one graph run (one GIL
hand-over, see ``ds_serving.coalescing``) and one pass of Python per message. A pump task reads
the stream ahead; the servicer takes every message that has arrived while it was busy and scores
them together (``ds_serving.servicer.ScorerService.ScoreStream``), answering each message on its
own and in order. What the pump holds is bounded by a budget of bytes, always at least one
message, so gRPC's flow control, not this buffer, decides how far a client can send ahead. The
budget counts each message whole (``held_bytes``: ids, request_id and model too, not only its
features), so a client that sends megabyte request_ids or ids and reads no answers cannot make
the pump hold more than the budget.
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


def held_bytes(message: Any) -> int:
    """About the bytes a received request message holds (its wire size), 0 for anything that
    is not a protobuf message. A ``ScoreRequest`` is summed field by field: its ``ByteSize()``
    would serialize the whole message again (upb) to measure it, about 60 ms for 17 MB. Ids
    count by characters, which are their UTF-8 bytes unless they are not ASCII."""
    if not hasattr(message, "ListFields"):
        return 0
    ids = getattr(message, "entity_ids", None)
    if ids is None:
        return int(message.ByteSize())
    return (
        len(message.features)
        + len(message.model)
        + len(message.request_id)
        + 9 * len(message.timestamps)
        + sum(map(len, ids)) + 2 * len(ids) + 32  # + tags and lengths
    )


class ReadAhead(Generic[T]):
    """Messages of ``source`` in batches of what has arrived. The ``size`` of what is held
    (default: the larger of ``weight`` and ``held_bytes``, the whole message) never exceeds
    ``budget`` except for a single message; ``weight`` (e.g. feature bytes) is what ``batch``
    limits. Use from one event loop; call ``close`` when done (it stops the pump)."""

    def __init__(
        self,
        source: AsyncIterator[T],
        weight: Callable[[T], int],
        budget: int,
        size: Callable[[T], int] | None = None,
    ) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        self._weight = weight
        self._size = size or (lambda item: max(weight(item), held_bytes(item)))
        self._budget = budget
        # (message or marker, its weight, its size)
        self._items: deque[tuple[Any, int, int]] = deque()
        self._held = 0  # total size of the messages in _items
        self.max_held = 0  # the most ever held at once
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._task = asyncio.ensure_future(self._pump(source))

    async def _pump(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                w, size = self._weight(item), self._size(item)
                while self._items and self._held + size > self._budget:
                    self._room.clear()
                    await self._room.wait()
                self._items.append((item, w, size))
                self._held += size
                self.max_held = max(self.max_held, self._held)
                self._arrived.set()
        except Exception as exc:  # a broken stream: raised after the messages before it
            self._items.append((_Failed(exc), 0, 0))
        else:
            self._items.append((_END, 0, 0))
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
            item, w, size = self._items[0]
            if item is _END or isinstance(item, _Failed):
                break
            if out and total + w > max_weight:
                break
            out.append(item)
            self._items.popleft()
            total += w
            self._held -= size
        self._room.set()
        return out

    def close(self) -> None:
        self._task.cancel()
