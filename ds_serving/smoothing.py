"""k-of-n smoothing of anomaly flags: part of a model's scoring policy (manifest ``smoothing``).

A row is flagged when at least ``k`` of its entity's last ``n`` raw flags (itself included) are
set. ``k=1, n=1`` is no smoothing; ``k = n // 2 + 1`` is a rolling median over the flags. Dataset
scoring (``smooth_flags`` over a frame) and the live scorer (``StreamingSmoother`` fed batch by
batch) give the same flags for the same rows, because the scorer keeps the last ``n - 1`` raw
flags of each entity. Rows without a score (temporal warm-up) count as not flagged.
"""

from __future__ import annotations

from collections.abc import Hashable, KeysView, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ds_serving.recency import evict_least_recent, put_recent
from ds_serving.windows import EntityGroups, entity_groups, group_positions


class SmoothingError(ValueError):
    """A smoothing policy that cannot work; the message names the value."""


@dataclass(frozen=True)
class Smoothing:
    k: int = 1
    n: int = 1

    def __post_init__(self) -> None:
        if self.n < 1:
            raise SmoothingError(f"smoothing.n must be >= 1 (rows considered), got {self.n}")
        if not 1 <= self.k <= self.n:
            raise SmoothingError(
                f"smoothing.k must be between 1 and n={self.n} (flagged rows out of the last n), "
                f"got {self.k}"
            )

    @property
    def enabled(self) -> bool:
        return self.n > 1 or self.k > 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Smoothing:
        if not data:
            return cls()
        unknown = set(data) - {"k", "n"}
        if unknown:
            raise SmoothingError(f"unknown smoothing key(s) {sorted(unknown)}; use k and n")
        return cls(k=int(data.get("k", 1)), n=int(data.get("n", 1)))


def _k_of_n(history: np.ndarray, smoothing: Smoothing) -> np.ndarray:
    """Smoothed flags for the last ``len(history) - (n-1)`` entries of ``history``."""
    counts = np.cumsum(np.concatenate([[0], history.astype(np.int32)]))
    n = smoothing.n
    return (counts[n:] - counts[:-n]) >= smoothing.k


def smooth_flags(
    raw_flags: np.ndarray,
    smoothing: Smoothing,
    entities: Sequence[Hashable] | np.ndarray | None = None,
) -> np.ndarray:
    """Smoothed flags for a whole table; rows must be time-ordered within each entity."""
    raw = np.asarray(raw_flags, dtype=bool)
    if not smoothing.enabled:
        return raw.copy()
    keys = np.zeros(len(raw), np.int8) if entities is None else np.asarray(entities)
    out = np.zeros(len(raw), dtype=bool)
    pad = np.zeros(smoothing.n - 1, dtype=bool)
    for positions in group_positions(keys):
        out[positions] = _k_of_n(np.concatenate([pad, raw[positions]]), smoothing)
    return out


class StreamingSmoother:
    """Keeps each entity's last ``n - 1`` raw flags so batches smooth like the whole table."""

    def __init__(self, smoothing: Smoothing, max_entities: int = 100_000) -> None:
        self.smoothing = smoothing
        self.max_entities = max_entities
        self._tails: dict[Hashable, np.ndarray] = {}

    def adopt(self, other: StreamingSmoother) -> None:
        """Take over ``other``'s raw-flag tails (hot reload to another k-of-n): each is cut or
        front-padded with "not flagged" (as in warm-up) to this policy's ``n - 1``."""
        keep = self.smoothing.n - 1
        for key, tail in other._tails.items():
            history = np.concatenate([np.zeros(keep, dtype=bool), tail])
            put_recent(self._tails, key, history[len(history) - keep :])
        other._tails = {}
        evict_least_recent(self._tails, self.max_entities)

    def entity_keys(self) -> KeysView[Hashable]:
        """The entities holding state now (live view)."""
        return self._tails.keys()

    def apply(
        self,
        raw_flags: np.ndarray,
        entities: Sequence[Hashable] | np.ndarray | None = None,
        groups: EntityGroups | None = None,
    ) -> np.ndarray:
        """Smoothed flags of a batch; ``groups``: ``entity_groups(entities)`` when known."""
        raw = np.asarray(raw_flags, dtype=bool)
        if not self.smoothing.enabled:
            return raw.copy()
        keys = np.zeros(len(raw), np.int8) if entities is None else np.asarray(entities)
        if len(keys) != len(raw):
            raise ValueError(f"got {len(keys)} entity ids for {len(raw)} flags; send one per row")
        keep = self.smoothing.n - 1
        out = np.zeros(len(raw), dtype=bool)
        for key, positions in entity_groups(keys) if groups is None else groups:
            tail = self._tails.get(key)
            if tail is None:
                tail = np.zeros(keep, dtype=bool)
            history = np.concatenate([tail, raw[positions]])
            out[positions] = _k_of_n(history, self.smoothing)
            put_recent(self._tails, key, history[len(history) - keep :])
        evict_least_recent(self._tails, self.max_entities)
        return out
