"""Sliding windows per entity, shared by dataset scoring and the live scorer.

A temporal model scores the window of the last ``W`` rows of one entity; the score belongs to the
row that ends the window, so it is usable online. Rows before an entity's first full window get
no score (NaN, flag False) rather than a made-up one. Dataset scoring (``window_index`` over a
whole frame) and streaming (``EntityWindows`` fed batch by batch) build identical windows, so
both paths give the same score for the same row.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, KeysView, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ds_serving.ceding import ceding
from ds_serving.recency import evict_least_recent, put_recent


def _check_window(window: int) -> int:
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    return int(window)


_SMALL_GROUPING = 64  # rows up to which entity_groups groups with a dict
QUOTE_CHARS = 64  # characters of a user string that an error message quotes

#: (entity, row positions) per entity, as ``entity_groups`` returns them
EntityGroups = Sequence[tuple[Hashable, np.ndarray]]


class CodedGroups(Sequence[tuple[Hashable, np.ndarray]]):
    """``EntityGroups`` of a large batch, with each row's group number (``codes``: group ``i``
    is ``self[i]``), so per-group sums are one ``np.bincount`` instead of a concatenation of
    every group's positions (one long C call that holds the GIL). Each group's positions are
    a view of one sorted index, made when asked for: a pass that needs only the entities
    (``keys``: the alert state of entities with nothing flagged, time checks without times)
    makes none of them (65,536 views cost about 19 ms of Python)."""

    def __init__(self, keys: list[Hashable], order: np.ndarray, starts: list[int],
                 ends: list[int], codes: np.ndarray) -> None:
        self.keys = keys
        self.codes = codes
        self._order, self._starts, self._ends = order, starts, ends

    def positions(self, i: int) -> np.ndarray:
        return self._order[self._starts[i]:self._ends[i]]

    @property
    def rows_by_group(self) -> np.ndarray:
        """Every row, each group's rows together in input order (groups in no set order)."""
        return self._order

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, i: int) -> tuple[Hashable, np.ndarray]: ...

    @overload
    def __getitem__(self, i: slice) -> list[tuple[Hashable, np.ndarray]]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self.keys)))]
        return self.keys[i], self.positions(i)

    def __iter__(self) -> Iterator[tuple[Hashable, np.ndarray]]:
        for i in range(len(self.keys)):
            yield self.keys[i], self.positions(i)


def group_keys(groups: EntityGroups) -> Sequence[Hashable]:
    """The entities of ``groups``, in their order (no positions made for ``CodedGroups``)."""
    return groups.keys if isinstance(groups, CodedGroups) else [key for key, _ in groups]


def positions_of(groups: EntityGroups, i: int) -> np.ndarray:
    """The row positions of group ``i``."""
    return groups.positions(i) if isinstance(groups, CodedGroups) else groups[i][1]


