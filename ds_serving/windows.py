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
from ds_serving.slots import WINDOWS, EntitySlots, grown


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


@dataclass(frozen=True)
class GroupLayout:
    """Where a batch's groups sit, as arrays: each row's group (``codes``), the rows with each
    group's together, input order within a group (``order``; the groups in no set order), the
    group of each of those (``grouped``), where each run of one group starts in ``order``
    (``heads``), and each group's first and last row."""

    codes: np.ndarray
    order: np.ndarray
    grouped: np.ndarray
    heads: np.ndarray
    first: np.ndarray
    last: np.ndarray

    @classmethod
    def of(cls, groups: EntityGroups, n_rows: int) -> GroupLayout:
        g = len(groups)
        if isinstance(groups, CodedGroups):
            codes, order = groups.codes, groups.rows_by_group
            grouped = codes[order]
        else:
            parts = [positions for _, positions in groups]
            order = np.concatenate(parts) if parts else np.empty(0, np.intp)
            grouped = np.repeat(np.arange(g), [len(p) for p in parts])
            codes = np.empty(n_rows, dtype=np.intp)
            codes[order] = grouped
        first = np.zeros(g, dtype=np.intp)
        last = np.zeros(g, dtype=np.intp)
        heads = np.empty(0, np.intp)
        if len(order):
            change = np.flatnonzero(grouped[1:] != grouped[:-1]) + 1
            heads = np.concatenate(([0], change))
            tails = np.concatenate((change - 1, [len(order) - 1]))
            first[grouped[heads]] = order[heads]
            last[grouped[tails]] = order[tails]
        return cls(codes, order, grouped, heads, first, last)


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
    groups = entity_groups(entities)
    if isinstance(groups, CodedGroups):
        # many rows: every window from one sliding view over the grouped rows, keeping those
        # that stay inside one group (a view per entity cost ~15 us each: 1.5 s for 100,000
        # hosts), in the per-entity loop's order (groups as presented, rows in order)
        layout = GroupLayout.of(groups, len(groups.codes))
        order, rank, heads = layout.order, layout.grouped, layout.heads
        start = np.repeat(heads, np.diff(np.r_[heads, len(order)]))
        full = np.flatnonzero(np.arange(len(order)) - start >= window - 1)
        if not len(full):
            return WindowIndex(np.empty(0, np.int64), np.empty((0, window), np.int64))
        full = full[np.argsort(rank[full], kind="stable")]
        members = sliding_window_view(order, window)[full - (window - 1)]
        return WindowIndex(order[full].astype(np.int64), members)
    ends: list[np.ndarray] = []
    members_of: list[np.ndarray] = []
    for _, positions in groups:
        if len(positions) < window:
            continue
        view = sliding_window_view(positions, window)
        members_of.append(view)
        ends.append(view[:, -1])
    if not ends:
        return WindowIndex(np.empty(0, np.int64), np.empty((0, window), np.int64))
    return WindowIndex(np.concatenate(ends).astype(np.int64), np.concatenate(members_of))


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
    """The windows one batch completes, and each entity's tail after it (``tails``), for
    ``EntityWindows.commit``. Each entity of the batch is a run: its tail before the batch
    (padded in front to ``window - 1`` rows), then its new rows. ``source`` holds every run's
    padded tail, run after run, then every run's new rows, run after run; a window is looked up
    in it by its run and the place of its last row in the run (``_index``)."""

    window: int
    positions: np.ndarray  # int64 [m]: the batch row each window scores
    source: np.ndarray  # float32 [runs * (window - 1) + rows, f]
    run: np.ndarray  # [m]: each window's run
    end: np.ndarray  # [m]: where each window's last row sits in its run
    heads: np.ndarray  # [runs]: where each run's new rows start among the new rows
    new: np.ndarray  # [runs]: each run's new rows
    old: np.ndarray  # [runs]: each run's tail rows before the batch
    by_group: np.ndarray  # [runs]: the run of each of ``keys``
    keys: Sequence[Hashable]  # the batch's entities, in recency order (``entity_groups``)
    slots: np.ndarray  # their slots when staged (-1: new), valid while ``generation`` is
    generation: int

    def __len__(self) -> int:
        return len(self.positions)

    def _index(self, run: np.ndarray, place: np.ndarray) -> np.ndarray:
        keep = self.window - 1
        runs = len(self.heads)
        return np.where(place < keep, run * keep + place,
                        runs * keep + self.heads[run] + place - keep)

    def windows(self, part: slice) -> np.ndarray:
        """Windows ``part`` as a contiguous float32 [b, W, f] array."""
        place = self.end[part][:, None] + np.arange(1 - self.window, 1)
        return self.source[self._index(self.run[part][:, None], place)]

    def parts(self, max_windows: int) -> Iterator[slice]:
        """Slices of ``positions`` of at most ``max_windows`` windows each."""
        if max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, got {max_windows}")
        for start in range(0, len(self.positions), max_windows):
            yield slice(start, min(start + max_windows, len(self.positions)))

    def chunks(self, max_windows: int) -> Iterator[tuple[slice, np.ndarray]]:
        """(slice of ``positions``, windows) with at most ``max_windows`` windows each."""
        for part in self.parts(max_windows):
            yield part, self.windows(part)

    def tails(self) -> tuple[np.ndarray, np.ndarray]:
        """Each of ``keys``' last ``window - 1`` rows after the batch, right-aligned [k, W - 1,
        f], and how many of them hold data."""
        keep, runs = self.window - 1, len(self.heads)
        f = self.source.shape[1]
        if runs and keep and (self.new == self.new[0]).all():  # e.g. one row per entity
            n = int(self.new[0])
            rows = self.source[runs * keep:].reshape(runs, n, f)
            blocks = self.source[:runs * keep].reshape(runs, keep, f)
            tails = (rows[:, n - keep:] if n >= keep
                     else np.concatenate((blocks[:, n:], rows), axis=1))
        else:
            place = self.new[:, None] + np.arange(keep)
            tails = self.source[self._index(np.arange(runs)[:, None], place)]
        lengths = np.minimum(self.old + self.new, keep)
        return tails[self.by_group], lengths[self.by_group]


