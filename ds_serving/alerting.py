"""Per-entity alert state: hysteresis and cooldown, shared by the gRPC scorer and the alerts asset.

An alert opens when at least ``k`` of an entity's last ``n`` rows are flagged, closes after ``m``
consecutive normal rows, and will not re-open until ``cooldown`` has passed since it closed
(storm control). Time is whatever the caller passes (epoch seconds in practice); without times the
row count stands in, so ``cooldown`` is then measured in rows. An entity keeps one time base: rows
with times and rows without cannot be mixed (``TimeBaseError``), since epoch seconds and row counts
compared with each other would lock alerts out or skip the cooldown. An entity's times never go
back (``TimeOrderError``): a replay of old rows would make ``t - closed_at`` negative and lock
re-opens out, and would join unrelated rows into one temporal window. Rows without a score (NaN:
a temporal model's warm-up) carry no information: they neither flag nor count as normal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, KeysView, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ds_serving.ceding import ceding
from ds_serving.recency import evict_least_recent, put_recent
from ds_serving.windows import (
    CodedGroups,
    EntityGroups,
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
        if self.cooldown < 0:
            raise AlertPolicyError(f"alerting.cooldown must be >= 0, got {self.cooldown}")

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
        return cls(**{key: type(getattr(cls(), key))(value) for key, value in data.items()})


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
    ``update`` with the same ``times``, it spares the grouping and the check a second time."""

    groups: EntityGroups
    times: np.ndarray | None


@dataclass(frozen=True)
class _QuietGroups:
    """Per entity group of a batch, as Python lists: rows, scored rows, whether none is
    flagged, and the time of its last row (None without times)."""

    rows: list[int]
    scored: list[int]
    unflagged: list[bool]
    last_time: list[float] | None

    @classmethod
    def of(cls, groups: EntityGroups, flags: np.ndarray, scores: np.ndarray,
           times: np.ndarray | None) -> _QuietGroups:
        g = len(groups)
        if isinstance(groups, CodedGroups):
            code = groups.codes  # each row's group
        else:
            code = np.empty(len(flags), dtype=np.intp)
            for i, (_, positions) in enumerate(groups):
                code[positions] = i
        sizes = np.bincount(code, minlength=g)
        scored = np.bincount(code, weights=~np.isnan(scores), minlength=g)
        flagged = np.bincount(code, weights=flags, minlength=g)
        last_time = None
        if times is not None:  # the time of each group's last row
            last = np.zeros(g, dtype=np.intp)
            np.maximum.at(last, code, np.arange(len(code)))
            last_time = np.asarray(times, dtype=np.float64)[last].tolist()
        return cls(sizes.tolist(), scored.astype(np.intp).tolist(), (flagged == 0).tolist(),
                   last_time)


@dataclass
class _EntityState:
    seen: int = 0  # scored rows (the k-of-n window counts these)
    clock: int = 0  # all rows: the time base when no times are sent
    timed: bool | None = None  # whether this entity's rows come with times
    last_time: float | None = None  # time of the entity's latest row (timed entities)
    recent: deque[int] = field(default_factory=deque)  # row numbers of flagged rows in last n
    open: bool = False
    opened_at: float = 0.0
    peak: float = float("-inf")
    normal_run: int = 0
    closed_at: float | None = None


