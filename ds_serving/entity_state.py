"""What the live scorer remembers per entity, and how it moves to a reloaded model.

Each entity (a host, a device: the request's ``entity_ids``) has a window of its latest rows
(temporal models), a flag-smoothing tail and an alert state, each store bounded to
``max_entities`` (least recently seen evicted). A request reads them (``check_times``,
``stage``) before its graph runs and advances them (``commit``, ``flag``) only after, so a
request that fails or is cancelled leaves them as they were. ``ModelRuntime`` decides when.
"""

from __future__ import annotations

from collections.abc import Hashable, KeysView, Sequence

import numpy as np

from ds_serving.alerting import (
    AlertEvent,
    AlertTracker,
    CheckedTimes,
    TimeBaseError,
    TimeOrderError,
)
from ds_serving.decoding import INVALID_ARGUMENT, Decoded, RequestError
from ds_serving.policy import ScoringPolicy
from ds_serving.slots import ALERTS, SMOOTHING, WINDOWS
from ds_serving.smoothing import StreamingSmoother, raw_flags
from ds_serving.windows import EntityWindows, StagedWindows, group_keys


class EntityState:
    """The per-entity windows, smoothing tails and alerts of one model's policies."""

    def __init__(
        self,
        *,
        window: int | None,
        n_features: int,
        policy: ScoringPolicy,
        max_entities: int,
    ) -> None:
        self.window = window
        self.n_features = n_features
        self.policy = policy
        self.max_entities = max_entities
        self.windows = (
            EntityWindows(window, n_features, max_entities) if window is not None else None
        )
        self.smoother = StreamingSmoother(policy.smoothing, max_entities)
        self.tracker = AlertTracker(policy.alerting, max_entities)
        # taken over by a reloaded model as copies (another window or policy): what is written
        # here now reaches nobody (``take_over``)
        self.moved = False

    @property
    def keeps_state(self) -> bool:
        """Whether scoring needs entity ids: per-entity history (a window, flag smoothing) or
        per-entity thresholds."""
        return (self.windows is not None or self.policy.smoothing.enabled
                or self.policy.per_entity)

    @property
    def description(self) -> str:
        if self.windows is not None:
            return f"a window of the last {self.window} rows"
        smoothing = self.policy.smoothing
        if smoothing.enabled:
            extra = [name for name, on in (("re-baselining", smoothing.rebaseline),
                                            ("level adaptation", smoothing.adapt)) if on]
            if smoothing.n == 1:  # k = n = 1: no k-of-n, only the scores' state
                return " and ".join(extra)
            return (f"{smoothing.k}-of-{smoothing.n} flag smoothing"
                    + (f" with {' and '.join(extra)}" if extra else ""))
        if self.policy.per_entity:
            return f"a threshold per entity, {len(self.policy.entity_thresholds)} calibrated"
        return "none"

    def take_over(self, old: EntityState) -> None:
        """Move ``old``'s state here on a reload. A different window keeps each entity's tail
        (partial history if the new window is bigger); a different smoothing keeps the raw
        flags (a re-baselining episode starts afresh: it belongs to the old model's scores);
        a different alert policy keeps open alerts, cooldowns and time bases."""
        if self.windows is not None and old.windows is not None and (
            old.n_features == self.n_features
        ):
            self.windows = (
                old.windows if old.window == self.window
                else old.windows.resized(self.windows.window)
            )
        smoothing = self.policy.smoothing
        if old.policy.smoothing == smoothing and not smoothing.scores_state:
            self.smoother = old.smoother  # raw-flag tails hold for any threshold
        else:
            self.smoother.adopt(old.smoother)
        if old.policy.alerting == self.policy.alerting:
            self.tracker = old.tracker
        else:
            self.tracker.adopt(old.tracker)
        old.moved = ((old.windows is not None and self.windows is not old.windows)
                     or self.smoother is not old.smoother or self.tracker is not old.tracker)

    def open_alerts(self) -> int:
        return self.tracker.open_count()

    def stores(self) -> dict[str, KeysView[Hashable]]:
        """The entities each store this model keeps holds now (live views; a disabled
        smoother keeps none)."""
        held = {ALERTS: self.tracker.entity_keys()}
        if self.windows is not None:
            held[WINDOWS] = self.windows.entity_keys()
        if self.policy.smoothing.enabled:
            held[SMOOTHING] = self.smoother.entity_keys()
        return held

    def entity_counts(self) -> dict[str, int]:
        """Entities holding state, per store this model keeps."""
        return {store: len(keys) for store, keys in self.stores().items()}

    def new_entities(self, entities: Sequence[Hashable]) -> dict[str, int]:
        """Per store, how many of ``entities`` it does not hold yet."""
        return {store: sum(1 for e in entities if e not in keys)
                for store, keys in self.stores().items()}

    def fits_without_eviction(self, request: Decoded) -> bool:
        """Whether the request's entities fit the per-entity state without evicting any: then
        scoring it in one piece equals scoring its parts in turn (evictions happen at the end of
        a request, so joined parts would see an entity that an earlier part evicted)."""
        if request.groups is None:
            return True
        held = self.stores()
        new = self.new_entities(group_keys(request.groups))  # grouped once, reused by scoring
        return all(len(held[store]) + n <= self.max_entities for store, n in new.items())

    def check_times(self, request: Decoded) -> CheckedTimes | None:
        """Checks that need the per-entity state; run before any of it changes, and handed to
        ``flag`` so the alert update need not check again."""
        if request.entities is None:
            return None
        try:
            return self.tracker.check_times(request.entities, request.times, request.groups)
        except (TimeBaseError, TimeOrderError) as exc:
            raise RequestError(INVALID_ARGUMENT, str(exc)) from None

    def stage(self, request: Decoded) -> StagedWindows | None:
        """The windows a temporal request completes (None for a point model); changes nothing."""
        if self.windows is None:
            return None
        assert request.entities is not None  # decode requires ids for a temporal model
        return self.windows.stage(request.entities, request.rows, request.groups)

    def commit(self, staged: StagedWindows) -> None:
        """Advance the windows by what ``stage`` staged."""
        assert self.windows is not None
        self.windows.commit(staged)

    def touch(self, entities: Sequence[Hashable]) -> None:
        """Make ``entities`` (those holding state) the most recently seen, in this order, in
        every store."""
        if self.windows is not None:
            self.windows.touch(entities)
        self.smoother.touch(entities)
        self.tracker.touch(entities)

    def flag(
        self, request: Decoded, scores: np.ndarray, checked: CheckedTimes | None
    ) -> tuple[np.ndarray, list[AlertEvent], np.ndarray | None]:
        """Flags after smoothing, the alert events they cause, and each row's threshold when
        the policy has one per entity; advances smoothing and alerts."""
        entities = request.entities
        thresholds = self.policy.thresholds(entities, request.groups)
        if self.policy.smoothing.enabled:
            flags = self.smoother.apply_scores(scores, thresholds, entities, request.groups)
        else:
            flags = raw_flags(scores, thresholds)  # unscored (NaN) rows are not flagged
        alerts: list[AlertEvent] = []
        if entities is not None:  # alerts are per entity; anonymous rows skip the per-row work
            alerts = self.tracker.update(entities, flags, scores, request.times, checked)
        return flags, alerts, thresholds if isinstance(thresholds, np.ndarray) else None