def _runs(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For runs of ``lengths`` items laid end to end: each item's run, and its place in it."""
    run = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    return run, np.arange(len(run)) - starts[run]


class EntityWindows:
    """Per-entity tails of the last ``window - 1`` rows for streaming scoring, as one array with
    a row per entity (``ds_serving.slots``): a batch of tens of thousands of entities stages its
    windows in a few gathers, not a Python step per entity.

    ``push`` takes a batch (rows may belong to several entities, in time order per entity) and
    returns the full windows it completes, with the batch positions they score. Memory is bounded:
    at most ``max_entities`` entities are kept; the least recently seen is evicted first.
    """

    def __init__(self, window: int, n_features: int, max_entities: int = 100_000) -> None:
        self.window = _check_window(window)
        self.n_features = int(n_features)
        self.max_entities = int(max_entities)
        self.reset()

    def reset(self) -> None:
        self._slots = EntitySlots(self.max_entities, WINDOWS)
        self._tails = np.zeros((0, self.window - 1, self.n_features), np.float32)
        self._lengths = np.zeros(0, np.intp)

    def __len__(self) -> int:
        return len(self._slots)

    def entity_keys(self) -> KeysView[Hashable]:
        """The entities holding state now (live view)."""
        return self._slots.keys()

    def tail(self, entity: Hashable) -> np.ndarray | None:
        """An entity's last rows (at most ``window - 1``), oldest first; None if it has none."""
        slot = self._slots.get(entity)
        if slot is None:
            return None
        return self._tails[slot, self.window - 1 - self._lengths[slot]:].copy()

    def resized(self, window: int) -> EntityWindows:
        """A copy for a model with another window (hot reload): each entity keeps its last
        ``min(len(tail), window - 1)`` rows, so a bigger window starts from partial history
        instead of from nothing and a smaller one scores at once."""
        out = EntityWindows(window, self.n_features, self.max_entities)
        mine = self._slots.by_recency()
        keys = [self._slots.key_of(slot) for slot in mine.tolist()]
        slots = out._admit(keys, out._slots.lookup(keys))
        keep, was = out.window - 1, self.window - 1
        width = min(keep, was)
        if width:
            out._tails[slots, keep - width:] = self._tails[mine, was - width:]
        out._lengths[slots] = np.minimum(self._lengths[mine], keep)
        out._slots.touch(slots)
        return out

    def _admit(self, keys: Sequence[Hashable], slots: np.ndarray) -> np.ndarray:
        slots, fresh = self._slots.admit(keys, slots)
        if self._slots.capacity > len(self._lengths):
            self._tails = grown(self._tails, self._slots.capacity)
            self._lengths = grown(self._lengths, self._slots.capacity)
        self._lengths[fresh] = 0
        return slots

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
        groups = entity_groups(keys) if groups is None else groups
        group_ids = group_keys(groups)
        slots = self._slots.lookup(group_ids)
        keep, f = self.window - 1, self.n_features
        layout = GroupLayout.of(groups, len(rows))
        # one run per entity, in the order ``layout.order`` holds the groups
        group = layout.grouped[layout.heads]
        new = np.diff(np.append(layout.heads, len(layout.order)))
        slot = slots[group]
        known = np.flatnonzero(slot >= 0)
        old = np.zeros(len(group), np.intp)
        old[known] = self._lengths[slot[known]]
        blocks = np.zeros((len(group), keep, f), np.float32)
        blocks[known] = self._tails[slot[known]]
        source = np.concatenate((blocks.reshape(-1, f), rows[layout.order]))
        run, k = _runs(new)  # each batch row (in ``layout.order``): its run, its place among
        end = keep + k  # the run's new rows, and its place in the run
        full = old[run] + k >= keep  # the row ends a full window
        by_group = np.empty(len(group), np.intp)
        by_group[group] = np.arange(len(group))
        return StagedWindows(
            self.window, layout.order[full].astype(np.int64), source, run[full], end[full],
            layout.heads, new, old, by_group, group_ids, slots, self._slots.generation)

    def touch(self, entities: Sequence[Hashable]) -> None:
        """Make ``entities`` (those with a tail) the most recently seen, in this order."""
        self._slots.touch_keys(entities)

    def commit(self, staged: StagedWindows) -> None:
        """Advance the tails to the end of a staged batch (most recently seen last)."""
        slots = (staged.slots if staged.generation == self._slots.generation
                 else self._slots.lookup(staged.keys))
        slots = self._admit(staged.keys, slots)
        self._tails[slots], self._lengths[slots] = staged.tails()
        self._slots.touch(slots)
        self._slots.evict()

    def push(
        self, entities: Sequence[Hashable] | np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stage + commit in one go: (batch positions scored, windows [m, W, f])."""
        staged = self.stage(entities, rows)
        self.commit(staged)
        return staged.positions, staged.windows(slice(None))
