"""Anomalies injected into real rows, so models can be compared where nobody labeled anything.

The six anomaly types of the synthetic generator (spike, level shift, stuck sensor, noise
burst, correlation break, slow drift), applied on a copy of the rows on each entity's own
scale (robust standard deviation per feature), at seeded positions. The label-free promotion
gate and the evaluation of an unlabeled test split both use it, with the same seed, so their
numbers agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

INJECTED_TYPES = ("spike", "level_shift", "stuck_sensor", "noise_burst", "correlation_break",
                  "slow_drift")
NONE = "none"
ENTITY = "host_id"


@dataclass(frozen=True)
class Injected:
    """The rows with anomalies injected, and what was injected where (row-aligned)."""

    frame: pd.DataFrame
    labels: np.ndarray  # int8, 1 inside an injected event
    types: np.ndarray  # object, the event's type or "none"
    kinds: tuple[str, ...]  # one per event

    @property
    def events(self) -> int:
        return len(self.kinds)

    def counts(self) -> dict[str, int]:
        """Events per type."""
        return {k: self.kinds.count(k) for k in INJECTED_TYPES if k in self.kinds}


def robust_scale(values: np.ndarray) -> np.ndarray:
    """Per-column scale: 1.4826 x MAD, else the standard deviation, else 1."""
    med = np.nanmedian(values, axis=0)
    scale = 1.4826 * np.nanmedian(np.abs(values - med), axis=0)
    std = np.nanstd(values, axis=0)
    scale = np.where(scale > 0, scale, std)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def inject_anomalies(
    rows: pd.DataFrame,
    features: Sequence[str],
    *,
    seed: int = 0,
    events_per_entity: int = 4,
    length: tuple[int, int] = (5, 30),
) -> Injected:
    """A copy of ``rows`` (time-ordered within each entity) with ``events_per_entity`` events per
    entity, each in its own slice of that entity's rows so events never overlap. Types cycle
    through :data:`INJECTED_TYPES` in a seeded order (correlation breaks need two features)."""
    rng = np.random.default_rng(seed)
    features = list(features)
    values = rows[features].to_numpy(np.float64, copy=True)
    labels = np.zeros(len(rows), np.int8)
    types = np.full(len(rows), NONE, dtype=object)
    kinds = [k for k in INJECTED_TYPES if k != "correlation_break" or len(features) > 1]
    order = list(rng.permutation(kinds))
    keys = rows[ENTITY].astype(str).to_numpy() if ENTITY in rows.columns else np.zeros(len(rows))
    injected: list[str] = []
    for key in pd.unique(keys):
        at = np.flatnonzero(keys == key)
        scale = robust_scale(values[at])
        slot = len(at) // max(events_per_entity, 1)
        if slot < 4:
            continue
        for i in range(events_per_entity):
            span = int(rng.integers(length[0], length[1] + 1))
            span = max(2, min(span, slot // 2))
            start = i * slot + 1 + int(rng.integers(0, max(slot - span - 1, 1)))
            where = at[start:start + span]
            kind = str(order[len(injected) % len(order)])
            _apply(rng, kind, values, where, at, scale, before=int(at[start - 1]))
            labels[where] = 1
            types[where] = kind
            injected.append(kind)
    out = rows.copy()
    for j, name in enumerate(features):
        out[name] = values[:, j].astype(rows[name].dtype, copy=False)
    return Injected(out, labels, types, tuple(injected))


def _columns(rng: np.random.Generator, n_features: int, low: int, high: int) -> np.ndarray:
    return rng.choice(n_features, min(int(rng.integers(low, high + 1)), n_features),
                      replace=False)


def _apply(rng: np.random.Generator, kind: str, values: np.ndarray, where: np.ndarray,
           entity_rows: np.ndarray, scale: np.ndarray, before: int) -> None:
    """One event's effect, in place, on ``values[where]`` (magnitudes as in the generator);
    ``before``: the entity's row just before the event (rows of other entities interleave)."""
    n_features = values.shape[1]
    sign = rng.choice([-1.0, 1.0])
    if kind == "spike":
        cols = _columns(rng, n_features, 1, 3)
        values[np.ix_(where, cols)] += rng.uniform(5.0, 10.0, len(cols)) * scale[cols]
    elif kind == "level_shift":
        cols = _columns(rng, n_features, 1, 2)
        values[np.ix_(where, cols)] += sign * rng.uniform(3.0, 6.0, len(cols)) * scale[cols]
    elif kind == "stuck_sensor":
        cols = _columns(rng, n_features, 1, 3)
        values[np.ix_(where, cols)] = values[before, cols]  # frozen at its own last value
    elif kind == "noise_burst":
        cols = _columns(rng, n_features, 2, 4)
        noise = rng.standard_normal((len(where), len(cols)))
        values[np.ix_(where, cols)] += noise * rng.uniform(5.0, 8.0) * scale[cols]
    elif kind == "correlation_break":
        # one feature replays another time of the same entity: plausible alone, wrong together
        col = int(rng.integers(0, n_features))
        donors = np.setdiff1d(entity_rows, where)
        offset = int(rng.integers(0, max(len(donors) - len(where), 1)))
        source = donors[offset:offset + len(where)]
        if len(source) == len(where):
            replay = values[source, col].copy()
            # keep the level of the replaced rows, so only the relation to the others breaks
            replay += values[where, col].mean() - replay.mean()
            values[where, col] = replay[::-1]
    elif kind == "slow_drift":
        cols = _columns(rng, n_features, 1, 2)
        ramp = (np.arange(1, len(where) + 1) / len(where))[:, None]
        values[np.ix_(where, cols)] += ramp * sign * rng.uniform(4.0, 6.0, len(cols)) * scale[cols]
    else:  # pragma: no cover - kinds come from INJECTED_TYPES
        raise ValueError(f"unknown anomaly type {kind!r}")
