"""The order in which stateful requests touch per-entity state, and a temporal model's queue.

Requests of one entity must change its state in the order they arrived, while their graph runs
overlap (a shared, coalesced run) or wait on each other (a temporal model's windows need the
request before). ``CommitOrder`` hands out turns in arrival order; a ``Turn`` waits for the
turns before it, then holds the state lock. A temporal model's requests wait for their turn in a
``TurnQueue``: the one whose turn comes scores those queued right behind it in the same graph
run (``TurnQueue.gather``). Everything here runs on one event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ds_serving.coalescing import GroupPolicy
from ds_serving.decoding import Decoded, LiveResult, can_concat


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Turn:
    """One stateful request's place in arrival order (see ``CommitOrder``); as an async
    context manager it waits for the turn, then holds the state lock."""

    __slots__ = ("_before", "_lock", "_mine", "_pending", "seq")

    def __init__(
        self, before: asyncio.Future[None] | None, mine: asyncio.Future[None],
        lock: asyncio.Lock, seq: int = 0, pending: set[int] | None = None,
    ) -> None:
        self._before = before
        self._mine = mine
        self._lock = lock
        self.seq = seq  # place in arrival order: consecutive turns have consecutive numbers
        self._pending = pending  # the order's turns not yet released (``CommitOrder.pending``)

    async def __aenter__(self) -> None:
        try:
            if self._before is not None and not self._before.done():
                await asyncio.shield(self._before)  # our cancellation must not cancel theirs
            await self._lock.acquire()
        except BaseException:
            self.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self.release()

    def ready(self) -> bool:
        """Whether the turns before this one are through (the state lock may still be held,
        by an adoption)."""
        return self._before is None or self._before.done()

    def waits_for(self) -> asyncio.Future[None]:
        """What ``ready`` waits for (shielded: a waiter's cancellation must not cancel it)."""
        assert self._before is not None
        return asyncio.shield(self._before)

    def release(self) -> None:
        """Let the next request go: now, or when the ones before this one are through (a
        request cancelled while waiting must not let later ones overtake earlier ones)."""
        if self._pending is not None:
            self._pending.discard(self.seq)
        mine, before = self._mine, self._before
        if mine.done():
            return
        if before is None or before.done():
            _settle(mine)
        else:
            before.add_done_callback(lambda _: _settle(mine))


@dataclass(eq=False)
class Queued:
    """A temporal model's stateful request waiting for its turn. The request whose turn comes
    first scores the ones queued right behind it along with its own (one graph run for the
    group) and leaves each its result."""

    request: Decoded
    explain: bool
    task: asyncio.Task[Any] | None = None  # the request's task, to see a pending cancellation
    result: LiveResult | None = None
    gone: bool = False  # cancelled or failed: nobody may commit its rows
    # a group it was in could not be scored as one: it has waited its share already, so when
    # its turn comes it takes whoever is queued behind it without waiting for more
    hurry: bool = False
    failed: BaseException | None = None  # the commit of a group it was scored in raised

    @property
    def leaving(self) -> bool:
        """Cancelled, or about to be: a cancellation requested while the group's graph ran
        reaches the task only when it next runs, after the commit."""
        return self.gone or (self.task is not None and self.task.cancelling() > 0)


class CommitOrder:
    """Hands out turns in arrival order, so stateful requests whose graph runs overlap (shared,
    coalescing runs) still update each entity's smoothing and alert state in the order the
    requests arrived. Must be used from one event loop."""

    def __init__(self) -> None:
        self._last: asyncio.Future[None] | None = None
        self._taken = 0
        # turns taken and not yet released (committed, passed on or given up), of every
        # runtime sharing this order: a request may pass only those of its door's group
        self.pending: set[int] = set()

    def take(self, lock: asyncio.Lock) -> Turn:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        before, self._last = self._last, mine
        self._taken += 1
        self.pending.add(self._taken)
        return Turn(before, mine, lock, self._taken, self.pending)

    def only_before(self, seq: int, seqs: frozenset[int]) -> bool:
        """Whether every turn before ``seq`` still pending is one of ``seqs``."""
        return all(q in seqs for q in self.pending if q < seq)


class TurnQueue:
    """A temporal model's stateful requests waiting for their turn, by turn number
    (``Turn.seq``)."""

    def __init__(self) -> None:
        self._queued: dict[int, Queued] = {}
        self._arrival: asyncio.Future[None] | None = None  # set while a turn waits for company

    def add(self, seq: int, queued: Queued) -> None:
        self._queued[seq] = queued
        if self._arrival is not None:
            _settle(self._arrival)

    def remove(self, seq: int) -> None:
        self._queued.pop(seq, None)

    async def gather(
        self, seq: int, mine: Queued, policy: GroupPolicy, max_rows: int
    ) -> list[Queued]:
        """The group this request scores: itself and the requests queued right behind it,
        after waiting (``policy``: only while groups form) until the group is as big as
        recent ones, the next request cannot join, or the window ends."""
        if mine.hurry or not policy.should_wait():
            return self._after(seq, mine, max_rows)
        probe = policy.probing
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.window
        while True:
            group = self._after(seq, mine, max_rows)
            if policy.target > 1 and len(group) >= policy.target:
                break
            if seq + len(group) in self._queued:
                break  # the next request cannot join: waiting gains nothing
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            arrival = self._arrival = loop.create_future()
            timer = loop.call_later(remaining, _settle, arrival)
            try:
                await arrival
            finally:
                timer.cancel()
                self._arrival = None
        policy.record(len(group), probe)
        return group

    def _after(self, seq: int, mine: Queued, max_rows: int) -> list[Queued]:
        """This request and the ones with the next turns, while they can join it. (A queued
        request that left is no longer queued, and none after this one has a result yet: a
        group's members all come before the next request that gathers.)"""
        group, rows = [mine], len(mine.request.rows)
        while True:
            nxt = self._queued.get(seq + len(group))
            if nxt is None or nxt.explain != mine.explain:
                return group
            if not can_concat(mine.request, nxt.request):
                return group
            if rows + len(nxt.request.rows) > max_rows:
                return group
            group.append(nxt)
            rows += len(nxt.request.rows)

