"""One day of telemetry (and its scores) compared with a bundle's drift reference.

A feature drifts when its KS test rejects after correction *and* an effect size exceeds its
calibrated threshold: on 10^5..10^6 autocorrelated rows any p-value is tiny for a shift nobody
cares about, so the p-value alone never decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ds_assets.monitoring.reference import SCORE, SCORE_BELOW, DriftReference
from ds_assets.monitoring.sketches import (
    FEATURE_STATS,
    DriftError,
    benjamini_hochberg,
    feature_statistics,
    finite_values,
    ks_grid,
)
from ds_assets.telemetry.schema import LABEL
from ds_serving.scoring import ranked

# an unlabeled day with less than this share of its rows unflagged is compared on every score
MIN_UNFLAGGED_SHARE = 0.5
SCORE_STATS = ("wasserstein", "psi", "anomaly_rate_shift")


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
        sample = finite_values(frame[feature].to_numpy(np.float64), f"feature {feature!r}")
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
    # a feature constant in the reference has zero thresholds: a statistic of 0 is no drift
    # (0/0 made NaN, which then stood in the report), any other is an infinite ratio
    ratios = np.maximum(_ratio(table["wasserstein"], table["wasserstein_threshold"]),
                        _ratio(table["psi"], table["psi_threshold"]))
    table["drift_score"] = ratios
    table["drifted"] = (table["ks_p_bh"] < alpha) & (ratios > 1.0)
    return DriftResult(table, score_shift(reference, scores, flags, labeled=labeled), alpha)


def _ratio(value: pd.Series, threshold: pd.Series) -> np.ndarray:
    """value / threshold, where a zero threshold gives 0 for a zero value and inf otherwise."""
    v, t = value.to_numpy(np.float64), threshold.to_numpy(np.float64)
    out = np.where(v > 0, np.inf, 0.0)
    np.divide(v, t, out=out, where=t > 0)
    return out


NOTHING_SCORED = "no scored rows (each entity has fewer rows than the model's window)"


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
    sample = None
    if scores is not None:
        sample = ranked(scores)
        sample = sample[np.isfinite(sample)]
    thr = sized_thresholds(reference, SCORE, 0 if sample is None else sample.size)
    out: dict[str, Any] = {
        "reference_anomaly_rate": reference.anomaly_rate,
        "thresholds": thr,
        "wasserstein": float("nan"),
        "psi": float("nan"),
        "anomaly_rate": float("nan"),
        "anomaly_rate_shift": float("nan"),
        "drifted": False,
    }
    if sample is None:
        return out
    if not sample.size:  # a temporal model's warm-up covers the day: nothing to compare
        out["compared"] = NOTHING_SCORED
        return out
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
    every = ranked(scores)
    sample = every
    if flags is not None and len(flags):
        flagged = np.asarray(flags, dtype=bool)
        rate = float(np.mean(flagged))
        out["anomaly_rate"] = rate
        out["anomaly_rate_shift"] = abs(rate - reference.anomaly_rate)
        sample = every[~flagged]
    sample = sample[np.isfinite(sample)]
    scored = int(np.isfinite(every).sum())
    if not scored:  # a temporal model's warm-up covers the day: nothing to compare
        out["compared"] = NOTHING_SCORED
        return out
    if sample.size < MIN_UNFLAGGED_SHARE * scored:
        # most of the day is over the threshold: what is left is no longer the day's normal
        # part, and nothing an incident does looks like this; compare every score
        whole = score_shift(reference, every, flags)
        whole["compared"] = (f"every score (no labels, but under {MIN_UNFLAGGED_SHARE:.0%} of "
                             "the rows are at or below the threshold)")
        return whole
    out["compared"] = ("scores at or below the threshold against the same part of the "
                       "reference (no labels; the flag rate does not decide)")
    out.update(feature_statistics(sample, reference.sketches[SCORE_BELOW]))
    thr = out["thresholds"] = sized_thresholds(reference, SCORE_BELOW, sample.size)
    over = [s for s in FEATURE_STATS if np.isfinite(out[s]) and out[s] > thr[s]]
    out["over_threshold"] = over
    out["drifted"] = bool(over)
    return out


def sized_thresholds(reference: DriftReference, key: str, n: int) -> dict[str, float]:
    """The score thresholds for a day of ``n`` compared rows. They were calibrated on reference
    chunks (days) of a typical size; a smaller day (a partial day, an outage) differs from the
    reference by sampling alone by more (W1 as 1/sqrt(n), PSI as 1/n, a rate by its binomial
    error), so they widen by as much, and never narrow: one row is no distribution."""
    thr = dict(reference.thresholds[key])
    base = reference.calibration.get("score_baseline") or {}
    chunk = float(base.get("n") or 0) / max(int(base.get("n_chunks") or 0), 1)
    if n <= 0 or chunk <= n:
        return thr
    ratio = chunk / n
    if "wasserstein" in thr:
        thr["wasserstein"] *= math.sqrt(ratio)
    if "psi" in thr:
        thr["psi"] *= ratio
    if "anomaly_rate_shift" in thr:
        p = min(max(reference.anomaly_rate, 1.0 / n), 0.5)
        sigmas = float(reference.calibration.get("sigmas", 3.0))
        thr["anomaly_rate_shift"] = max(thr["anomaly_rate_shift"],
                                        sigmas * math.sqrt(p * (1.0 - p) / n))
    return thr


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
