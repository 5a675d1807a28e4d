"""Feature groups: named sets of a model's features (plant stages, subsystems) whose
per-feature errors add up, so an explanation names the part of the system that contributes
most. Declared with a dataset, recorded in the bundle manifest, applied alike by dataset scoring,
the evaluation report, the alerts and the gRPC scorer's clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class FeatureGroupError(ValueError):
    """Groups that do not fit the model's features; the message names the group and feature."""


@dataclass(frozen=True)
class FeatureGroups:
    """Every feature in exactly one group: the declared ones, in declaration order, then each
    ungrouped feature as a group of its own (named after it)."""

    names: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]
    declared: Mapping[str, tuple[str, ...]]

    @classmethod
    def build(cls, features: Sequence[str], groups: Mapping[str, Sequence[str]] | None
              ) -> FeatureGroups:
        features = list(features)
        repeated = sorted({f for f in features if features.count(f) > 1})
        if repeated:  # one column per feature: a repeat is a mistake, not a group clash
            raise FeatureGroupError(f"feature(s) {repeated} listed more than once; each "
                                    "feature is one input column")
        index = {f: i for i, f in enumerate(features)}
        seen: dict[str, str] = {}
        names: list[str] = []
        members: list[tuple[int, ...]] = []
        for name, cols in (groups or {}).items():
            if not isinstance(name, str) or not name:
                raise FeatureGroupError(f"feature group name {name!r} must be a non-empty text")
            if not isinstance(cols, list | tuple) or not cols:
                raise FeatureGroupError(f"feature group {name!r} must list one or more features")
            for col in cols:
                if col not in index:
                    raise FeatureGroupError(f"feature group {name!r} names {col!r}, which is not "
                                            f"a feature of the model ({features})")
                if col in seen:
                    raise FeatureGroupError(f"feature {col!r} is in groups {seen[col]!r} and "
                                            f"{name!r}; a feature belongs to one group")
                seen[col] = name
            names.append(name)
            members.append(tuple(index[c] for c in cols))
        for feature in features:
            if feature not in seen:
                if feature in names:
                    raise FeatureGroupError(f"feature group {feature!r} has the name of a "
                                            "feature outside it; rename the group")
                names.append(feature)
                members.append((index[feature],))
        declared = {n: tuple(features[i] for i in m)
                    for n, m in zip(names, members, strict=True) if n in (groups or {})}
        return cls(names=tuple(names), members=tuple(members), declared=declared)

    @property
    def any_declared(self) -> bool:
        return bool(self.declared)

    def to_dict(self) -> dict[str, list[str]]:
        """The declared groups, as the manifest records them."""
        return {name: list(cols) for name, cols in self.declared.items()}

    def matrix(self, n_features: int) -> np.ndarray:
        """[n_features, n_groups] 0/1 membership."""
        out = np.zeros((n_features, len(self.names)), np.float32)
        for g, cols in enumerate(self.members):
            out[list(cols), g] = 1.0
        return out

    def errors(self, feature_errors: np.ndarray) -> np.ndarray:
        """[n, n_groups] summed errors of each group's features (NaN where a row has no score)."""
        return np.asarray(feature_errors, np.float32) @ self.matrix(feature_errors.shape[1])

    def top(self, feature_errors: np.ndarray) -> np.ndarray:
        """The group contributing most to each row's error (object array; None: no score)."""
        summed = self.errors(feature_errors)
        if len(summed) == 0:
            return np.empty(0, dtype=object)
        scored = ~np.isnan(summed).all(axis=1)
        top = np.argmax(np.nan_to_num(summed, nan=-1.0), axis=1)
        named = np.asarray(self.names, dtype=object)[top]
        named[~scored] = None
        return named

    def describe(self) -> dict[str, Any]:
        return {"groups": self.to_dict(), "ungrouped": [
            n for n in self.names if n not in self.declared]}

