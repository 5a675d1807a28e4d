"""Per-entity alert state: hysteresis and cooldown, shared by the gRPC scorer and the alerts asset.

An alert opens on a flagged row that makes at least ``k`` of an entity's last ``n`` rows flagged,
closes after ``m`` consecutive normal rows, and will not re-open until ``cooldown`` has passed
since it closed (storm control). Time is whatever the caller passes (epoch seconds in practice);
without times the row count stands in, so ``cooldown`` is then measured in rows. An entity keeps
one time base: rows with times and rows without cannot be mixed (``TimeBaseError``), since epoch
seconds and row counts compared with each other would lock alerts out or skip the cooldown. An
entity's times never go back (``TimeOrderError``): a replay of old rows would make ``t -
closed_at`` negative and lock re-opens out, and would join unrelated rows into one temporal window.
Rows without a score (NaN: a temporal model's warm-up) carry no information: they neither flag nor
count as normal.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, KeysView, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ds_serving.ceding import ceding
from ds_serving.counts import whole_number
from ds_serving.slots import ALERTS, EntitySlots, grown
from ds_serving.windows import (
    EntityGroups,
    GroupLayout,
    entity_array,
    entity_groups,
    group_keys,
    positions_of,
    quoted,
)


class TimeBaseError(ValueError):
    """Rows for an entity came with timestamps and without; the message names the entity."""


class TimeOrderError(ValueError):
    """An entity's timestamps went back in time; the message names the entity and both times."""


class AlertPolicyError(ValueError):
    """An alerting policy that cannot work; the message names the value."""


def epoch_seconds(timestamps: np.ndarray) -> np.ndarray:
    """Float epoch seconds from datetime64 of any unit (naive = UTC) or from numeric seconds.

    The unit is read from the dtype: Parquet round trips yield ``datetime64[us]`` as well as
    ``[ns]``, and dividing raw integers by 1e9 would be 1000x off for the former."""
    t = np.asarray(timestamps)
    if t.dtype.kind == "M":
        return (t - np.datetime64(0, "s")) / np.timedelta64(1, "s")
    if t.dtype.kind in "iuf":
        return t.astype(np.float64)
    raise ValueError(f"timestamps must be datetime64 or numeric seconds, got dtype {t.dtype}")


