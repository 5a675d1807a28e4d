"""The deployed decision as one typed object: ``score > threshold``, then smoothing (k-of-n,
re-baselining), then alerting (hysteresis, cooldown).

The threshold is one number, or one per entity (``entity_thresholds``, calibrated on each
entity's own validation rows where hosts differ in level); an entity without its own (unseen in
training, too few rows) and rows without entity ids use the global one.

A bundle's manifest stores it as three plain sections (``threshold``, ``smoothing``,
``alerting``); ``Manifest`` parses them once into a ``ScoringPolicy``, and every caller (the live
scorer, dataset scoring, evaluation, the alerts asset, the SKAB benchmark) decides through it, so
offline and live flags and alerts cannot drift apart. A run that wants another policy says so
with ``what_if``, which records what it changed.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ds_serving.alerting import AlertPolicy, AlertPolicyError
from ds_serving.smoothing import Smoothing, SmoothingError, flag_scores, raw_flags
from ds_serving.windows import CodedGroups, EntityGroups, entity_groups, group_keys

ENTITIES_KEY = "entities"  # the manifest's per-entity thresholds, inside its threshold section


class PolicyError(ValueError):
    """A scoring policy that cannot work; the message names the section and value."""


@dataclass(frozen=True)
class ScoringPolicy:
    """Threshold (and the rule that chose it), flag smoothing and alerting of one model."""

    threshold: float
    threshold_rule: Mapping[str, Any] = field(default_factory=dict)
    smoothing: Smoothing = field(default_factory=Smoothing)
    alerting: AlertPolicy = field(default_factory=AlertPolicy)
    # what a what-if run changed relative to the bundle's policy (empty: the deployed policy)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    # entity id -> its own threshold (empty: one threshold for every row)
    entity_thresholds: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if np.isnan(self.threshold):  # inf is allowed: a scorer that never flags (calibration)
            raise PolicyError(f"threshold must be a number, got {self.threshold!r}")
        for entity, value in self.entity_thresholds.items():
            if not isinstance(entity, str) or isinstance(value, bool) or not isinstance(
                    value, int | float) or np.isnan(value):
                raise PolicyError(f"threshold.{ENTITIES_KEY}: entity {entity!r} has threshold "
                                  f"{value!r}; per-entity thresholds map entity ids (text) to "
                                  "numbers")

    @classmethod
    def from_sections(
        cls,
        threshold: float,
        threshold_rule: Mapping[str, Any] | None = None,
        smoothing: Mapping[str, Any] | None = None,
        alerting: Mapping[str, Any] | None = None,
    ) -> ScoringPolicy:
        """Parse the manifest's sections; a bad value raises ``PolicyError`` naming it."""
        rule = dict(threshold_rule or {})
        entities = rule.pop(ENTITIES_KEY, None)
        entities = {} if entities is None else entities
        if not isinstance(entities, Mapping):
            raise PolicyError(f"threshold.{ENTITIES_KEY} must map entity ids to thresholds, got "
                              f"{type(entities).__name__}")
        try:
            return cls(threshold=float(threshold), threshold_rule=rule,
                       smoothing=Smoothing.from_dict(smoothing),
                       alerting=AlertPolicy.from_dict(alerting), entity_thresholds=dict(entities))
        except (SmoothingError, AlertPolicyError, TypeError, ValueError) as exc:
            raise PolicyError(str(exc)) from exc

    def threshold_section(self) -> dict[str, Any]:
        """The manifest's ``threshold`` section: the global value, the rule that chose it and
        the per-entity values, if any."""
        out: dict[str, Any] = {"value": self.threshold, **self.threshold_rule}
        if self.entity_thresholds:
            out[ENTITIES_KEY] = dict(self.entity_thresholds)
        return out

    def sections(self) -> dict[str, Any]:
        """The manifest's ``smoothing`` and ``alerting`` sections (threshold is stored apart)."""
        return {"smoothing": self.smoothing.to_dict(), "alerting": self.alerting.to_dict()}

    @property
    def is_what_if(self) -> bool:
        return bool(self.overrides)

    def what_if(self, **changes: Any) -> ScoringPolicy:
        """This policy with the non-None ``changes`` applied (``threshold``: one for every entity;
        ``smoothing`` (a Smoothing), ``alert_k/n/m``, ``alert_cooldown``), validated, and recorded
        in ``overrides`` so results computed with it say they are not the deployed policy."""
        given = {k: v for k, v in changes.items() if v is not None}
        if not given:
            return self
        unknown = set(given) - {"threshold", "smoothing", "alert_k", "alert_n", "alert_m",
                                "alert_cooldown"}
        if unknown:
            raise PolicyError(f"unknown what-if field(s) {sorted(unknown)}")
        alert = {k.removeprefix("alert_"): v for k, v in given.items() if k.startswith("alert_")}
        try:
            alerting = AlertPolicy.from_dict({**self.alerting.to_dict(), **alert})
        except AlertPolicyError as exc:
            raise PolicyError(str(exc)) from exc
        recorded = {k: (v.to_dict() if isinstance(v, Smoothing) else v) for k, v in given.items()}
        entity_thresholds = {} if "threshold" in given else self.entity_thresholds
        return replace(self, threshold=float(given.get("threshold", self.threshold)),
                       smoothing=given.get("smoothing", self.smoothing), alerting=alerting,
                       overrides={**self.overrides, **recorded},
                       entity_thresholds=entity_thresholds)

    @property
    def per_entity(self) -> bool:
        """Whether rows are flagged against their entity's own threshold."""
        return bool(self.entity_thresholds)

    def threshold_of(self, entity: Hashable) -> float:
        """``entity``'s threshold: its own, else the global one (ids compare as text)."""
        if not self.entity_thresholds or entity is None:
            return self.threshold
        key = entity if isinstance(entity, str) else str(entity)
        return float(self.entity_thresholds.get(key, self.threshold))

    def thresholds(
        self,
        entities: Sequence[Hashable] | np.ndarray | None = None,
        groups: EntityGroups | None = None,
    ) -> float | np.ndarray:
        """Each row's threshold (float64 [n]) for a per-entity policy given entity ids, else
        the one threshold; ``groups``: ``entity_groups(entities)`` when known."""
        if not self.entity_thresholds or entities is None:
            return self.threshold
        groups = entity_groups(entities) if groups is None else groups
        own = np.fromiter((self.threshold_of(key) for key in group_keys(groups)),
                          dtype=np.float64, count=len(groups))
        if isinstance(groups, CodedGroups):
            return own[groups.codes]
        out = np.empty(len(entities), np.float64)
        for value, (_, positions) in zip(own.tolist(), groups, strict=True):
            out[positions] = value
        return out

    def raw_flags(
        self, scores: np.ndarray, entities: Sequence[Hashable] | np.ndarray | None = None
    ) -> np.ndarray:
        """``score > threshold`` alone (each entity's own with ``entities``); a NaN score (no
        full window yet) is never flagged."""
        return raw_flags(scores, self.thresholds(entities))

    def flags(
        self, scores: np.ndarray, entities: Sequence[Hashable] | np.ndarray | None = None
    ) -> np.ndarray:
        """The deployed flags of a table of scores (rows time-ordered within each entity):
        threshold, re-baselining and k-of-n per entity, as the live scorer flags them."""
        groups = None  # grouped once, for the thresholds and the smoothing
        if entities is not None and (self.per_entity or self.smoothing.enabled):
            groups = entity_groups(entities)
        return flag_scores(scores, self.thresholds(entities, groups), self.smoothing, entities,
                           groups)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": self.threshold_section(), **self.sections()}
        if self.overrides:
            out["what_if"] = dict(self.overrides)
        return out

    def describe(self) -> str:
        a = self.alerting
        threshold = (f"the entity's own threshold ({len(self.entity_thresholds)} entities; "
                     f"{self.threshold:.6g} for others)" if self.entity_thresholds
                     else f"{self.threshold:.6g}")
        text = (f"score > {threshold}, {self.smoothing.describe()}, alert {a.k}-of-{a.n} "
                f"close after {a.m}, cooldown {a.cooldown:g}")
        return f"{text} (what-if: {sorted(self.overrides)})" if self.overrides else text
