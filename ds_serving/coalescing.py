"""Coalesce concurrent small graph runs into one onnxruntime call.

Every ``run`` releases the GIL, and in a busy grpc.aio server getting it back costs the event
loop more than a small graph run itself; sharing one run between the requests of a short window
removes most of that cost (figures: docs/benchmarks.md, "Why the scorer coalesces"). A group
waits up to ``window`` seconds for company only while waiting pays: when the average group size
falls below ``min_group`` runs execute at once, with one probe group every ``probe_every`` runs
to notice when traffic picks up again. Rows are scored independently, so grouping changes a
score at most in float32 rounding.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ds_serving.scoring import Scorer

Result = tuple[np.ndarray, np.ndarray | None]  # scores [n], feature errors [n, f] or None


@dataclass
class _Group:
    scorer: Scorer
    explain: bool
    loop: asyncio.AbstractEventLoop
    timer: asyncio.TimerHandle | None = None
    inputs: list[np.ndarray] = field(default_factory=list)
    futures: list[asyncio.Future[Result]] = field(default_factory=list)
    values: int = 0
    probe: bool = False  # formed by a probe while runs execute at once


class GroupPolicy:
    """Whether a request should wait for company, and how big a group to expect: the adaptive
    part of coalescing, shared by ``RunCoalescer`` (graph runs) and a temporal model's request
    groups (``ModelRuntime``). Waiting pays while the recent groups average ``min_group`` or
    more; otherwise requests go at once, with one probe (a group that waits) per
    ``probe_every``. A group that has as many members as the biggest of the last 16 need not
    wait any longer (closed-loop clients: all of them are in)."""

    def __init__(
        self, *, window: float = 0.004, min_group: float = 1.5, probe_every: int = 1024
    ) -> None:
        if window < 0 or probe_every < 1:
            raise ValueError(f"window must be >= 0 s and probe_every >= 1; got {window}, "
                             f"{probe_every}")
        self.window = window
        self.min_group = min_group
        self.probe_every = probe_every
        self.mean_group = 2 * min_group  # optimistic start: the first groups wait
        self._recent: deque[int] = deque(maxlen=16)  # sizes of the last waited-for groups
        self._target = 0  # a waited-for group this big runs at once (0: wait the whole window)
        self._since_probe = 0

    @property
    def probing(self) -> bool:
        """Whether a group formed now is a probe (requests otherwise go at once)."""
        return self.mean_group < self.min_group

    @property
    def target(self) -> int:
        return self._target

    def should_wait(self, may_wait: bool = True) -> bool:
        if not may_wait or self.window <= 0:
            return False
        if self.mean_group >= self.min_group:
            return True
        self._since_probe += 1
        if self._since_probe >= self.probe_every:
            self._since_probe = 0
            return True
        return False

    def record(self, size: int, probe: bool) -> None:
        """A waited-for group of ``size`` went; a probe that found company turns waiting back
        on at once."""
        self.mean_group += 0.2 * (size - self.mean_group)
        if probe and size > 1:
            self.mean_group = max(self.mean_group, 2 * self.min_group)  # as at the start
        self._recent.append(size)
        self._target = max(self._recent)


class RunCoalescer(GroupPolicy):
    """Queues small runs; each group (same scorer, same ``explain``) executes once.

    A group runs when its window ends, when it holds ``max_values`` values (rows x row size),
    or as soon as it is as big as the biggest of the last 16 groups (``GroupPolicy``).
    ``window`` = 0 never waits. Use from one event loop.
    """

    def __init__(
        self,
        *,
        window: float = 0.004,
        max_values: int = 65_536,
        min_group: float = 1.5,
        probe_every: int = 1024,
    ) -> None:
        if max_values < 1:
            raise ValueError(f"max_values must be >= 1, got {max_values}")
        super().__init__(window=window, min_group=min_group, probe_every=probe_every)
        self.max_values = max_values
        self._groups: dict[tuple[int, bool], _Group] = {}
        self.runs = 0  # graph executions, for tests and diagnostics
        self.requests = 0

    async def run(
        self, scorer: Scorer, inputs: np.ndarray, explain: bool, *, may_wait: bool = True
    ) -> Result:
        """``scorer.run(inputs, explain=explain)``, executed together with the other runs queued
        on the same scorer. A run that does not wait (light traffic, or ``may_wait=False`` for a
        request holding a lock others wait on) executes at once, without yielding to the event
        loop: a yield that finds nothing ready parks the loop in epoll, which hands the GIL over
        just like a graph run does. One that finds a group waiting joins it and runs it now."""
        key = (id(scorer), explain)
        loop = asyncio.get_running_loop()
        group = self._groups.get(key)
        if group is not None and group.loop is not loop:  # left by a loop that has ended
            group = None
        if group is None:
            if not self.should_wait(may_wait):
                self.requests += 1
                self.runs += 1
                return scorer.run(inputs, explain=explain)
            group = self._groups[key] = _Group(scorer, explain, loop, probe=self.probing)
            group.timer = loop.call_later(self.window, self._flush, key, group)
        future: asyncio.Future[Result] = loop.create_future()
        group.inputs.append(inputs)
        group.futures.append(future)
        group.values += inputs.size
        self.requests += 1
        if (
            not may_wait
            or group.values >= self.max_values
            or len(group.futures) >= self._target > 1
        ):
            self._flush(key, group)
        return await future  # done already when flushed above: no yield

    def _flush(self, key: tuple[int, bool], group: _Group) -> None:
        if self._groups.get(key) is group:
            del self._groups[key]
        if group.timer is not None:
            group.timer.cancel()  # flushed early: the group need not wait for its timer
        futures, parts = group.futures, group.inputs  # never empty: a group is made to join it
        self.record(len(futures), group.probe)
        self.runs += 1
        try:
            scores, errors = group.scorer.run(
                parts[0] if len(parts) == 1 else np.concatenate(parts), explain=group.explain
            )
        except Exception as exc:  # every waiter gets the failure, none hangs
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for future, part in zip(futures, parts, strict=True):
            end = start + len(part)
            if not future.done():  # a cancelled request (client gone) just drops its rows
                future.set_result(
                    (scores[start:end], None if errors is None else errors[start:end])
                )
            start = end