def quoted(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of a user-sent string (an entity id, a model name) for an error message, at most
    ``limit`` characters of repr (escapes count: a NUL takes 4), then how long the string is:
    an id of megabytes must not make a megabyte message (gRPC clients refuse status metadata
    over 8 KiB)."""
    text = value if isinstance(value, str) else str(value)
    prefix = text[:limit]
    shown = repr(prefix)
    if len(prefix) == len(text) and len(shown) <= limit + 2:
        return shown
    while len(shown) > limit + 2:
        prefix = prefix[:-1]
        shown = repr(prefix)
    return f"{shown}\u2026({len(text)} chars)"


def entity_array(entities: Sequence[Hashable] | np.ndarray) -> np.ndarray:
    """Entity ids as a 1-D array: an array as it is; strings as an object array of the very
    strings (a numpy string array would cost rows x longest id x 4 bytes, and strips trailing
    NULs, so ids differing by one would share state); anything else as ``np.asarray`` makes."""
    if isinstance(entities, np.ndarray):
        return entities
    if hasattr(entities, "__array__"):  # pandas: a column of strings converts to objects
        return np.asarray(entities)
    values = entities if isinstance(entities, list) else list(entities)
    if values and isinstance(values[0], str | bytes):
        keys = np.empty(len(values), dtype=object)
        keys[:] = values
        return keys
    return np.asarray(values)


def entity_groups(entities: Sequence[Hashable] | np.ndarray) -> EntityGroups:
    """(entity, row positions) per entity, input order within each; entities ordered by their
    LAST row.

    Per-entity state is kept in least-recently-seen order (``ds_serving.recency``) and each
    store touches a batch's entities in this order, so the recency order after a batch is the
    order of each entity's last row: the same whether the batch is processed whole or as
    consecutive parts (joined stream messages, grouped requests), which keeps later evictions
    the same too. Entities come back as plain Python values (``str``, ``int``), usable as dict
    keys for state that outlives one batch. Costs O(total bytes of the ids): strings (object
    arrays) are hashed once each, never compared by sorting."""
    keys = entity_array(entities)
    if keys.ndim != 1:
        raise ValueError(f"entities must be 1-D, got shape {keys.shape}")
    if len(keys) <= _SMALL_GROUPING:
        # live requests are mostly a few rows: a dict beats np.unique's sort-and-split (about
        # 3 us instead of 30 us for one row), and gives the same groups in the same order
        index: dict[Hashable, list[int]] = {}
        for i, key in enumerate(keys.tolist()):
            index.setdefault(key, []).append(i)
        items = list(index.items())
        if len(items) > 1:
            items.sort(key=lambda item: item[1][-1])
        return [(key, np.asarray(rows, dtype=np.intp)) for key, rows in items]
    if keys.dtype == object:
        # number each distinct id in order of appearance (a dict: one hash per id), then group
        # the numbers as np.unique's inverse would be grouped
        codes: dict[Hashable, int] = {}
        inverse = np.fromiter((codes.setdefault(key, len(codes)) for key in ceding(keys.tolist())),
                              dtype=np.intp, count=len(keys))
        unique: list[Hashable] | np.ndarray = list(codes)
    elif keys.dtype.kind in "iu" and keys.min() >= 0 and keys.max() < 4 * len(keys):
        # small non-negative integers (dataset scoring's per-table entity codes): counted,
        # not sorted; the same sorted distinct values and inverse as np.unique
        present = np.flatnonzero(np.bincount(keys))
        rank = np.empty(int(present[-1]) + 1, np.intp)
        rank[present] = np.arange(len(present))
        unique, inverse = present, rank[keys]
    else:
        unique, inverse = np.unique(keys, return_inverse=True)
        inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    sizes = np.bincount(inverse)
    bounds = np.cumsum(sizes)  # where each group ends in ``order``
    keys_out = unique if isinstance(unique, list) else unique.tolist()  # plain Python values
    # present groups in order of their last row (see above), which is where each group ends
    # in the stably sorted ``order``; each group's positions are a view of ``order`` made when
    # asked for (np.split costs ~5 us of Python per group: a third of a second for 65,536
    # one-row entities)
    presented = np.argsort(order[bounds - 1], kind="stable")
    rank = np.empty_like(presented)
    rank[presented] = np.arange(len(presented))
    return CodedGroups([keys_out[i] for i in ceding(presented.tolist())], order,
                       (bounds - sizes)[presented].tolist(),
                       bounds[presented].tolist(), rank[inverse])


def group_positions(entities: Sequence[Hashable] | np.ndarray) -> list[np.ndarray]:
    """Row positions of each entity, in input order within the entity (``entity_groups``)."""
    return [positions for _, positions in entity_groups(entities)]


@dataclass(frozen=True)
class WindowIndex:
    """Where each full window ends: ``ends[i]`` is the row scored by window ``i``."""

    ends: np.ndarray  # int64 [m] row positions in the original frame
    starts: np.ndarray  # int64 [m, window] row positions making up each window, oldest first


def window_index(entities: Sequence[Hashable] | np.ndarray, window: int) -> WindowIndex:
    """Index of every full window per entity; rows must be time-ordered within each entity."""
    window = _check_window(window)
    ends: list[np.ndarray] = []
    members: list[np.ndarray] = []
    for positions in group_positions(entities):
        if len(positions) < window:
            continue
        view = sliding_window_view(positions, window)
        members.append(view)
        ends.append(view[:, -1])
    if not ends:
        return WindowIndex(np.empty(0, np.int64), np.empty((0, window), np.int64))
    return WindowIndex(np.concatenate(ends).astype(np.int64), np.concatenate(members))


def iter_windows(
    rows: np.ndarray, index: WindowIndex, batch_windows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row positions, windows [b, W, f]) batches; memory stays bounded by ``batch_windows``."""
    if batch_windows < 1:
        raise ValueError(f"batch_windows must be >= 1, got {batch_windows}")
    for start in range(0, len(index.ends), batch_windows):
        stop = start + batch_windows
        yield index.ends[start:stop], rows[index.starts[start:stop]]


@dataclass(frozen=True)
class StagedWindows:
    """The windows one batch completes, built chunk by chunk from the entities' histories so
    memory stays near the size of the batch instead of ``W`` times it."""

    window: int
    positions: np.ndarray  # int64 [m]: the batch row each window scores
    history: np.ndarray  # float32 [h, f]: every entity's tail + new rows, one after another
    starts: np.ndarray  # int64 [m]: where each window's oldest row sits in ``history``
    tails: dict[Hashable, np.ndarray]  # each entity's tail after the batch, for ``commit``

    def __len__(self) -> int:
        return len(self.positions)

    def windows(self, part: slice) -> np.ndarray:
        """Windows ``part`` as a contiguous float32 [b, W, f] array."""
        starts = self.starts[part]
        return self.history[starts[:, None] + np.arange(self.window)]

    def chunks(self, max_windows: int) -> Iterator[tuple[slice, np.ndarray]]:
        """(slice of ``positions``, windows) with at most ``max_windows`` windows each."""
        if max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, got {max_windows}")
        for start in range(0, len(self.positions), max_windows):
            part = slice(start, min(start + max_windows, len(self.positions)))
            yield part, self.windows(part)


class EntityWindows:
    """Per-entity ring buffers of the last ``window - 1`` rows for streaming scoring.

    ``push`` takes a batch (rows may belong to several entities, in time order per entity) and
    returns the full windows it completes, with the batch positions they score. Memory is bounded:
    at most ``max_entities`` entities are kept; the least recently seen is evicted first.
    """

    def __init__(self, window: int, n_features: int, max_entities: int = 100_000) -> None:
        self.window = _check_window(window)
        self.n_features = int(n_features)
        self.max_entities = int(max_entities)
        self._tails: dict[Hashable, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._tails)

    def resized(self, window: int) -> EntityWindows:
        """A copy for a model with another window (hot reload): each entity keeps its last
        ``min(len(tail), window - 1)`` rows, so a bigger window starts from partial history
        instead of from nothing and a smaller one scores at once."""
        out = EntityWindows(window, self.n_features, self.max_entities)
        keep = out.window - 1
        for key, tail in self._tails.items():
            out._tails[key] = tail[max(0, len(tail) - keep) :].copy()
        return out

    def entity_keys(self) -> KeysView[Hashable]:
        """The entities holding state now (live view)."""
        return self._tails.keys()

    def stage(
        self,
        entities: Sequence[Hashable] | np.ndarray,
        rows: np.ndarray,
        groups: EntityGroups | None = None,
    ) -> StagedWindows:
        """The windows a batch completes, WITHOUT changing any state: ``commit`` the result once
        the batch is scored, so a failed or cancelled request leaves the windows untouched.
        ``groups``: ``entity_groups(entities)`` when the caller has it already."""
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"rows must be [n, {self.n_features}], got shape {rows.shape}")
        keys = entity_array(entities)
        if len(keys) != len(rows):
            raise ValueError(f"got {len(keys)} entity ids for {len(rows)} rows; send one per row")
        keep = self.window - 1
        histories: list[np.ndarray] = []
        out_pos: list[np.ndarray] = []
        out_start: list[np.ndarray] = []
        tails: dict[Hashable, np.ndarray] = {}
        offset = 0
        for key, positions in ceding(entity_groups(keys) if groups is None else groups):
            tail = self._tails.get(key)
            if tail is None:
                tail = np.empty((0, self.n_features), np.float32)
            history = np.concatenate([tail, rows[positions]])
            n_new = len(history) - keep
            if n_new > 0:
                out_pos.append(positions[len(positions) - n_new :])
                out_start.append(offset + np.arange(n_new, dtype=np.int64))
            histories.append(history)
            offset += len(history)
            tails[key] = history[max(0, len(history) - keep) :].copy()
        if not out_pos:
            empty = np.empty(0, np.int64)
            return StagedWindows(self.window, empty, np.empty((0, self.n_features), np.float32),
                                 empty, tails)
        return StagedWindows(
            self.window,
            np.concatenate(out_pos).astype(np.int64),
            histories[0] if len(histories) == 1 else np.concatenate(histories),
            np.concatenate(out_start),
            tails,
        )

    def commit(self, staged: StagedWindows) -> None:
        """Advance the tails to the end of a staged batch (most recently seen last)."""
        for key, tail in staged.tails.items():
            put_recent(self._tails, key, tail)
        evict_least_recent(self._tails, self.max_entities)

    def push(
        self, entities: Sequence[Hashable] | np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stage + commit in one go: (batch positions scored, windows [m, W, f])."""
        staged = self.stage(entities, rows)
        self.commit(staged)
        return staged.positions, staged.windows(slice(None))

    def reset(self) -> None:
        self._tails.clear()
