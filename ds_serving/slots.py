"""Entity ids to rows of columnar per-entity state, least recently seen evicted beyond a bound.

The live scorer keeps state for up to ``max_entities`` entities (alert state, a temporal
model's window tails). Kept as numpy columns with one row ("slot") per entity, a request of tens
of thousands of entities advances in a few array operations instead of a Python object each
(the event loop waits for the GIL otherwise). ``EntitySlots`` owns the mapping: which entity has
which slot, which slots are free, and the recency order (a stamp per slot; a batch stamps its
entities in the order ``entity_groups`` presents them, so the order after a batch is the order of
each entity's last row, processed whole or in parts). The owner keeps the columns: it grows them
to ``capacity`` and resets the fresh slots ``admit`` hands out.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Hashable, KeysView, Sequence

import numpy as np

from ds_serving.ceding import CEDE_EVERY, cede, ceding

_GENERATIONS = itertools.count()  # unique across registries, so a stale number never matches

WINDOWS, SMOOTHING, ALERTS = "windows", "smoothing", "alerts"  # the per-entity stores
STORES = (WINDOWS, SMOOTHING, ALERTS)
_EVICTED: Counter[str] = Counter()  # entities dropped at the bound, per store, in this process
_EVICTED_LOCK = threading.Lock()


def record_evictions(store: str, count: int) -> None:
    """Count ``count`` entities a store dropped at its ``max_entities`` bound."""
    if count:
        with _EVICTED_LOCK:
            _EVICTED[store] += count


def evictions() -> dict[str, int]:
    """Entities dropped at the bound since the process started, per store (they lose their
    window, smoothing tail or alert state: a bound set too low shows here)."""
    with _EVICTED_LOCK:
        return dict(_EVICTED)


def grown(values: np.ndarray, capacity: int) -> np.ndarray:
    """``values`` with ``capacity`` rows: its own first, then zeros (state columns grow with
    their registry's ``capacity``)."""
    out = np.zeros((capacity, *values.shape[1:]), values.dtype)
    out[:len(values)] = values
    return out


class EntitySlots:
    """Entity -> slot, free slots, recency; see the module docstring."""

    def __init__(self, max_entities: int, store: str) -> None:
        self.max_entities = int(max_entities)
        self.store = store  # what the slots hold, for the eviction count
        self.reset()

    def reset(self) -> None:
        self._slots: dict[Hashable, int] = {}
        self._keys: list[Hashable] = []  # slot -> entity (stale for free slots)
        self._free: list[int] = []
        self._tick = 0  # recency stamps handed out so far
        self.alive = np.zeros(0, bool)
        self._stamp = np.zeros(0, np.int64)  # higher is more recent
        self.generation = next(_GENERATIONS)  # changes whenever an entity may change slot

    @property
    def capacity(self) -> int:
        return len(self.alive)

    def __len__(self) -> int:
        return len(self._slots)

    def keys(self) -> KeysView[Hashable]:
        """The entities holding a slot now (live view)."""
        return self._slots.keys()

    def get(self, entity: Hashable) -> int | None:
        return self._slots.get(entity)

    def key_of(self, slot: int) -> Hashable:
        return self._keys[slot]

    def by_recency(self) -> np.ndarray:
        """Occupied slots, least recently seen first."""
        alive = np.flatnonzero(self.alive)
        return alive[np.argsort(self._stamp[alive], kind="stable")]

    def lookup(self, keys: Sequence[Hashable]) -> np.ndarray:
        """Each entity's slot, -1 where it has none; changes nothing."""
        get = self._slots.get
        out = np.empty(len(keys), dtype=np.intp)
        for start in range(0, len(keys), CEDE_EVERY):
            if start:
                cede()
            part = keys[start:start + CEDE_EVERY]
            out[start:start + len(part)] = [get(key, -1) for key in part]
        return out

    def admit(self, keys: Sequence[Hashable], slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(``slots`` with a slot for every entity, the fresh slots handed out): the owner
        grows its columns to ``capacity`` first, then resets the fresh ones."""
        missing = np.flatnonzero(slots < 0)
        if not len(missing):
            return slots, missing
        n_reused = min(len(missing), len(self._free))
        reused = self._free[len(self._free) - n_reused:]
        del self._free[len(self._free) - n_reused:]
        top = len(self._keys)
        n_new = len(missing) - n_reused
        fresh = np.concatenate((np.asarray(reused[::-1], np.intp),
                                np.arange(top, top + n_new, dtype=np.intp)))
        if top + n_new > self.capacity:
            # doubling up to the bound; beyond it (new entities of one batch, before evictions
            # free their slots) only what is needed: a tail of a wide window is kilobytes
            self._grow(max(top + n_new, min(2 * self.capacity, self.max_entities), 64))
        new_keys = [keys[i] for i in ceding(missing.tolist())]
        self._keys.extend(new_keys[n_reused:])
        for slot, key in zip(fresh[:n_reused].tolist(), new_keys, strict=False):
            self._keys[slot] = key
        self._slots.update(zip(new_keys, fresh.tolist(), strict=True))
        self.alive[fresh] = True
        slots = slots.copy()
        slots[missing] = fresh
        self.generation = next(_GENERATIONS)
        return slots, fresh

    def _grow(self, capacity: int) -> None:
        self.alive = grown(self.alive, capacity)
        self._stamp = grown(self._stamp, capacity)

    def touch(self, slots: np.ndarray) -> None:
        """Make ``slots`` the most recently seen, the last one most recent."""
        self._stamp[slots] = self._tick + np.arange(len(slots))
        self._tick += len(slots)

    def touch_keys(self, keys: Sequence[Hashable]) -> None:
        """``touch`` the slots of those of ``keys`` holding one."""
        slots = self.lookup(keys)
        self.touch(slots[slots >= 0])

    def evict(self) -> np.ndarray:
        """Free the least recently seen slots beyond ``max_entities``; returns them (the owner
        reads what it must from them before they are handed out again)."""
        excess = len(self._slots) - self.max_entities
        if excess <= 0:
            return np.empty(0, np.intp)
        stamps = np.where(self.alive, self._stamp, np.iinfo(np.int64).max)
        victims = np.argpartition(stamps, excess - 1)[:excess]
        self.alive[victims] = False
        for slot in victims.tolist():
            del self._slots[self._keys[slot]]
        self._free.extend(victims.tolist())
        self.generation = next(_GENERATIONS)
        record_evictions(self.store, len(victims))
        return victims
