"""The drift reference a model bundle ships as ``reference.json``: sketches of its training rows.

Besides the sketches it holds thresholds calibrated per statistic as ``mean + sigmas * std`` over
leave-one-day-out comparisons of the reference window, so a threshold reflects real day-to-day
variation rather than a magic number; the chunk values and the rule are recorded with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ds_assets.monitoring.sketches import (
    N_QUANTILES,
    DriftError,
    Sketch,
    feature_statistics,
    finite_values,
)
from ds_assets.telemetry.schema import ENTITY, LABEL, utc_times
from ds_assets.training.datasets import split_rows
from ds_serving.policy import ScoringPolicy

REFERENCE_FILE = "reference.json"
REFERENCE_FORMAT = 1
SCORE = "__score__"  # key of the anomaly-score sketch among the feature sketches
# the scores at or below the model threshold: what an unlabeled day is compared on (its own
# incidents, far above the threshold, would otherwise read as score drift)
SCORE_BELOW = "__score_below_threshold__"
# The score's PSI threshold is never below this: PSI under 0.1 is the conventional "no
# significant shift". The score has no significance test beside its statistics (features need
# KS too), and day-to-day spread over a week of 28k-row days is tiny (thresholds near 0.002),
# so rows the model never fitted and the week's own slow wander (PSI 0.002-0.004 on normal days
# after the window) read as drift, depending on training noise; real drift measured 1.3.
SCORE_PSI_FLOOR = 0.1
# The same for the W1 (in units of the reference std) of the scores at or below the threshold,
# which an unlabeled day is compared on: a tenth of the reference spread. The week's own chunks
# calibrate it near 0.045 (chunk values 0.010-0.035), while normal days after the window
# measured 0.03-0.041 (rows the model never fitted): 90 % of the threshold on the demo's first
# production day. Real drift measured 1.75. A labeled day's score W1 keeps its calibration
# (0.1 would hide a 5 % shift of every score there).
SCORE_W1_FLOOR = 0.1


@dataclass(frozen=True)
class DriftReference:
    """What ``drift_report`` compares against; serialised as the bundle's ``reference.json``."""

    features: tuple[str, ...]
    sketches: dict[str, Sketch]  # per feature, plus SCORE
    anomaly_rate: float
    thresholds: dict[str, dict[str, float]]  # per feature / SCORE: statistic -> threshold
    calibration: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REFERENCE_FORMAT,
            "features": list(self.features),
            "probabilities": {"start": 0.0, "stop": 1.0, "n": N_QUANTILES},
            "sketches": {k: s.to_dict() for k, s in self.sketches.items()},
            "anomaly_rate": self.anomaly_rate,
            "thresholds": self.thresholds,
            "calibration": self.calibration,
            "lineage": self.lineage,
        }

    def to_json_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = REFERENCE_FILE) -> DriftReference:
        if data.get("format") != REFERENCE_FORMAT:
            raise DriftError(
                f"{source}: drift reference format {data.get('format')!r}, expected "
                f"{REFERENCE_FORMAT}; retrain the model to rebuild its reference"
            )
        try:
            features = tuple(str(f) for f in data["features"])
            sketches = {k: Sketch.from_dict(v, f"{source}: sketch {k!r}")
                        for k, v in data["sketches"].items()}
            thresholds = {k: {s: float(t) for s, t in v.items()}
                          for k, v in data["thresholds"].items()}
            rate = float(data["anomaly_rate"])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise DriftError(f"{source}: not a valid drift reference ({exc!r})") from exc
        missing = [k for k in (*features, SCORE) if k not in sketches or k not in thresholds]
        if missing:
            raise DriftError(f"{source}: no sketch/threshold for {missing}")
        return cls(features, sketches, rate, thresholds, dict(data.get("calibration") or {}),
                   dict(data.get("lineage") or {}))

    @classmethod
    def from_json(cls, payload: bytes | str, source: str = REFERENCE_FILE) -> DriftReference:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise DriftError(f"{source}: not JSON ({exc})") from exc
        return cls.from_dict(data, source)


