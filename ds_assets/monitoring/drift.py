"""Drift statistics of a day of telemetry against a compact sketch of the champion's training data.

Why a sketch: the reference travels with the model bundle (``reference.json``), so it must be
small and must not leak raw training rows. Each feature (and the champion's anomaly score) is kept
as quantiles on a fixed probability grid plus mean, std and row count; every statistic below is
computed from that sketch alone.

Why these statistics: on a day of ~10^5..10^6 rows any p-value is tiny for a shift nobody cares
about (and telemetry rows are autocorrelated, which makes p-values optimistic anyway), so the
decision rests on effect sizes that do not grow with the sample size:

* Wasserstein-1 distance between the quantile functions, divided by the reference std
  ("how many reference standard deviations of mass moved");
* PSI (population stability index) on bins whose edges are reference deciles;
* a KS statistic on the reference quantile grid, with Benjamini-Hochberg correction across the
  features, as a guard that the shift is not sampling noise on a small partition.

Thresholds are not magic numbers: :func:`calibrate_thresholds` computes every statistic for each
chunk (calendar day) of the reference window against a reference built from the *other* chunks,
and sets the threshold to ``mean + sigmas * std`` across chunks; the chunk values and the rule are
recorded in the sketch. A feature drifts when its KS test rejects after correction *and* an effect
size exceeds its calibrated threshold.
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
from scipy import stats

from ds_assets.telemetry.schema import LABEL
from ds_assets.training.datasets import split_rows

REFERENCE_FILE = "reference.json"
REFERENCE_FORMAT = 1
N_QUANTILES = 201  # probability grid 0, 0.005, ..., 1
PSI_BINS = 10
PSI_FLOOR = 1e-4  # proportion floor so an empty bin gives a large, finite PSI
SCORE = "__score__"  # key of the anomaly-score sketch among the feature sketches
# the scores at or below the model threshold: what an unlabeled day is compared on (its own
# incidents, far above the threshold, would otherwise read as score drift)
SCORE_BELOW = "__score_below_threshold__"
# an unlabeled day with less than this share of its rows unflagged is compared on every score
MIN_UNFLAGGED_SHARE = 0.5
FEATURE_STATS = ("wasserstein", "psi")
SCORE_STATS = ("wasserstein", "psi", "anomaly_rate_shift")


class DriftError(ValueError):
    """Input that drift statistics cannot use; the message names the feature or file."""


def _probs() -> np.ndarray:
    return np.linspace(0.0, 1.0, N_QUANTILES)


def _finite(values: np.ndarray | Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise DriftError(f"{what}: no finite values to build a distribution from")
    return arr


@dataclass(frozen=True)
class Sketch:
    """One distribution as quantiles on the fixed grid, with mean, std and row count."""

    quantiles: np.ndarray
    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: np.ndarray | Sequence[float], what: str = "values") -> Sketch:
        arr = _finite(values, what)
        return cls(
            quantiles=np.quantile(arr, _probs()),
            mean=float(arr.mean()),
            std=float(arr.std()),
            n=int(arr.size),
        )

    def cdf_at_grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct quantile values and bounds [lower, upper] of the reference CDF there.

        At a continuous value the CDF is the grid probability itself. A value repeated on the
        grid is a point mass (e.g. a rate clipped at 0): the CDF there is at least the largest
        probability with that quantile and below the next grid probability, so the bounds
        differ by one grid step and ties never look like drift.
        """
        values, last, counts = np.unique(
            self.quantiles[::-1], return_index=True, return_counts=True
        )
        lower = _probs()[::-1][last]
        step = 1.0 / (N_QUANTILES - 1)
        upper = np.where(counts > 1, np.minimum(lower + step, 1.0), lower)
        return values, lower, upper

    @property
    def scale(self) -> float:
        """The std, or a tiny positive number for a constant feature (so any move is huge)."""
        return self.std if self.std > 0 else 1e-9 * max(1.0, abs(self.mean))

    def to_dict(self) -> dict[str, Any]:
        return {"quantiles": [float(q) for q in self.quantiles], "mean": self.mean,
                "std": self.std, "n": self.n}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], what: str) -> Sketch:
        try:
            q = np.asarray(data["quantiles"], dtype=np.float64)
            sketch = cls(q, float(data["mean"]), float(data["std"]), int(data["n"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DriftError(f"{what}: not a valid sketch ({exc})") from exc
        if q.shape != (N_QUANTILES,) or not np.all(np.diff(q) >= 0):
            raise DriftError(
                f"{what}: expected {N_QUANTILES} non-decreasing quantiles, got shape {q.shape}"
            )
        return sketch


# --------------------------------------------------------------------------------------------
# statistics of a sample against a sketch


def wasserstein_normalized(sample: np.ndarray, ref: Sketch) -> float:
    """W1 between quantile functions on the grid, in units of the reference std."""
    q = np.quantile(sample, _probs())
    return float(np.trapezoid(np.abs(q - ref.quantiles), _probs()) / ref.scale)


def psi(sample: np.ndarray, ref: Sketch, bins: int = PSI_BINS) -> float:
    """Population stability index on bins bounded by the reference's ``1/bins`` quantiles."""
    idx = np.rint(np.arange(1, bins) * (N_QUANTILES - 1) / bins).astype(int)
    edges = np.unique(ref.quantiles[idx])
    values, ref_cdf, _ = ref.cdf_at_grid()
    # every edge is a grid quantile, so the reference CDF there is exact (point masses included)
    expected_cdf = ref_cdf[np.searchsorted(values, edges)]
    expected = np.diff(np.concatenate([[0.0], expected_cdf, [1.0]]))
    sample_sorted = np.sort(sample)
    actual_cdf = np.searchsorted(sample_sorted, edges, side="right") / sample.size
    actual = np.diff(np.concatenate([[0.0], actual_cdf, [1.0]]))
    e = np.maximum(expected, PSI_FLOOR)
    a = np.maximum(actual, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_grid(sample: np.ndarray, ref: Sketch) -> tuple[float, float]:
    """KS distance on the reference quantile grid and its two-sample asymptotic p-value.

    Restricting the sup to grid points makes D a lower bound of the full KS distance, so the
    test is conservative; the effective size n*m/(n+m) accounts for the reference being a
    sample itself.
    """
    values, lower, upper = ref.cdf_at_grid()
    sample_cdf = np.searchsorted(np.sort(sample), values, side="right") / sample.size
    d = float(np.max(np.maximum(np.maximum(sample_cdf - upper, lower - sample_cdf), 0.0)))
    n_eff = sample.size * ref.n / (sample.size + ref.n)
    return d, float(stats.kstwobign.sf(d * math.sqrt(n_eff)))


def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """BH-adjusted p-values (false discovery rate across the features of one report)."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0:
        return p
    return np.asarray(stats.false_discovery_control(p, method="bh"))


def feature_statistics(sample: np.ndarray, ref: Sketch) -> dict[str, float]:
    return {"wasserstein": wasserstein_normalized(sample, ref), "psi": psi(sample, ref)}


# --------------------------------------------------------------------------------------------
# the reference: sketches + calibrated thresholds


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
    ts = pd.to_datetime(timestamps, utc=True)
    days = ts.dt.floor("D").to_numpy()
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
    ts = pd.to_datetime(timestamps, utc=True)
    order = np.argsort(ts.to_numpy(), kind="stable")
    labels = np.empty(len(ts), dtype=np.int64)
    labels[order] = np.arange(len(ts)) * min_chunks // max(len(ts), 1)
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
            got = feature_statistics(_finite(arr[inside], key), ref)
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


# --------------------------------------------------------------------------------------------
# one day against the reference


@dataclass(frozen=True)
class DriftResult:
    table: pd.DataFrame  # one row per feature
    score: dict[str, Any]  # score-distribution and anomaly-rate shift
    alpha: float

    @property
    def drifted_features(self) -> list[str]:
        return [str(f) for f in self.table.loc[self.table["drifted"], "feature"]]

    @property
    def drifted(self) -> bool:
        return bool(self.drifted_features) or bool(self.score["drifted"])

    @property
    def drift_score(self) -> float:
        """Largest effect size over its threshold, across features (> 1 means over)."""
        return float(self.table["drift_score"].max()) if len(self.table) else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted,
            "drift_score": round(self.drift_score, 4),
            "drifted_features": self.drifted_features,
            "n_drifted_features": len(self.drifted_features),
            "score_drifted": bool(self.score["drifted"]),
            "score_wasserstein": self.score["wasserstein"],
            "anomaly_rate": self.score["anomaly_rate"],
            "reference_anomaly_rate": self.score["reference_anomaly_rate"],
            "alpha": self.alpha,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "features": self.table.to_dict(orient="records"),
                "score": self.score}


def compare(
    reference: DriftReference,
    frame: pd.DataFrame,
    scores: np.ndarray | None = None,
    flags: np.ndarray | None = None,
    alpha: float = 0.05,
    *,
    labeled: bool = True,
) -> DriftResult:
    """Every reference feature of ``frame`` (and the scores/flags, if given) vs the reference.

    ``labeled``: the rows are known normal (a labeled day's anomalies left out, see
    :func:`comparable_rows`). For an unlabeled day see :func:`score_shift`."""
    if not 0 < alpha < 1:
        raise DriftError(f"alpha={alpha}: must be in (0, 1)")
    missing = [f for f in reference.features if f not in frame.columns]
    if missing:
        raise DriftError(
            f"rows lack feature column(s) {missing} that the drift reference has "
            f"({list(reference.features)})"
        )
    rows = []
    for feature in reference.features:
        ref = reference.sketches[feature]
        sample = _finite(frame[feature].to_numpy(np.float64), f"feature {feature!r}")
        got = feature_statistics(sample, ref)
        d, p = ks_grid(sample, ref)
        thr = reference.thresholds[feature]
        rows.append({
            "feature": feature,
            "n": int(sample.size),
            "mean": float(sample.mean()),
            "reference_mean": ref.mean,
            "std_ratio": float(sample.std() / ref.scale),
            "wasserstein": got["wasserstein"],
            "wasserstein_threshold": thr["wasserstein"],
            "psi": got["psi"],
            "psi_threshold": thr["psi"],
            "ks_d": d,
            "ks_p": p,
        })
    table = pd.DataFrame(rows)
    table["ks_p_bh"] = benjamini_hochberg(table["ks_p"].to_numpy())
    ratios = np.maximum(table["wasserstein"] / table["wasserstein_threshold"],
                        table["psi"] / table["psi_threshold"])
    table["drift_score"] = ratios
    table["drifted"] = (table["ks_p_bh"] < alpha) & (ratios > 1.0)
    return DriftResult(table, score_shift(reference, scores, flags, labeled=labeled), alpha)


def score_shift(
    reference: DriftReference, scores: np.ndarray | None, flags: np.ndarray | None,
    *, labeled: bool = True,
) -> dict[str, Any]:
    """Shift of the champion's score distribution and anomaly rate against the reference.

    The reference holds normal rows only. A labeled day is compared on its normal rows. An
    unlabeled day (production) also holds its incidents, whose scores sit far above the
    threshold and move the whole distribution and the flag rate: it is compared on its scores
    at or below the threshold (``flags``: the raw ``score > threshold`` flags) against the same
    part of the reference, and its flag rate is reported but does not decide drift (the
    incidents are the alerts' business; drift is a shift of what is normal)."""
    if not labeled and SCORE_BELOW in reference.sketches:
        return _unlabeled_score_shift(reference, scores, flags)
    thr = reference.thresholds[SCORE]
    out: dict[str, Any] = {
        "reference_anomaly_rate": reference.anomaly_rate,
        "thresholds": thr,
        "wasserstein": float("nan"),
        "psi": float("nan"),
        "anomaly_rate": float("nan"),
        "anomaly_rate_shift": float("nan"),
        "drifted": False,
    }
    if scores is None:
        return out
    sample = _finite(scores, "scores")
    got = feature_statistics(sample, reference.sketches[SCORE])
    out.update(got)
    if flags is not None and len(flags):
        rate = float(np.mean(np.asarray(flags, dtype=np.float64)))
        out["anomaly_rate"] = rate
        out["anomaly_rate_shift"] = abs(rate - reference.anomaly_rate)
    over = [s for s in SCORE_STATS if np.isfinite(out[s]) and out[s] > thr[s]]
    out["over_threshold"] = over
    out["drifted"] = bool(over)
    out["compared"] = "scores of normal rows against the reference scores"
    return out


def _unlabeled_score_shift(
    reference: DriftReference, scores: np.ndarray | None, flags: np.ndarray | None
) -> dict[str, Any]:
    out = score_shift(reference, None, None)
    out["thresholds"] = reference.thresholds[SCORE_BELOW]
    if scores is None:
        return out
    every = np.asarray(scores, dtype=np.float64)
    sample = every
    if flags is not None and len(flags):
        flagged = np.asarray(flags, dtype=bool)
        rate = float(np.mean(flagged))
        out["anomaly_rate"] = rate
        out["anomaly_rate_shift"] = abs(rate - reference.anomaly_rate)
        sample = every[~flagged]
    sample = sample[np.isfinite(sample)]
    if sample.size < MIN_UNFLAGGED_SHARE * np.isfinite(every).sum():
        # most of the day is over the threshold: what is left is no longer the day's normal
        # part, and nothing an incident does looks like this; compare every score
        whole = score_shift(reference, every, flags)
        whole["compared"] = (f"every score (no labels, but under {MIN_UNFLAGGED_SHARE:.0%} of "
                             "the rows are at or below the threshold)")
        return whole
    out["compared"] = ("scores at or below the threshold against the same part of the "
                       "reference (no labels; the flag rate does not decide)")
    out.update(feature_statistics(sample, reference.sketches[SCORE_BELOW]))
    thr = out["thresholds"]
    over = [s for s in FEATURE_STATS if np.isfinite(out[s]) and out[s] > thr[s]]
    out["over_threshold"] = over
    out["drifted"] = bool(over)
    return out


def comparable_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows a day is compared with the reference on: the reference is built from normal rows
    only (labeled anomalies are left out of the training set), so where a ``label`` column
    exists the day's labeled anomalies are left out too. Otherwise a day's ordinary anomaly
    content (1-1.6 % of rows in the demo) moves its score distribution and flag rate by more
    than normal-only calibration allows, and most normal days read as drift. Without labels
    (production) every row is compared, and the score by its unflagged part
    (:func:`score_shift`)."""
    if LABEL in frame.columns:
        return frame[LABEL].to_numpy() == 0
    return np.ones(len(frame), dtype=bool)


def rate_flags(scored: pd.DataFrame) -> np.ndarray:
    """The flags whose rate is compared with the reference anomaly rate: the raw
    ``score > threshold`` flags (``raw_is_anomaly``, present when the bundle smooths its flags),
    else ``is_anomaly``, because the reference rate is built from raw flags too; k-of-n smoothed
    flags have another rate and would read as a rate shift."""
    for column in ("raw_is_anomaly", "is_anomaly"):
        if column in scored.columns:
            return scored[column].to_numpy()
    raise DriftError(
        f"scored rows have neither 'raw_is_anomaly' nor 'is_anomaly' (columns: "
        f"{list(scored.columns)}); expected the output of score_frame"
    )


def consecutive_drift(statuses: Mapping[str, bool], keys_in_order: Sequence[str]) -> list[str]:
    """The run of drifted partitions ending at the last key (a missing partition breaks it)."""
    run: list[str] = []
    for key in reversed(keys_in_order):
        if not statuses.get(key, False):
            break
        run.append(key)
    return run[::-1]


def reference_from_training_set(
    training_set: pd.DataFrame,
    features: Sequence[str],
    train_scores: np.ndarray,
    val_scores: np.ndarray,
    threshold: float,
    *,
    sigmas: float = 3.0,
    lineage: Mapping[str, Any] | None = None,
) -> DriftReference:
    """The drift reference of a new bundle, from its train+val rows (the normal data it learned
    from) as its own graph scored them: ``train_scores`` and ``val_scores`` are row-aligned
    with ``split_rows(training_set, "train")`` and ``split_rows(training_set, "val")``, NaN
    where a temporal model has no full window. Features and the thresholds use every scored
    row, day by day; the score sketch and anomaly rate new days are compared with come from the
    validation rows only (which the model was not fitted on) when they span enough whole days
    to calibrate on, see :func:`build_reference`."""
    parts = []
    for split, scores in (("train", train_scores), ("val", val_scores)):
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
        if not scored.any():
            raise DriftError(
                f"none of the {len(rows)} {split} rows has a score (a temporal model needs runs "
                "of at least `window` consecutive rows per host); train on more days"
            )
        parts.append((rows.loc[scored].reset_index(drop=True), arr[scored]))
    (train, train_kept), (val, val_kept) = parts
    frame = pd.concat([train, val], ignore_index=True)
    scores = np.concatenate([train_kept, val_kept])
    return build_reference(
        frame, list(features), scores, scores > threshold,
        held_out=(val_kept, val_kept > threshold, val["timestamp"]), sigmas=sigmas,
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


def drift_plot_png(result: DriftResult) -> bytes:
    """Bar chart of each feature's drift score (effect size over its calibrated threshold)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result.table
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=90)
    colors = ["tab:red" if d else "tab:blue" for d in table["drifted"]]
    ax.barh(table["feature"], table["drift_score"], color=colors)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="calibrated threshold")
    ax.set_xlabel("max(W1 / threshold, PSI / threshold)")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@dataclass(frozen=True)
class DriftEpisode:
    """A drift episode already requested: the reference version and the drifted days it covers.

    The sensor keeps it in its cursor so a run that keeps going (or grows backwards when days
    are re-scored out of order) is recognised as the same episode however long it lasts.
    """

    reference_version: str
    first: str  # first drifted partition seen in the episode
    last: str  # last drifted partition seen in the episode

    @property
    def key(self) -> str:
        """The episode id (and the run key's suffix): ``<reference version>:<first day>``."""
        return f"{self.reference_version}:{self.first}"

    def continued_by(self, reference_version: str, run: Sequence[str]) -> bool:
        """True if ``run`` (consecutive drifted days) overlaps this episode's days."""
        return (bool(run) and reference_version == self.reference_version
                and run[0] <= self.last and run[-1] >= self.first)

    def widened(self, run: Sequence[str]) -> DriftEpisode:
        """The same episode (same key), its span stretched to cover ``run``."""
        return DriftEpisode(self.reference_version, self.first,
                            max(self.last, run[-1]) if run else self.last)

    def to_dict(self) -> dict[str, str]:
        return {"reference_version": self.reference_version, "first": self.first,
                "last": self.last}

    @classmethod
    def from_cursor(cls, value: Any) -> DriftEpisode | None:
        """From a sensor cursor entry: a dict from :meth:`to_dict`, or the older bare
        ``"<version>:<first day>"`` string (its span is then just the first day)."""
        if not value:
            return None
        if isinstance(value, str):
            version, sep, first = value.rpartition(":")
            if not sep:
                raise DriftError(f"drift sensor cursor episode {value!r}: expected "
                                 "'<version>:<first day>'")
            return cls(version, first, first)
        if isinstance(value, Mapping) and {"reference_version", "first", "last"} <= set(value):
            return cls(str(value["reference_version"]), str(value["first"]), str(value["last"]))
        raise DriftError(f"drift sensor cursor episode {value!r}: expected a dict with "
                         "reference_version, first and last")


@dataclass(frozen=True)
class RetrainPlan:
    """What the drift sensor should do for the latest drift statuses."""

    episode: str | None  # "<reference version>:<first drifted partition>", None = no episode
    drifted_run: list[str]  # the consecutive drifted partitions ending at the latest one
    request: bool  # True only the first time an episode reaches k partitions
    reason: str
    # the requested episode to remember (new, widened or the previous one unchanged)
    requested: DriftEpisode | None = None


def plan_retrain(
    statuses: Mapping[str, bool],
    keys_in_order: Sequence[str],
    reference_version: str,
    k: int,
    requested: DriftEpisode | str | None,
) -> RetrainPlan:
    """One retrain request per drift episode: k consecutive drifted partitions, same reference.

    A run of drifted days that overlaps the episode already requested (same reference version)
    is that episode, however long it goes on and even if it grew backwards (days re-scored out
    of order), so it never requests twice; drift after a non-drifted day, or against a newly
    promoted model, is a new episode. ``keys_in_order`` should reach back past the start of the
    run (the sensor scans back to a non-drifted day), so a new episode is named by its real
    first day and a lost cursor yields the same run key.
    """
    if k < 1:
        raise DriftError(f"k={k}: drift must persist for at least 1 partition")
    previous = (DriftEpisode.from_cursor(requested) if isinstance(requested, str)
                else requested)
    run = consecutive_drift(statuses, keys_in_order)
    if not run:
        return RetrainPlan(None, [], False, "latest partition shows no drift", previous)
    if previous is not None and previous.continued_by(reference_version, run):
        same = previous.widened(run)
        return RetrainPlan(same.key, run, False,
                           f"retrain already requested for episode {same.key} "
                           f"({len(run)} consecutive drifted days)", same)
    episode = DriftEpisode(reference_version, run[0], run[-1])
    if len(run) < k:
        return RetrainPlan(episode.key, run, False,
                           f"drift for {len(run)} of the {k} consecutive partitions needed",
                           previous)
    return RetrainPlan(episode.key, run, True,
                       f"drift persisted for {len(run)} partitions ({run[0]}..{run[-1]}) "
                       f"against model v{reference_version}", episode)
