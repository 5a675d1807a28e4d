"""Per-entity state in a plain dict kept in least-recently-seen order, bounded in size.

Windows, flag smoothing and alerts each keep one entry per entity. A dict preserves insertion
order, so re-inserting an entity on every update keeps the least recently seen one first, and
the bound is enforced by dropping from the front: an LRU without a second structure.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

V = TypeVar("V")


def put_recent(state: dict[Hashable, V], key: Hashable, value: V) -> None:
    """Store ``value`` for ``key`` as the most recently seen entity."""
    state.pop(key, None)
    state[key] = value


def evict_least_recent(state: dict[Hashable, V], max_entities: int) -> list[V]:
    """Drop the least recently seen entities beyond ``max_entities``; return what was dropped."""
    dropped: list[V] = []
    while len(state) > max_entities:
        dropped.append(state.pop(next(iter(state))))
    return dropped