class AlertTracker:
    """Feeds scored rows per entity through an ``AlertPolicy`` and emits open/close events."""

    def __init__(self, policy: AlertPolicy, max_entities: int = 100_000) -> None:
        self.policy = policy
        self.max_entities = max_entities
        self._state: dict[Hashable, _EntityState] = {}
        self._open = 0  # kept in step with the states so reading it costs nothing

    def entity_keys(self) -> KeysView[Hashable]:
        """The entities holding state now (live view)."""
        return self._state.keys()

    def open_count(self) -> int:
        return self._open

    def adopt(self, other: AlertTracker) -> None:
        """Take over ``other``'s per-entity state (hot reload to a new policy): open alerts stay
        open, cooldowns and time bases carry on, and ``other`` is left empty."""
        for key, state in other._state.items():
            old = self._state.pop(key, None)
            if old is not None and old.open:
                self._open -= 1
            self._state[key] = state
            self._open += int(state.open)
        other._state = {}
        other._open = 0
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
        checked = CheckedTimes(entity_groups(entities) if groups is None else groups, times)
        self._check_times(checked.groups, times)
        return checked

    def _check_times(self, groups: EntityGroups, times: np.ndarray | None) -> None:
        timed = times is not None
        for g, key in enumerate(ceding(group_keys(groups))):
            state = self._state.get(key)
            if state is not None and state.timed is not None and state.timed != timed:
                if state.timed:
                    raise TimeBaseError(
                        f"timestamps: entity {quoted(key)} was sent with timestamps before; "
                        "send them on every request"
                    )
                raise TimeBaseError(
                    f"timestamps: entity {quoted(key)} was sent without timestamps before; "
                    "keep sending none (epoch seconds and row counts cannot be mixed)"
                )
            if times is None:
                continue
            positions = positions_of(groups, g)
            row_times = np.asarray(times, dtype=np.float64)[positions]
            last = None if state is None else state.last_time
            seq = row_times if last is None else np.concatenate(([last], row_times))
            back = np.flatnonzero(np.diff(seq) < 0)
            if back.size:
                j = int(back[0])  # seq[j + 1] < seq[j]
                i = j + (1 if last is None else 0)  # position of seq[j + 1] in row_times
                row, at, before = int(positions[i]), float(row_times[i]), float(seq[j])
                raise TimeOrderError(
                    f"timestamps: entity {quoted(key)} row {row} at {at:.3f} is earlier than "
                    f"its previous row at {before:.3f}; send each entity's rows in time order "
                    "(replaying old rows needs new entity ids or a restarted scorer)"
                )

    def _evict(self) -> None:
        for dropped in evict_least_recent(self._state, self.max_entities):
            self._open -= int(dropped.open)

    def is_open(self, entity: Hashable) -> bool:
        state = self._state.get(entity)
        return bool(state and state.open)

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
        timed = times is not None
        if checked is not None and checked.times is times:
            groups = checked.groups
        else:
            groups = entity_groups(keys)
            self._check_times(groups, times)
        flags = flags & ~np.isnan(scores)  # an unscored row is never flagged
        quiet = _QuietGroups.of(groups, flags, scores, times) if len(groups) > 16 else None
        events: list[AlertEvent] = []
        for g, key in enumerate(ceding(group_keys(groups))):
            state = self._state.get(key) or _EntityState()
            put_recent(self._state, key, state)
            state.timed = timed
            if quiet is not None and not state.open and quiet.unflagged[g]:
                # nothing can open (``_advance``'s fast path, from numbers taken for the whole
                # batch at once: many entities with a row or two each cost a few us apiece)
                if quiet.last_time is not None:
                    state.last_time = quiet.last_time[g]
                state.clock += quiet.rows[g]
                state.seen += quiet.scored[g]
                while state.recent and state.recent[0] <= state.seen - self.policy.n:
                    state.recent.popleft()
                continue
            positions = positions_of(groups, g)
            if times is not None:
                row_times = np.asarray(times, dtype=np.float64)[positions]
                state.last_time = float(row_times[-1])
            else:
                row_times = np.arange(
                    state.clock + 1, state.clock + 1 + len(positions), dtype=np.float64
                )
            state.clock += len(positions)
            was_open = state.open
            self._advance(str(key), state, positions, flags[positions], scores[positions],
                          row_times, events)
            self._open += int(state.open) - int(was_open)
        self._evict()
        events.sort(key=lambda e: e.position)
        return events

    def _advance(
        self,
        entity: str,
        state: _EntityState,
        positions: np.ndarray,
        flags: np.ndarray,
        scores: np.ndarray,
        times: np.ndarray,
        events: list[AlertEvent],
    ) -> None:
        p = self.policy
        scored = ~np.isnan(scores)
        if not state.open and not flags.any():
            # fast path: nothing can open; only the count of recent flagged rows ages
            state.seen += int(np.count_nonzero(scored))
            while state.recent and state.recent[0] <= state.seen - p.n:
                state.recent.popleft()
            return
        for i in range(len(flags)):
            if not scored[i]:
                continue  # no information: neither flagged nor normal
            state.seen += 1
            if flags[i]:
                state.recent.append(state.seen)
            while state.recent and state.recent[0] <= state.seen - p.n:
                state.recent.popleft()
            t = float(times[i])
            if state.open:
                state.peak = max(state.peak, float(scores[i]))
                state.normal_run = 0 if flags[i] else state.normal_run + 1
                if state.normal_run >= p.m:
                    state.open = False
                    state.closed_at = t
                    events.append(AlertEvent(entity, "close", t, state.opened_at, state.peak,
                                             int(positions[i])))
            elif len(state.recent) >= p.k and (
                state.closed_at is None or t - state.closed_at >= p.cooldown
            ):
                state.open = True
                state.opened_at = t
                state.peak = float(scores[i])
                state.normal_run = 0
                events.append(AlertEvent(entity, "open", t, t, state.peak, int(positions[i])))

    def reset(self) -> None:
        self._state.clear()
        self._open = 0
