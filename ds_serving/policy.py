"""The deployed decision as one typed object: ``score > threshold``, then smoothing (k-of-n,
re-baselining), then alerting (hysteresis, cooldown).

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

    def __post_init__(self) -> None:
        if np.isnan(self.threshold):  # inf is allowed: a scorer that never flags (calibration)
            raise PolicyError(f"threshold must be a number, got {self.threshold!r}")

    @classmethod
    def from_sections(
        cls,
        threshold: float,
        threshold_rule: Mapping[str, Any] | None = None,
        smoothing: Mapping[str, Any] | None = None,
        alerting: Mapping[str, Any] | None = None,
    ) -> ScoringPolicy:
        """Parse the manifest's sections; a bad value raises ``PolicyError`` naming it."""
        try:
            return cls(threshold=float(threshold), threshold_rule=dict(threshold_rule or {}),
                       smoothing=Smoothing.from_dict(smoothing),
                       alerting=AlertPolicy.from_dict(alerting))
        except (SmoothingError, AlertPolicyError, TypeError, ValueError) as exc:
            raise PolicyError(str(exc)) from exc

    def sections(self) -> dict[str, Any]:
        """The manifest's ``smoothing`` and ``alerting`` sections (threshold is stored apart)."""
        return {"smoothing": self.smoothing.to_dict(), "alerting": self.alerting.to_dict()}

    @property
    def is_what_if(self) -> bool:
        return bool(self.overrides)

    def what_if(self, **changes: Any) -> ScoringPolicy:
        """This policy with the non-None ``changes`` applied (``threshold``, ``smoothing``
        (a Smoothing), ``alert_k/n/m``, ``alert_cooldown``), validated, and recorded in
        ``overrides`` so results computed with it say they are not the deployed policy."""
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
        return replace(self, threshold=float(given.get("threshold", self.threshold)),
                       smoothing=given.get("smoothing", self.smoothing), alerting=alerting,
                       overrides={**self.overrides, **recorded})

    def raw_flags(self, scores: np.ndarray) -> np.ndarray:
        """``score > threshold`` alone; a NaN score (no full window yet) is never flagged."""
        return raw_flags(scores, self.threshold)

    def flags(
        self, scores: np.ndarray, entities: Sequence[Hashable] | np.ndarray | None = None
    ) -> np.ndarray:
        """The deployed flags of a table of scores (rows time-ordered within each entity):
        threshold, re-baselining and k-of-n per entity, as the live scorer flags them."""
        return flag_scores(scores, self.threshold, self.smoothing, entities)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": {"value": self.threshold, **self.threshold_rule},
                               **self.sections()}
        if self.overrides:
            out["what_if"] = dict(self.overrides)
        return out

    def describe(self) -> str:
        a = self.alerting
        text = (f"score > {self.threshold:.6g}, {self.smoothing.describe()}, alert {a.k}-of-{a.n} "
                f"close after {a.m}, cooldown {a.cooldown:g}")
        return f"{text} (what-if: {sorted(self.overrides)})" if self.overrides else text
