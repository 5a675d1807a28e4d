"""Long per-entity loops hand the GIL over on purpose, a slice at a time.

A large request's per-entity work (grouping 65,536 ids, their alert and smoothing state) runs on
a worker thread so the event loop stays free; but a thread running Python keeps the GIL until
the interpreter forces a switch, and a small call on the loop then waits about 2.5 ms for each
of the several times it needs the GIL, whatever ``sys.setswitchinterval`` says (measured on
the 2-core development machine, docs/benchmarks.md, phase (d)). ``time.sleep(0)`` between
slices releases the GIL where a waiting thread takes it at once: the loop's wait becomes one
slice (well under a millisecond), at the cost of one system call per slice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

CEDE_EVERY = 2048  # items per slice: about 0.3-1 ms of per-entity Python


def cede() -> None:
    """Let a thread waiting for the GIL (the event loop) take it now."""
    time.sleep(0)


def ceding(items: Sequence[T], every: int = CEDE_EVERY) -> Iterable[T]:
    """``items`` as they are when short; otherwise the same items, ceding the GIL between
    slices of ``every``."""
    if len(items) <= every:
        return items
    return _sliced(items, every)


def _sliced(items: Sequence[T], every: int) -> Iterator[T]:
    for start in range(0, len(items), every):
        if start:
            cede()
        yield from items[start:start + every]
