"""How scores become flags after the threshold: part of a model's scoring policy (manifest
``smoothing``).

**k-of-n.** A row is flagged when at least ``k`` of its entity's last ``n`` raw flags (``score >
threshold``, itself included) are set. ``k=1, n=1`` is no smoothing; ``k = n // 2 + 1`` is a
rolling median over the flags. Rows without a score (temporal warm-up) count as not flagged
and are never flagged themselves.

**Re-baselining after an alarm (optional, ``smoothing.rebaseline``).** Equipment often settles
into a new steady state after an incident (a valve left in another position, a pump replaced),
and a detector trained on the old state then alarms on the new one for as long as it lasts.
With ``Rebaseline(end_ratio=r, raise_factor=h, horizon=H)`` each entity tracks an exponentially
weighted level of its scores (weight ``alpha``). An alarm episode starts at the entity's first
flag (after k-of-n) and ends when the level has fallen to ``peak / r``; the entity's threshold
is then raised to ``max(T, h x level)`` and returns linearly to the calibrated ``T`` over the
next ``H`` rows outside an episode, so a later incident is caught again once it has returned.
A raw flag is ``score > T + excess``. The cost: while the threshold is raised, a second
incident with smaller scores goes unflagged (measured on SKAB in docs/detection.md).

**Level adaptation (optional, ``smoothing.adapt``).** Where the scored rows' normal behaviour
is a new realization of what trained the model (a random process, a new operating regime), a
detector that ranks well may score every row above a threshold calibrated on the training
rows. With ``Adaptation(rate, reference)`` each entity tracks a slow level of its log scores
(weight ``rate`` per row, starting at ``reference``, the median normal validation score; a row
moves it as if its score were at most ``clip`` x the level, so a short incident barely moves
it), and a row is judged by ``score / max(1, level / reference)``: the threshold rises with a
persistent rise of the whole score level and never falls below the calibrated one. The cost:
an incident longer than about ``1 / rate`` rows is absorbed into the level. Re-baselining and
k-of-n then work on the adapted scores.

Dataset scoring (``flag_scores`` over a frame) and the live scorer (``StreamingSmoother`` fed
batch by batch) give the same flags for the same rows: both run the same per-entity code, and
the scorer keeps each entity's last ``n - 1`` raw flags (and its re-baselining state).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, KeysView, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ds_serving.ceding import ceding
from ds_serving.counts import whole_number
from ds_serving.recency import evict_least_recent, put_recent
from ds_serving.slots import SMOOTHING, record_evictions
from ds_serving.windows import EntityGroups, GroupLayout, entity_groups, group_keys

#: From this many entities in one batch, k-of-n runs as array operations over all of them
#: (``_k_of_n_groups``) instead of a few numpy calls per entity: 100,000 interleaved hosts
#: cost 1.2M Python-level calls a 3M-row table (docs/benchmarks.md, "Many entities").
MANY_GROUPS = 64


class SmoothingError(ValueError):
    """A smoothing policy that cannot work; the message names the value."""


@dataclass(frozen=True)
class Rebaseline:
    """Raise an entity's threshold after its alarm episode ends, back to ``T`` over ``horizon``
    rows (module docstring)."""

    end_ratio: float  # r: an episode ends when the score level falls to peak / r
    raise_factor: float  # h: the threshold after an episode is max(T, h x level at its end)
    horizon: int  # H: rows outside an episode over which the raised threshold returns to T
    alpha: float = 0.1  # weight of the newest score in the entity's score level (EWMA)

    def __post_init__(self) -> None:
        checks = (
            (self.end_ratio > 1, "end_ratio", self.end_ratio,
             "> 1 (the episode ends when the level falls to peak / end_ratio)"),
            (self.raise_factor >= 1, "raise_factor", self.raise_factor,
             ">= 1 (the threshold is raised to raise_factor x the level at the episode's end)"),
            (self.horizon >= 1 and int(self.horizon) == self.horizon, "horizon", self.horizon,
             "a whole number of rows >= 1"),
            (0 < self.alpha <= 1, "alpha", self.alpha, "in (0, 1]"),
        )
        for ok, name, value, expected in checks:
            if not ok or not math.isfinite(value):
                raise SmoothingError(f"smoothing.rebaseline.{name} must be {expected}, got "
                                     f"{value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"end_ratio": self.end_ratio, "raise_factor": self.raise_factor,
                "horizon": int(self.horizon), "alpha": self.alpha}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rebaseline:
        keys = {"end_ratio", "raise_factor", "horizon", "alpha"}
        unknown = set(data) - keys
        missing = {"end_ratio", "raise_factor", "horizon"} - set(data)
        if unknown or missing:
            raise SmoothingError(
                f"smoothing.rebaseline: unknown key(s) {sorted(unknown)}, missing "
                f"{sorted(missing)}; use {sorted(keys)} (alpha optional)"
            )
        horizon = whole_number(data["horizon"])
        if horizon is None:
            raise SmoothingError(f"smoothing.rebaseline.horizon must be a whole number of rows "
                                 f">= 1, got {data['horizon']!r}")
        return cls(end_ratio=float(data["end_ratio"]), raise_factor=float(data["raise_factor"]),
                   horizon=horizon, alpha=float(data.get("alpha", 0.1)))

    def describe(self) -> str:
        return f"re-baseline r {self.end_ratio:g}, h {self.raise_factor:g}, H {self.horizon}"


@dataclass(frozen=True)
class Adaptation:
    """Judge each entity's scores against its slowly adapting level (module docstring)."""

    rate: float  # weight of each row's (clipped) log score in the entity's level
    reference: float  # the level at calibration: the median normal validation score
    clip: float = 2.0  # a row moves the level as if its score were at most clip x the level

    def __post_init__(self) -> None:
        for name in ("rate", "reference", "clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SmoothingError(f"smoothing.adapt.{name} must be a number, got {value!r}")
        checks = (
            (0 < self.rate <= 1, "rate", self.rate, "in (0, 1] (the weight of each row)"),
            (self.reference > 0, "reference", self.reference,
             "> 0 (the median normal validation score; a detector whose median score is 0 "
             "cannot use level adaptation)"),
            (self.clip > 1, "clip", self.clip, "> 1"),
        )
        for ok, name, value, expected in checks:  # numbers by now (bools refused above)
            if not ok or not math.isfinite(value):
                raise SmoothingError(f"smoothing.adapt.{name} must be {expected}, got "
                                     f"{value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "reference": self.reference, "clip": self.clip}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Adaptation:
        keys = {"rate", "reference", "clip"}
        unknown, missing = set(data) - keys, {"rate", "reference"} - set(data)
        if unknown or missing:
            raise SmoothingError(f"smoothing.adapt: unknown key(s) {sorted(unknown)}, missing "
                                 f"{sorted(missing)}; use {sorted(keys)} (clip optional)")
        return cls(rate=data["rate"], reference=data["reference"], clip=data.get("clip", 2.0))

    def describe(self) -> str:
        return f"level adaptation rate {self.rate:g}"

    def scaled(self, scores: np.ndarray, level: float) -> tuple[np.ndarray, float]:
        """One entity's next ``scores``, each over its level factor max(1, level / reference)
        from the rows before it, and the entity's log level after them (``level``: NaN for an
        entity not seen yet). NaN stays NaN and moves nothing; +inf stays +inf."""
        values = np.asarray(scores, dtype=np.float64)
        log_ref = math.log(self.reference)
        floor = log_ref + _LEVEL_FLOOR
        with np.errstate(divide="ignore", invalid="ignore"):
            pulls = np.maximum(np.log(np.where(values > 0.0, values, np.exp(floor))), floor)
        pulls[np.isnan(values)] = np.nan
        rate, log_clip = self.rate, math.log(self.clip)
        lvl = log_ref if level != level else level
        before: list[float] = []  # each row's level, from the rows before it
        keep = before.append
        for x in pulls.tolist():  # the one sequential step; the rest is numpy
            keep(lvl)
            if x == x:
                cap = lvl + log_clip
                lvl += rate * ((x if x < cap else cap) - lvl)
        # capped: a long run of +inf raises the level without bound (the factor stays finite)
        excess = np.clip(np.array(before, np.float64) - log_ref, 0.0, _MAX_LOG_FACTOR)
        out = values / np.exp(excess)
        out[np.isposinf(values)] = np.inf
        return out, lvl


# a score at or below 0 (or far under the reference) pulls the level as if it were
# reference x 1e-3: the level stays finite, and it only matters once above the reference
_LEVEL_FLOOR = math.log(1e-3)
_MAX_LOG_FACTOR = 700.0  # exp(700) ~ 1e304: every finite score is then judged as ~0


def adapted_scores(scores: np.ndarray, entities: Sequence[Hashable] | np.ndarray | None,
                   adapt: Adaptation) -> np.ndarray:
    """A whole table's scores as level adaptation judges them (rows time-ordered within each
    entity, every entity starting at the reference): what ``flag_scores`` compares with the
    threshold under ``smoothing.adapt``."""
    values = np.asarray(scores, dtype=np.float64)
    keys = _keys(entities, len(values), "scores")
    out = np.empty(len(values), np.float64)
    for _, positions in ceding(entity_groups(keys)):
        out[positions] = adapt.scaled(values[positions], math.nan)[0]
    return out


@dataclass(frozen=True)
class Smoothing:
    k: int = 1
    n: int = 1
    rebaseline: Rebaseline | None = None
    adapt: Adaptation | None = None

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
        """Whether flags depend on anything but the row's own score (per-entity state)."""
        return self.n > 1 or self.k > 1 or self.scores_state

    @property
    def scores_state(self) -> bool:
        """Whether each entity keeps state about its scores (re-baselining, level adaptation),
        which belongs to one model's score scale."""
        return self.rebaseline is not None or self.adapt is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.k, "n": self.n}
        if self.rebaseline is not None:
            out["rebaseline"] = self.rebaseline.to_dict()
        if self.adapt is not None:
            out["adapt"] = self.adapt.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Smoothing:
        if not data:
            return cls()
        unknown = set(data) - {"k", "n", "rebaseline", "adapt"}
        if unknown:
            raise SmoothingError(
                f"unknown smoothing key(s) {sorted(unknown)}; use k, n and (optional) "
                "rebaseline, adapt"
            )
        counts = {key: whole_number(data.get(key, 1)) for key in ("k", "n")}
        for key, count in counts.items():
            if count is None:
                raise SmoothingError(f"smoothing.{key} must be a whole number of rows, got "
                                     f"{data[key]!r}")
        rebaseline = data.get("rebaseline")  # {} is a section with every key missing
        adapt = data.get("adapt")
        for name, section in (("rebaseline", rebaseline), ("adapt", adapt)):
            if section is not None and not isinstance(section, Mapping):
                raise SmoothingError(f"smoothing.{name} must be a mapping, got "
                                     f"{type(section).__name__}")
        return cls(k=counts["k"] or 0, n=counts["n"] or 0,
                   rebaseline=None if rebaseline is None else Rebaseline.from_dict(rebaseline),
                   adapt=None if adapt is None else Adaptation.from_dict(adapt))

    def describe(self) -> str:
        text = f"{self.k}-of-{self.n}" if self.n > 1 or self.k > 1 else "no smoothing"
        parts = [text] + [x.describe() for x in (self.rebaseline, self.adapt) if x is not None]
        return ", ".join(parts)


def _k_of_n(history: np.ndarray, smoothing: Smoothing) -> np.ndarray:
    """Smoothed flags for the last ``len(history) - (n-1)`` entries of ``history``."""
    counts = np.cumsum(np.concatenate([[0], history.astype(np.int32)]))
    n = smoothing.n
    return (counts[n:] - counts[:-n]) >= smoothing.k


def raw_flags(scores: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """``score > threshold`` (one threshold, or one per row); a NaN score (no full window yet)
    is not flagged."""
    # NaN > anything is False (and raises no floating-point warning): no mask needed
    return np.greater(np.asarray(scores), threshold)


def smooth_flags(
    raw_flags: np.ndarray,
    smoothing: Smoothing,
    entities: Sequence[Hashable] | np.ndarray | None = None,
) -> np.ndarray:
    """k-of-n smoothed flags for a whole table; rows must be time-ordered within each entity.
    Re-baselining needs the scores themselves: use ``flag_scores``."""
    if smoothing.scores_state:
        raise SmoothingError("a policy with rebaseline or adapt flags scores, not raw flags: "
                             "use flag_scores(scores, threshold, smoothing, entities)")
    if not smoothing.enabled:
        return np.asarray(raw_flags, dtype=bool).copy()
    keys = _keys(entities, len(raw_flags), "flags")
    groups = entity_groups(keys)
    return _fresh(smoothing, groups).apply(raw_flags, keys, groups)


def flag_scores(
    scores: np.ndarray,
    threshold: float | np.ndarray,
    smoothing: Smoothing,
    entities: Sequence[Hashable] | np.ndarray | None = None,
    groups: EntityGroups | None = None,
) -> np.ndarray:
    """The deployed flags of a whole table: threshold, re-baselining and k-of-n, per entity
    (rows time-ordered within each), exactly as the live scorer flags the same rows;
    ``groups``: ``entity_groups(entities)`` when known."""
    if not smoothing.enabled:
        return raw_flags(scores, threshold)
    keys = _keys(entities, len(scores), "scores")
    groups = entity_groups(keys) if groups is None else groups
    return _fresh(smoothing, groups).apply_scores(np.asarray(scores), threshold, keys, groups)


def _keys(entities: Sequence[Hashable] | np.ndarray | None, n: int, what: str) -> np.ndarray:
    """Entity ids as an array, one per row (all rows one entity when None)."""
    keys = np.zeros(n, np.int8) if entities is None else np.asarray(entities)
    if len(keys) != n:
        raise ValueError(f"got {len(keys)} entity ids for {n} {what}; send one per row")
    return keys


def _fresh(smoothing: Smoothing, groups: EntityGroups) -> StreamingSmoother:
    """A smoother with no history and room for every entity of a whole table: flagging the
    table with it is the live scorer's code with nothing evicted."""
    return StreamingSmoother(smoothing, max_entities=max(1, len(groups)))


@dataclass
class _Rebaselined:
    """One entity's state under re-baselining or level adaptation: its last ``n - 1`` raw
    flags, the episode and the adapted level."""

    tail: deque[bool]
    level: float = math.nan  # EWMA of the entity's scores; NaN before its first score
    in_episode: bool = False
    peak: float = 0.0
    excess: float = 0.0  # threshold now = T + excess
    step: float = 0.0  # excess removed per row outside an episode
    adapt_level: float = math.nan  # log level of level adaptation; NaN before the first score
    flagged: int = field(init=False)

    def __post_init__(self) -> None:
        self.flagged = sum(self.tail)


def _advance(
    state: _Rebaselined, scores: list[float], threshold: float, smoothing: Smoothing,
    rule: Rebaseline,
) -> list[bool]:
    """Flags of one entity's next rows (adapted scores, when adapting), advancing its state row
    by row (the threshold of a row depends on the flags before it)."""
    k, keep = smoothing.k, smoothing.n - 1
    alpha, r, h, horizon = rule.alpha, rule.end_ratio, rule.raise_factor, rule.horizon
    tail, flagged = state.tail, state.flagged
    level, in_episode, peak = state.level, state.in_episode, state.peak
    excess, step = state.excess, state.step
    out: list[bool] = []
    for s in scores:
        scored = s == s
        if scored:
            level = s if level != level else level + alpha * (s - level)
        raw = scored and s > threshold + excess
        flag = scored and flagged + raw >= k  # a row without a score is never flagged
        out.append(flag)
        if keep:
            if len(tail) == keep:
                flagged -= tail.popleft()
            tail.append(raw)
            flagged += raw
        if level != level:
            continue
        if in_episode:
            peak = max(peak, level)
            if level <= peak / r:
                in_episode = False
                excess = max(0.0, h * level - threshold)
                step = excess / horizon
        elif flag:
            in_episode, peak = True, level
        elif excess > 0.0:
            excess = max(0.0, excess - step)
    state.flagged, state.level, state.in_episode, state.peak = flagged, level, in_episode, peak
    state.excess, state.step = excess, step
    return out


def _k_of_n_next(tail: np.ndarray, raw: np.ndarray, smoothing: Smoothing
                 ) -> tuple[np.ndarray, np.ndarray]:
    """k-of-n flags of one entity's next raw flags after its last ``n - 1`` (``tail``), and its
    new tail."""
    history = np.concatenate([tail, raw])
    return _k_of_n(history, smoothing), history[len(history) - (smoothing.n - 1):]


def _k_of_n_state(state: _Rebaselined, scores: np.ndarray, threshold: float,
                  smoothing: Smoothing) -> np.ndarray:
    """k-of-n flags of one entity's next (adapted) scores without re-baselining: the row loop
    of ``_advance`` in numpy, keeping the state's raw-flag tail."""
    tail = np.fromiter(state.tail, bool, len(state.tail))
    flags, tail = _k_of_n_next(tail, raw_flags(scores, threshold), smoothing)
    flags &= ~np.isnan(scores)  # a row without a score is never flagged
    if smoothing.n > 1:
        state.tail.extend(tail.tolist())
        state.flagged = int(tail.sum())
    return flags


def _tail_array(value: np.ndarray | _Rebaselined) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else np.fromiter(value.tail, bool)


class StreamingSmoother:
    """Keeps each entity's last ``n - 1`` raw flags (and, with re-baselining, its score level
    and episode) so batches flag like the whole table."""

    def __init__(self, smoothing: Smoothing, max_entities: int = 100_000) -> None:
        self.smoothing = smoothing
        self.max_entities = max_entities
        self._tails: dict[Hashable, Any] = {}  # ndarray of raw flags, or _Rebaselined

    def adopt(self, other: StreamingSmoother) -> None:
        """Take over ``other``'s raw-flag tails (hot reload to another policy): each is cut or
        front-padded with "not flagged" (as in warm-up) to this policy's ``n - 1``. A
        re-baselining episode does not carry over: the new model's scores have their own scale,
        so its level and threshold excess start afresh."""
        if not self.smoothing.enabled:  # nothing to carry; keys kept here would never age out
            other._tails = {}
            return
        keep = self.smoothing.n - 1
        for key, value in other._tails.items():
            history = np.concatenate([np.zeros(keep, dtype=bool), _tail_array(value)])
            put_recent(self._tails, key, self._state(history[len(history) - keep :]))
        other._tails = {}
        self._evict()

    def _k_of_n_groups(self, raw: np.ndarray, groups: EntityGroups) -> np.ndarray:
        """``apply``'s flags and tails for a batch of many entities, as arrays: each row's
        count is its entity's raw flags over the batch's rows up to it (one cumulative sum
        in group order) plus the end of the entity's tail before the batch; tails are stored
        in the groups' order, as the per-entity loop stores them."""
        k, keep = self.smoothing.k, self.smoothing.n - 1
        keys = group_keys(groups)
        layout = GroupLayout.of(groups, len(raw))
        tails = np.zeros((len(keys), keep), dtype=bool)
        get = self._tails.get
        for i in ceding(range(len(keys))):
            tail = get(keys[i])
            if tail is not None:
                tails[i] = tail
        ordered = raw[layout.order].astype(np.int64)  # each group's rows together, in order
        counts = np.concatenate([[0], np.cumsum(ordered)])
        start = np.empty(len(keys), np.intp)  # where each group begins and ends in ``order``
        start[layout.grouped[layout.heads]] = layout.heads
        size = np.bincount(layout.grouped, minlength=len(keys))
        at = np.arange(len(ordered))
        own = at - start[layout.grouped]  # a row's place among its group's rows
        in_batch = counts[at + 1] - counts[np.maximum(at - keep, start[layout.grouped])]
        # the tail's last ``keep - own`` flags still fall in the window of the row
        suffix = np.concatenate([np.cumsum(tails[:, ::-1], axis=1)[:, ::-1],
                                 np.zeros((len(keys), 1), np.int64)], axis=1)
        from_tail = suffix[layout.grouped, np.minimum(own, keep)]
        out = np.zeros(len(raw), dtype=bool)
        out[layout.order] = in_batch + from_tail >= k
        # new tails: the last ``keep`` of (tail, rows); entry i is a row or an old tail entry
        slot = np.arange(keep)[None, :]
        from_rows = size[:, None] + slot >= keep
        row_at = np.clip((start + size)[:, None] - keep + slot, 0, max(len(ordered) - 1, 0))
        old_at = np.minimum(size[:, None] + slot, keep - 1)
        rows = ordered[row_at].astype(bool) if len(ordered) else np.zeros_like(from_rows)
        new = np.where(from_rows, rows, tails[np.arange(len(keys))[:, None], old_at])
        for j in ceding(range(len(keys))):
            put_recent(self._tails, keys[j], new[j].copy())  # a view would pin the batch
        self._evict()
        return out

    def _evict(self) -> None:
        record_evictions(SMOOTHING, len(evict_least_recent(self._tails, self.max_entities)))

    def _state(self, tail: np.ndarray) -> np.ndarray | _Rebaselined:
        if not self.smoothing.scores_state:
            return tail
        return _Rebaselined(deque(tail.tolist(), maxlen=max(1, self.smoothing.n - 1)))

    def touch(self, entities: Sequence[Hashable]) -> None:
        """Make ``entities`` (those with a tail) the most recently seen, in this order."""
        for key in entities:
            if key in self._tails:
                put_recent(self._tails, key, self._tails[key])

    def entity_keys(self) -> KeysView[Hashable]:
        """The entities holding state now (live view)."""
        return self._tails.keys()

    def apply_scores(
        self,
        scores: np.ndarray,
        threshold: float | np.ndarray,
        entities: Sequence[Hashable] | np.ndarray | None = None,
        groups: EntityGroups | None = None,
    ) -> np.ndarray:
        """Flags of a batch from its scores (threshold, re-baselining, k-of-n); ``groups``:
        ``entity_groups(entities)`` when known. ``threshold``: one, or each row's (the same for
        all rows of an entity). A re-baselining state belongs to one model: always pass that
        model's thresholds."""
        if not self.smoothing.scores_state:
            flags = self.apply(raw_flags(scores, threshold), entities, groups)
            flags &= ~np.isnan(scores)  # a row without a score is never flagged
            return flags
        adapt = self.smoothing.adapt
        values = np.asarray(scores, dtype=np.float64)
        keys = _keys(entities, len(values), "scores")
        out = np.zeros(len(values), dtype=bool)
        for key, positions in ceding(entity_groups(keys) if groups is None else groups):
            state = self._tails.get(key)
            if state is None:
                state = self._state(np.zeros(self.smoothing.n - 1, dtype=bool))
            assert isinstance(state, _Rebaselined)  # this policy's states, see adopt
            own = (threshold if isinstance(threshold, float | int)
                   else float(threshold[positions[0]]))
            rows = values[positions]
            if adapt is not None:
                rows, state.adapt_level = adapt.scaled(rows, state.adapt_level)
            if self.smoothing.rebaseline is None:
                out[positions] = _k_of_n_state(state, rows, own, self.smoothing)
            else:
                out[positions] = _advance(state, rows.tolist(), own, self.smoothing,
                                          self.smoothing.rebaseline)
            put_recent(self._tails, key, state)
        self._evict()
        return out

    def apply(
        self,
        raw_flags: np.ndarray,
        entities: Sequence[Hashable] | np.ndarray | None = None,
        groups: EntityGroups | None = None,
    ) -> np.ndarray:
        """k-of-n smoothed flags of a batch of raw flags; ``groups``: ``entity_groups(entities)``
        when known. Re-baselining and level adaptation need scores: ``apply_scores``."""
        if self.smoothing.scores_state:
            raise SmoothingError("a policy with rebaseline or adapt flags scores: use "
                                 "apply_scores")
        raw = np.asarray(raw_flags, dtype=bool)
        if not self.smoothing.enabled:
            return raw.copy()
        keys = _keys(entities, len(raw), "flags")
        keep = self.smoothing.n - 1
        groups = entity_groups(keys) if groups is None else groups
        if keep and len(groups) >= MANY_GROUPS:
            return self._k_of_n_groups(raw, groups)
        out = np.zeros(len(raw), dtype=bool)
        for key, positions in ceding(groups):
            tail = self._tails.get(key)
            if tail is None:
                tail = np.zeros(keep, dtype=bool)
            out[positions], tail = _k_of_n_next(tail, raw[positions], self.smoothing)
            put_recent(self._tails, key, tail)
        self._evict()
        return out