#: Fewest whole days that are calibrated on day by day (else: time slices, or no held-out
#: score baseline).
MIN_DAYS = 4


def day_chunks(timestamps: pd.Series, min_days: int = MIN_DAYS) -> np.ndarray | None:
    """Calendar-day label per row, or None when fewer than ``min_days`` days are full.

    Days holding much less than half of the median day's rows (the partial day at a split
    boundary) are labelled -1 and left out of the calibration.
    """
    days = utc_times(timestamps).astype("datetime64[D]")
    _, codes, counts = np.unique(days, return_inverse=True, return_counts=True)
    full = counts >= 0.5 * np.median(counts)
    if int(full.sum()) < min_days:
        return None
    return np.where(full[codes], codes, -1)


def reference_chunks(timestamps: pd.Series, min_chunks: int = MIN_DAYS) -> np.ndarray:
    """Chunk label per row: the calendar day, or equal time slices when there are few days."""
    days = day_chunks(timestamps, min_chunks)
    if days is not None:
        return days
    order = np.argsort(utc_times(timestamps), kind="stable")
    labels = np.empty(len(order), dtype=np.int64)
    labels[order] = np.arange(len(order)) * min_chunks // max(len(order), 1)
    return labels


def calibrate_thresholds(
    values: Mapping[str, np.ndarray],
    chunks: np.ndarray,
    flags: np.ndarray,
    sigmas: float = 3.0,
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """``mean + sigmas * std`` of each statistic over leave-one-chunk-out comparisons.

    Each chunk (a day of the reference window) is compared with a reference built from the
    other chunks, so the spread includes the real day-to-day variation (weekends, wander) a new
    day will show. With a week of days the spread is estimated from few values; the chunk
    values are recorded so the margin can be judged (and ``sigmas`` raised) from the UI.

    ``values`` maps each feature (and SCORE) to its reference values, row-aligned with
    ``chunks`` (labels; -1 = not used) and ``flags`` (the champion's anomaly flags).
    """
    labels = [c for c in np.unique(chunks) if c >= 0]
    if len(labels) < 3:
        raise DriftError(
            f"calibration needs at least 3 reference chunks, got {len(labels)}; "
            "train on more days (or more rows per day)"
        )
    per_stat: dict[str, dict[str, list[float]]] = {}
    for label in labels:
        inside = chunks == label
        rest = (chunks != label) & (chunks >= 0)
        for key, arr in values.items():
            ref = Sketch.of(arr[rest], key)
            got = feature_statistics(finite_values(arr[inside], key), ref)
            if key == SCORE:
                got["anomaly_rate_shift"] = abs(float(flags[inside].mean() - flags[rest].mean()))
            for stat, v in got.items():
                per_stat.setdefault(key, {}).setdefault(stat, []).append(v)
    n = len(labels)
    thresholds: dict[str, dict[str, float]] = {}
    summary: dict[str, Any] = {}
    for key, by_stat in per_stat.items():
        thresholds[key] = {}
        summary[key] = {}
        for stat, vs in by_stat.items():
            arr = np.asarray(vs)
            mean, std = float(arr.mean()), float(arr.std(ddof=1))
            thresholds[key][stat] = mean + sigmas * std
            summary[key][stat] = {"mean": mean, "std": std, "chunk_values": [float(v) for v in vs]}
    if SCORE in thresholds:
        # A chunk's flag rate varies by sampling alone: a shift under `sigmas` binomial standard
        # errors of a typical chunk is never drift (without a single flagged reference row the
        # chunks' spread is zero, and one flagged row on a new day would count as drift).
        chunk_rows = float(np.median([(chunks == c).sum() for c in labels]))
        rate = max(float(flags[chunks >= 0].mean()), 1.0 / chunk_rows)
        floor = sigmas * math.sqrt(rate * (1.0 - rate) / chunk_rows)
        calibrated = thresholds[SCORE]["anomaly_rate_shift"]
        thresholds[SCORE]["anomaly_rate_shift"] = max(calibrated, floor)
        summary[SCORE]["anomaly_rate_shift"]["sampling_floor"] = floor
    floors = [(SCORE, "psi", SCORE_PSI_FLOOR), (SCORE_BELOW, "psi", SCORE_PSI_FLOOR),
              (SCORE_BELOW, "wasserstein", SCORE_W1_FLOOR)]
    for key, stat, floor in floors:
        if stat in thresholds.get(key, {}):
            thresholds[key][stat] = max(thresholds[key][stat], floor)
            summary[key][stat]["floor"] = floor
    record = {
        "rule": f"mean + {sigmas:g} std of each statistic over {n} leave-one-chunk-out chunks",
        "sigmas": sigmas,
        "n_chunks": len(labels),
        "chunk_rows": [int((chunks == c).sum()) for c in labels],
        "statistics": summary,
    }
    return thresholds, record


def _below(scores: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """The scores of unflagged rows (NaN where flagged, which sketches and statistics skip)."""
    return np.where(np.asarray(flags, dtype=bool), np.nan, scores)


def build_reference(
    frame: pd.DataFrame,
    features: Sequence[str],
    scores: np.ndarray,
    flags: np.ndarray,
    *,
    timestamps: pd.Series | None = None,
    held_out: tuple[np.ndarray, np.ndarray, pd.Series] | None = None,
    sigmas: float = 3.0,
    lineage: Mapping[str, Any] | None = None,
) -> DriftReference:
    """Sketch every feature and the champion's scores on the reference rows, then calibrate.

    ``scores`` and ``flags`` are row-aligned with ``frame``. ``held_out`` = (scores, flags,
    timestamps) of rows the model was not fitted on (the validation split): a model scores its
    training rows lower than new normal rows, so when the held-out rows span enough whole days
    to calibrate on (:func:`day_chunks`), the score sketch, the anomaly rate and their
    thresholds come from them alone. With fewer held-out days, calibrating them day by day is
    not possible, and comparing whole new days with thresholds from part-day slices would be
    wrong; then the score baseline uses every reference row like the features do, and the
    calibration record says so.
    """
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise DriftError(f"reference rows lack feature column(s) {missing}")
    if not len(frame) == len(scores) == len(flags):
        raise DriftError(
            f"got {len(frame)} reference rows, {len(scores)} scores and {len(flags)} flags; "
            "need one of each per row"
        )
    values = {f: frame[f].to_numpy(np.float64) for f in features}
    score_values = np.asarray(scores, dtype=np.float64)
    flags = np.asarray(flags, dtype=np.float64)
    ts = timestamps if timestamps is not None else frame["timestamp"]
    held_days = None if held_out is None else day_chunks(held_out[2])
    if held_out is not None and held_days is not None:
        thresholds, record = calibrate_thresholds(values, reference_chunks(ts), flags, sigmas)
        score_values = np.asarray(held_out[0], dtype=np.float64)
        flags = np.asarray(held_out[1], dtype=np.float64)
        if not len(score_values) == len(flags) == len(held_days):
            raise DriftError(
                f"held_out: got {len(score_values)} scores, {len(flags)} flags and "
                f"{len(held_days)} timestamps; need one of each per row"
            )
        score_thresholds, score_record = calibrate_thresholds(
            {SCORE: score_values, SCORE_BELOW: _below(score_values, flags)}, held_days, flags,
            sigmas,
        )
        thresholds.update(score_thresholds)
        record["statistics"].update(score_record["statistics"])
        record["score_baseline"] = {
            "rows": "held-out (validation) rows", "n": len(score_values),
            "n_chunks": score_record["n_chunks"],
        }
    else:
        thresholds, record = calibrate_thresholds(
            {**values, SCORE: score_values, SCORE_BELOW: _below(score_values, flags)},
            reference_chunks(ts), flags, sigmas,
        )
        why = ("no held-out rows given" if held_out is None else
               f"the held-out rows span fewer than {MIN_DAYS} whole days, too few to "
               "calibrate on")
        record["score_baseline"] = {"rows": f"all reference rows ({why})",
                                    "n": len(score_values), "n_chunks": record["n_chunks"]}
    return DriftReference(
        features=tuple(features),
        sketches={
            **{f: Sketch.of(values[f], f) for f in features},
            SCORE: Sketch.of(score_values, SCORE),
            SCORE_BELOW: Sketch.of(_below(score_values, flags), SCORE_BELOW),
        },
        anomaly_rate=float(flags.mean()),
        thresholds=thresholds,
        calibration=record,
        lineage=dict(lineage or {}),
    )



def reference_from_training_set(
    training_set: pd.DataFrame,
    features: Sequence[str],
    train_scores: np.ndarray,
    val_scores: np.ndarray,
    threshold: float | ScoringPolicy,
    *,
    sigmas: float = 3.0,
    lineage: Mapping[str, Any] | None = None,
    keep: tuple[np.ndarray, np.ndarray] | None = None,
) -> DriftReference:
    """The drift reference of a new bundle, from its train+val rows (the normal data it learned
    from) as its own graph scored them. ``keep``: (train, val) masks of the rows it did learn
    from, when unlabeled rows were screened (the screened-out top share is no reference of
    normal, as it neither trained nor calibrated the model). ``train_scores`` and
    ``val_scores`` are row-aligned
    with ``split_rows(training_set, "train")`` and ``split_rows(training_set, "val")``, NaN
    where a temporal model has no full window. Features and the thresholds use every scored
    row, day by day; the score sketch and anomaly rate new days are compared with come from the
    validation rows only (which the model was not fitted on) when they span enough whole days
    to calibrate on, see :func:`build_reference`. ``threshold``: the model's, or its policy
    (per-entity thresholds flag each host's rows against its own)."""
    parts = []
    for i, (split, scores) in enumerate((("train", train_scores), ("val", val_scores))):
        rows = split_rows(training_set, split)
        arr = np.asarray(scores, dtype=np.float64)
        if len(arr) != len(rows):
            raise DriftError(
                f"got {len(arr)} {split} scores for {len(rows)} {split} rows; score the rows "
                f"of split_rows(training_set, {split!r}) in their order"
            )
        # temporal models leave each segment's first rows unscored; a labeled validation split
        # (best-F1 calibration) also holds anomalies, which are not part of the reference
        scored = np.isfinite(arr)
        if LABEL in rows.columns:
            scored &= rows[LABEL].to_numpy() == 0
        if keep is not None:
            scored &= np.asarray(keep[i], bool)
        if not scored.any():
            raise DriftError(
                f"none of the {len(rows)} {split} rows has a score (a temporal model needs runs "
                "of at least `window` consecutive rows per host); train on more days"
            )
        parts.append((rows.loc[scored].reset_index(drop=True), arr[scored]))
    (train, train_kept), (val, val_kept) = parts
    frame = pd.concat([train, val], ignore_index=True)
    scores = np.concatenate([train_kept, val_kept])
    policy = threshold if isinstance(threshold, ScoringPolicy) else ScoringPolicy(threshold)

    def flags(rows: pd.DataFrame, kept: np.ndarray) -> np.ndarray:
        return policy.raw_flags(kept, rows[ENTITY].to_numpy() if ENTITY in rows else None)

    return build_reference(
        frame, list(features), scores, flags(frame, scores),
        held_out=(val_kept, flags(val, val_kept), val["timestamp"]), sigmas=sigmas,
        lineage=lineage,
    )


def load_reference(bundle_dir: str | Path) -> DriftReference:
    """The drift reference shipped in a bundle directory (checksummed by its manifest)."""
    path = Path(bundle_dir) / REFERENCE_FILE
    if not path.is_file():
        raise DriftError(
            f"{path} does not exist: the bundle has no drift reference (bundles written before "
            "drift monitoring lack it); retrain to publish a bundle with one"
        )
    return DriftReference.from_json(path.read_bytes(), source=str(path))