@dataclass(frozen=True)
class AlertPolicy:
    k: int = 3
    n: int = 5
    m: int = 10
    cooldown: float = 600.0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise AlertPolicyError(f"alerting.n must be >= 1 (window of recent rows), got {self.n}")
        if not 1 <= self.k <= self.n:
            raise AlertPolicyError(
                f"alerting.k must be between 1 and n={self.n} (anomalous rows out of the last n "
                f"that open an alert), got {self.k}"
            )
        if self.m < 1:
            raise AlertPolicyError(f"alerting.m must be >= 1 (normal rows to close), got {self.m}")
        if not 0 <= self.cooldown < math.inf:  # NaN too: no alert could ever reopen
            raise AlertPolicyError(f"alerting.cooldown must be a finite number of seconds >= 0, "
                                   f"got {self.cooldown}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AlertPolicy:
        if not data:
            return cls()
        unknown = set(data) - {"k", "n", "m", "cooldown"}
        if unknown:
            raise AlertPolicyError(
                f"unknown alerting key(s) {sorted(unknown)}; use k, n, m, cooldown"
            )
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "cooldown":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise AlertPolicyError(f"alerting.cooldown must be a number of seconds, got "
                                           f"{value!r}")
                values[key] = float(value)
                continue
            count = whole_number(value)
            if count is None:
                raise AlertPolicyError(f"alerting.{key} must be a whole number of rows, got "
                                       f"{value!r}")
            values[key] = count
        return cls(**values)


@dataclass(frozen=True)
class AlertEvent:
    entity: str
    kind: str  # "open" | "close"
    at: float  # time of the row that opened/closed the alert
    opened_at: float  # for "close": when the alert opened; for "open": same as ``at``
    peak_score: float  # highest score seen while open (so far, for "open")
    position: int  # position of that row in the batch passed to ``update``


@dataclass(frozen=True)
class CheckedTimes:
    """A batch's entity groups whose timestamps ``AlertTracker.check_times`` accepted: handed to
    ``update`` with the same ``times``, it spares the grouping, the check and the entities'
    state lookup a second time (``slots``, valid while the tracker's ``generation`` is)."""

    groups: EntityGroups
    times: np.ndarray | None
    slots: np.ndarray | None = None
    generation: int = -1
    layout: GroupLayout | None = None  # where the groups' rows sit (depends on groups only)


@dataclass(frozen=True)
class EntityAlertState:
    """One entity's alert state as ``AlertTracker.states`` reports it."""

    entity: Hashable
    seen: int  # scored rows (the k-of-n window counts these)
    clock: int  # all rows: the time base when no times are sent
    timed: bool | None  # whether this entity's rows come with times (None: not yet known)
    last_time: float | None  # time of the entity's latest row (timed entities)
    recent: tuple[int, ...]  # row numbers (of ``seen``) of the latest k flagged rows in the last n
    open: bool
    opened_at: float
    peak: float
    normal_run: int
    closed_at: float | None


_NO_FLAG = np.iinfo(np.int64).min // 2  # an empty place among an entity's recent flags


class AlertTracker:
    """Feeds scored rows per entity through an ``AlertPolicy`` and emits open/close events.

    The state is columnar: one slot per entity in numpy arrays, a dict from entity to slot, so
    a batch of tens of thousands of entities with nothing flagged advances in a few array
    operations (the scorer's largest requests: the event loop waits for the GIL otherwise).
    Entities with a flagged row or an open alert go through the rows one by one (hysteresis and
    cooldown are sequential). Least recently seen entities are evicted beyond ``max_entities``;
    the recency order is the order in which batches present their entities (``entity_groups``).
    """

    # one row per slot (``_blank`` says what each holds)
    _seen: np.ndarray
    _clock: np.ndarray
    _timed: np.ndarray
    _last_time: np.ndarray
    _recent: np.ndarray
    _is_open: np.ndarray
    _opened_at: np.ndarray
    _peak: np.ndarray
    _normal_run: np.ndarray
    _closed_at: np.ndarray

    def __init__(self, policy: AlertPolicy, max_entities: int = 100_000) -> None:
        self.policy = policy
        self.max_entities = max_entities
        self.reset()

    def reset(self) -> None:
        self._slots = EntitySlots(self.max_entities, ALERTS)
        self._open = 0  # kept in step with the states so reading it costs nothing
        self._alloc(0)

    @property
    def generation(self) -> int:
        """Changes whenever an entity may have changed slot."""
        return self._slots.generation

    def _alloc(self, capacity: int) -> None:
        for name, values in self._blank(capacity).items():
            setattr(self, name, values)

    def _blank(self, count: int) -> dict[str, np.ndarray]:
        """The columns of ``count`` entities with no state yet."""
        return {
            "_seen": np.zeros(count, np.int64),  # scored rows (the k-of-n window counts these)
            "_clock": np.zeros(count, np.int64),  # all rows: the time base without times
            "_timed": np.full(count, -1, np.int8),  # -1 not yet known, 0 without, 1 with times
            "_last_time": np.full(count, np.nan),  # time of the latest row (timed entities)
            # the row numbers (of ``seen``) of the entity's k most recent flagged rows, in no
            # order: k of its last n rows are flagged when the oldest of them is newer than
            # ``seen - n`` (k numbers per entity, whatever n is)
            "_recent": np.full((count, self.policy.k), _NO_FLAG, np.int64),
            "_is_open": np.zeros(count, bool),
            "_opened_at": np.zeros(count),
            "_peak": np.full(count, -np.inf),
            "_normal_run": np.zeros(count, np.int64),
            "_closed_at": np.full(count, np.nan),  # NaN: never closed
        }

    def _admit(self, keys: Sequence[Hashable], slots: np.ndarray) -> np.ndarray:
        """``slots`` with a fresh slot (default state) for each entity that had none."""
        slots, fresh = self._slots.admit(keys, slots)
        if not len(fresh):
            return slots
        grow = self._slots.capacity > len(self._seen)
        for name, values in self._blank(len(fresh)).items():
            if grow:
                setattr(self, name, grown(getattr(self, name), self._slots.capacity))
            getattr(self, name)[fresh] = values
        return slots

    def _evict(self) -> None:
        victims = self._slots.evict()
        self._open -= int(np.count_nonzero(self._is_open[victims]))
        self._is_open[victims] = False

    def touch(self, entities: Sequence[Hashable]) -> None:
        """Make ``entities`` (those with alert state) the most recently seen, in this order."""
        self._slots.touch_keys(entities)

    def entity_keys(self) -> KeysView[Hashable]:
        """The entities holding state now (live view)."""
        return self._slots.keys()

    def open_count(self) -> int:
        return self._open

    def states(self) -> list[EntityAlertState]:
        """Every entity's state, least recently seen first (for tests and inspection)."""
        return [self._report(slot) for slot in self._slots.by_recency().tolist()]

    def state(self, entity: Hashable) -> EntityAlertState | None:
        """One entity's state (None if it holds none)."""
        slot = self._slots.get(entity)
        return None if slot is None else self._report(slot)

    def _report(self, slot: int) -> EntityAlertState:
        seen, n = int(self._seen[slot]), self.policy.n
        last, closed = float(self._last_time[slot]), float(self._closed_at[slot])
        return EntityAlertState(
            entity=self._slots.key_of(slot), seen=seen, clock=int(self._clock[slot]),
            timed=None if self._timed[slot] < 0 else bool(self._timed[slot]),
            last_time=None if np.isnan(last) else last,
            recent=tuple(sorted(v for v in self._recent[slot].tolist() if v > seen - n)),
            open=bool(self._is_open[slot]), opened_at=float(self._opened_at[slot]),
            peak=float(self._peak[slot]), normal_run=int(self._normal_run[slot]),
            closed_at=None if np.isnan(closed) else closed)

    def is_open(self, entity: Hashable) -> bool:
        slot = self._slots.get(entity)
        return slot is not None and bool(self._is_open[slot])

    def adopt(self, other: AlertTracker) -> None:
        """Take over ``other``'s per-entity state (hot reload to a new policy): open alerts stay
        open, cooldowns and time bases carry on, and ``other`` is left empty. Of the recent
        flags, those inside both windows carry over, at most the k the old policy kept."""
        theirs = other._slots.by_recency()
        keys = [other._slots.key_of(slot) for slot in theirs.tolist()]
        slots = self._admit(keys, self._slots.lookup(keys))
        self._open -= int(np.count_nonzero(self._is_open[slots]))
        for name in ("_seen", "_clock", "_timed", "_last_time", "_is_open", "_opened_at",
                     "_peak", "_normal_run", "_closed_at"):
            getattr(self, name)[slots] = getattr(other, name)[theirs]
        self._open += int(np.count_nonzero(self._is_open[slots]))
        # the most recent flagged rows still inside both windows, as many as the new k holds
        window = min(self.policy.n, other.policy.n)
        flagged = other._recent[theirs]
        flagged = np.sort(np.where(flagged > (self._seen[slots] - window)[:, None], flagged,
                                   _NO_FLAG), axis=1)
        kept = min(self.policy.k, other.policy.k)
        self._recent[slots] = _NO_FLAG
        self._recent[slots, :kept] = flagged[:, flagged.shape[1] - kept:]
        self._slots.touch(slots)
        other.reset()
        self._evict()

    def check_times(
        self,
        entities: Sequence[Hashable] | np.ndarray,
        times: np.ndarray | None,
        groups: EntityGroups | None = None,
    ) -> CheckedTimes:
        """Raise ``TimeBaseError`` if an entity switches between rows with and without times,
        ``TimeOrderError`` if one of its times is earlier than the one before it (in this batch
        or the last row seen). Changes nothing, so a caller can refuse a request up front and
        then pass the result to ``update`` (with no state change in between)."""
        groups = entity_groups(entities) if groups is None else groups
        slots = self._slots.lookup(group_keys(groups))
        layout = GroupLayout.of(groups, len(entities))
        self._check_times(groups, times, slots, layout)
        return CheckedTimes(groups, times, slots, self.generation, layout)

    def _check_times(self, groups: EntityGroups, times: np.ndarray | None,
                     slots: np.ndarray, layout: GroupLayout) -> None:
        """Raises for the first group (in group order) whose times do not fit, as a loop over
        the groups would; the search itself is a few array operations."""
        known = np.flatnonzero(slots >= 0)
        base = self._timed[slots[known]]
        bad_base = known[(base >= 0) & (base != int(times is not None))]
        first_base = int(bad_base[0]) if len(bad_base) else len(groups)
        first_order = len(groups)
        if times is not None and len(groups):
            t = np.asarray(times, dtype=np.float64)
            within = np.diff(t[layout.order]) < 0
            back = layout.grouped[1:][within & (layout.grouped[1:] == layout.grouped[:-1])]
            last = np.full(len(groups), np.nan)
            last[known] = self._last_time[slots[known]]
            before = np.flatnonzero(t[layout.first] < last)  # NaN (no time yet) compares False
            candidates = np.concatenate((back, before))
            if len(candidates):
                first_order = int(candidates.min())
        if first_base <= first_order and first_base < len(groups):
            key = group_keys(groups)[first_base]
            if self._timed[slots[first_base]] == 1:
                raise TimeBaseError(
                    f"timestamps: entity {quoted(key)} was sent with timestamps before; "
                    "send them on every request"
                )
            raise TimeBaseError(
                f"timestamps: entity {quoted(key)} was sent without timestamps before; "
                "keep sending none (epoch seconds and row counts cannot be mixed)"
            )
        if first_order < len(groups):
            assert times is not None
            g = first_order
            positions = positions_of(groups, g)
            row_times = np.asarray(times, dtype=np.float64)[positions]
            last_time = None if slots[g] < 0 else float(self._last_time[slots[g]])
            seq = row_times if last_time is None else np.concatenate(([last_time], row_times))
            j = int(np.flatnonzero(np.diff(seq) < 0)[0])  # seq[j + 1] < seq[j]
            i = j + (1 if last_time is None else 0)  # position of seq[j + 1] in row_times
            row, at, previous = int(positions[i]), float(row_times[i]), float(seq[j])
            raise TimeOrderError(
                f"timestamps: entity {quoted(group_keys(groups)[g])} row {row} at {at:.3f} is "
                f"earlier than its previous row at {previous:.3f}; send each entity's rows in "
                "time order (replaying old rows needs new entity ids or a restarted scorer)"
            )

    def update(
        self,
        entities: Sequence[Hashable] | np.ndarray,
        flags: np.ndarray,
        scores: np.ndarray,
        times: np.ndarray | None = None,
        checked: CheckedTimes | None = None,
    ) -> list[AlertEvent]:
        """Advance every entity through its rows (time-ordered per entity); return the events.
        ``checked``: what ``check_times`` returned for these rows and ``times`` just before."""
        keys = entity_array(entities)
        flags = np.asarray(flags, dtype=bool)
        scores = np.asarray(scores, dtype=np.float64)
        if not len(keys) == len(flags) == len(scores):
            raise ValueError("entities, flags and scores must have one value per row")
        if times is not None and len(times) != len(keys):
            raise ValueError(f"got {len(times)} times for {len(keys)} rows; send one per row")
        if checked is not None and checked.times is times and checked.slots is not None:
            groups = checked.groups
            slots = (checked.slots if checked.generation == self.generation
                     else self._slots.lookup(group_keys(groups)))
            layout = checked.layout or GroupLayout.of(groups, len(keys))
        else:
            groups = entity_groups(keys)
            slots = self._slots.lookup(group_keys(groups))
            layout = GroupLayout.of(groups, len(keys))
            self._check_times(groups, times, slots, layout)
        if not len(groups):
            return []
        entity_keys = group_keys(groups)
        slots = self._admit(entity_keys, slots)
        self._timed[slots] = int(times is not None)
        self._slots.touch(slots)
        flags = flags & ~np.isnan(scores)  # an unscored row is never flagged
        g = len(groups)
        flagged = np.bincount(layout.codes, weights=flags, minlength=g) > 0
        sizes = np.bincount(layout.codes, minlength=g)
        busy = flagged | self._is_open[slots]
        # nothing can open for the quiet ones: their counts advance for the whole batch at once
        # (their recent flags age by themselves: only flags newer than ``seen - n`` count)
        quiet = ~busy
        q = slots[quiet]
        self._clock[q] += sizes[quiet]
        self._seen[q] += np.bincount(layout.codes, weights=~np.isnan(scores),
                                     minlength=g)[quiet].astype(np.int64)
        times64 = None if times is None else np.asarray(times, dtype=np.float64)
        if times64 is not None:
            self._last_time[q] = times64[layout.last[quiet]]
        events: list[AlertEvent] = []
        # busy entities with one row here (a request of many entities) take their step together
        single = np.flatnonzero(busy & (sizes == 1))
        if len(single):
            self._step(slots[single], layout.first[single], flags, scores, times64,
                       [entity_keys[b] for b in single.tolist()], events)
        for b in ceding(np.flatnonzero(busy & (sizes > 1)).tolist()):
            positions = positions_of(groups, b)
            self._advance(entity_keys[b], int(slots[b]), positions, flags[positions],
                          scores[positions], None if times64 is None else times64[positions],
                          events)
        self._evict()
        events.sort(key=lambda e: e.position)
        return events

    def _step(self, slots: np.ndarray, rows: np.ndarray, flags: np.ndarray, scores: np.ndarray,
              times: np.ndarray | None, entities: list[Hashable],
              events: list[AlertEvent]) -> None:
        """One row for each of ``slots`` (the entities' rows at ``rows``), as ``_advance`` would
        take it, in array operations."""
        p = self.policy
        self._clock[slots] += 1
        t = self._clock[slots].astype(np.float64) if times is None else times[rows]
        if times is not None:
            self._last_time[slots] = t
        score = scores[rows]
        scored = ~np.isnan(score)
        slots, rows, t, score = slots[scored], rows[scored], t[scored], score[scored]
        names = [entities[i] for i in np.flatnonzero(scored).tolist()] if not scored.all() \
            else entities
        flag = flags[rows]
        seen = self._seen[slots] + 1
        self._seen[slots] = seen
        hit = slots[flag]  # each flagged row replaces its entity's oldest recent flag
        self._recent[hit, self._recent[hit].argmin(axis=1)] = seen[flag]
        k_of_n = self._recent[slots].min(axis=1) > seen - p.n
        was_open = self._is_open[slots]
        # open ones: the peak grows, a normal run closes them after m rows
        peak = np.where(was_open, np.maximum(self._peak[slots], score), score)
        run = np.where(flag, 0, self._normal_run[slots] + 1)
        closing = was_open & (run >= p.m)
        closed_at = self._closed_at[slots]
        opening = ~was_open & flag & k_of_n & (
            np.isnan(closed_at) | (t - np.nan_to_num(closed_at) >= p.cooldown))
        self._peak[slots] = np.where(was_open | opening, peak, self._peak[slots])
        self._normal_run[slots] = np.where(was_open, run, np.where(opening, 0,
                                                                   self._normal_run[slots]))
        opened_at = np.where(opening, t, self._opened_at[slots])
        self._opened_at[slots] = opened_at
        self._closed_at[slots] = np.where(closing, t, closed_at)
        self._is_open[slots] = (was_open & ~closing) | opening
        self._open += int(np.count_nonzero(opening)) - int(np.count_nonzero(closing))
        for i in np.flatnonzero(closing | opening).tolist():
            kind = "open" if opening[i] else "close"
            events.append(AlertEvent(str(names[i]), kind, float(t[i]), float(opened_at[i]),
                                     float(peak[i]), int(rows[i])))

    def _advance(
        self,
        entity: Hashable,
        slot: int,
        positions: np.ndarray,
        flags: np.ndarray,
        scores: np.ndarray,
        times: np.ndarray | None,
        events: list[AlertEvent],
    ) -> None:
        """One entity's rows, one at a time (only entities with a flagged row or an open alert
        come here)."""
        p = self.policy
        seen, clock = int(self._seen[slot]), int(self._clock[slot])
        ring = self._recent[slot]
        recent = deque(sorted(v for v in ring.tolist() if v > seen - p.n))
        is_open = bool(self._is_open[slot])
        opened_at, peak = float(self._opened_at[slot]), float(self._peak[slot])
        normal_run = int(self._normal_run[slot])
        closed = float(self._closed_at[slot])
        closed_at = None if np.isnan(closed) else closed
        name = str(entity)
        scored = ~np.isnan(scores)
        for i in range(len(flags)):
            clock += 1
            if not scored[i]:
                continue  # no information: neither flagged nor normal
            seen += 1
            if flags[i]:
                recent.append(seen)
            while recent and recent[0] <= seen - p.n:
                recent.popleft()
            t = float(clock if times is None else times[i])
            if is_open:
                peak = max(peak, float(scores[i]))
                normal_run = 0 if flags[i] else normal_run + 1
                if normal_run >= p.m:
                    is_open = False
                    closed_at = t
                    self._open -= 1
                    events.append(AlertEvent(name, "close", t, opened_at, peak,
                                             int(positions[i])))
            elif flags[i] and len(recent) >= p.k and (
                    closed_at is None or t - closed_at >= p.cooldown):
                is_open = True
                opened_at = t
                peak = float(scores[i])
                normal_run = 0
                self._open += 1
                events.append(AlertEvent(name, "open", t, t, peak, int(positions[i])))
        self._seen[slot], self._clock[slot] = seen, clock
        if times is not None and len(times):
            self._last_time[slot] = times[-1]
        ring[:] = _NO_FLAG
        latest = list(recent)[max(0, len(recent) - p.k):]
        ring[:len(latest)] = latest
        self._is_open[slot] = is_open
        self._opened_at[slot], self._peak[slot] = opened_at, peak
        self._normal_run[slot] = normal_run
        self._closed_at[slot] = np.nan if closed_at is None else closed_at
