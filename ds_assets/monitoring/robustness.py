"""How the champion holds up when its input degrades: noise, missing values, outliers, drift.

Why: a detector is only trusted if we know how fast it degrades on the inputs production will
send. Each scenario corrupts a copy of the labeled test rows in a seeded, documented way, scores
it with the same scorer as production, and reports the metrics next to the clean result.

Missing values are refused wherever rows enter: the blocking ``features_not_null`` check stops
a day with gaps before scoring, and the scorer (dataset and gRPC) rejects non-finite features
(``ScoringInputError`` / INVALID_ARGUMENT naming the row and feature), never a silent NaN score.
A producer that must score rows with gaps has to fill them first; the "missing" scenario
measures what the simplest such policy costs: each missing value replaced by the training median
of its feature, from the bundle's drift reference (the 0.5 quantile of its sketch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ds_assets.reporting.evaluation import average_precision, confusion_counts, precision_recall_f1
from ds_assets.telemetry.schema import LABEL
from ds_assets.training.dataset_scoring import score_frame
from ds_serving.scoring import Scorer


class RobustnessError(ValueError):
    """Rows or settings a robustness scenario cannot use."""


@dataclass(frozen=True)
class RobustnessSettings:
    """Scenario sizes, in units of each feature's reference std where a size applies."""

    noise_levels: tuple[float, ...] = (0.1, 0.5)
    missing_fraction: float = 0.05
    outlier_fraction: float = 0.01
    outlier_size: float = 8.0
    drift_shift: float = 1.0
    drift_features: int = 2  # the first n features shift
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.missing_fraction < 1 or not 0 <= self.outlier_fraction < 1:
            raise RobustnessError("missing_fraction and outlier_fraction must be in [0, 1)")
        if any(level < 0 for level in self.noise_levels):
            raise RobustnessError(f"noise_levels {self.noise_levels}: must be >= 0")


def impute_missing(
    frame: pd.DataFrame, features: Sequence[str], medians: Mapping[str, float]
) -> tuple[pd.DataFrame, int]:
    """Replace non-finite feature values by the training median; returns (rows, rows imputed)."""
    lacking = [f for f in features if f not in medians]
    if lacking:
        raise RobustnessError(f"no training median for feature(s) {lacking}")
    out = frame.copy()
    values = out[list(features)].to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        fill = np.array([medians[f] for f in features])
        values[bad] = np.broadcast_to(fill, values.shape)[bad]
        out[list(features)] = values.astype(np.float32)
    return out, int(bad.any(axis=1).sum())


def _metrics(scored: pd.DataFrame) -> dict[str, float]:
    # a temporal model leaves each entity's first W-1 rows unscored; judge only scored rows,
    # exactly as the evaluation report does
    scored = scored.loc[scored["score"].notna()]
    labels = scored[LABEL].to_numpy(np.int64)
    flags = scored["is_anomaly"].to_numpy(bool)
    counts = confusion_counts(labels, flags)
    precision, recall, f1 = precision_recall_f1(counts)
    normal = max(int((labels == 0).sum()), 1)
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "pr_auc": float(average_precision(labels, scored["score"].to_numpy(np.float64))),
        "false_alarm_rate": counts["fp"] / normal,
        "flag_rate": float(flags.mean()),
    }


def robustness_report(
    scorer: Scorer,
    rows: pd.DataFrame,
    scale: Mapping[str, float],
    medians: Mapping[str, float],
    settings: RobustnessSettings = RobustnessSettings(),
) -> pd.DataFrame:
    """One row per scenario (clean first) with precision/recall/F1/PR-AUC/false-alarm rate,
    flagged by the scorer's (the bundle's) scoring policy.

    ``rows`` are labeled rows (the test split); ``scale`` is each feature's reference std and
    ``medians`` its training median (both from the bundle's drift reference).
    """
    features = list(scorer.features)
    if LABEL not in rows.columns:
        raise RobustnessError(f"robustness needs labeled rows (a {LABEL!r} column)")
    rng = np.random.default_rng(settings.seed)
    std = np.array([scale[f] for f in features])
    base = rows.reset_index(drop=True)
    x = base[features].to_numpy(np.float64)

    def with_values(values: np.ndarray) -> pd.DataFrame:
        out = base.copy()
        out[features] = values.astype(np.float32)
        return out

    scenarios: list[tuple[str, str, Callable[[], tuple[pd.DataFrame, int]]]] = [
        ("clean", "the test split as is", lambda: (base, 0)),
    ]
    def noisy(level: float) -> Callable[[], tuple[pd.DataFrame, int]]:
        return lambda: (with_values(x + rng.normal(size=x.shape) * std * level), 0)

    for level in settings.noise_levels:
        scenarios.append((
            f"noise_{level:g}", f"Gaussian noise, std {level:g} x reference std, every value",
            noisy(level),
        ))

    def missing() -> tuple[pd.DataFrame, int]:
        values = x.copy()
        values[rng.random(x.shape) < settings.missing_fraction] = np.nan
        return impute_missing(with_values(values), features, medians)

    scenarios.append((
        "missing", f"{settings.missing_fraction:.0%} of values missing, imputed with the "
        "training median", missing))

    def outliers() -> tuple[pd.DataFrame, int]:
        values = x.copy()
        hit = np.flatnonzero(rng.random(len(x)) < settings.outlier_fraction)
        cols = rng.integers(len(features), size=len(hit))
        values[hit, cols] += settings.outlier_size * std[cols]
        return with_values(values), len(hit)

    scenarios.append((
        "outliers", f"{settings.outlier_fraction:.0%} of rows get one value +"
        f"{settings.outlier_size:g} std (labels unchanged)", outliers))
    n_drift = min(settings.drift_features, len(features))
    shift = np.zeros(len(features))
    shift[:n_drift] = settings.drift_shift
    scenarios.append((
        "drift", f"{features[:n_drift]} shifted by {settings.drift_shift:g} reference std",
        lambda: (with_values(x + shift * std), 0)))

    out = []
    for name, description, make in scenarios:
        frame, touched = make()
        scored = score_frame(scorer, frame)
        out.append({"scenario": name, "description": description, "rows_changed": touched,
                    **_metrics(scored)})
    table = pd.DataFrame(out)
    clean = table.iloc[0]
    table["f1_change"] = table["f1"] - clean["f1"]
    table["pr_auc_change"] = table["pr_auc"] - clean["pr_auc"]
    return table


def summary(table: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers for metadata: clean F1 and the worst scenario."""
    worst = table.iloc[1:].sort_values("f1").iloc[0] if len(table) > 1 else table.iloc[0]
    return {
        "clean_f1": float(table.iloc[0]["f1"]),
        "clean_pr_auc": float(table.iloc[0]["pr_auc"]),
        "worst_scenario": str(worst["scenario"]),
        "worst_f1": float(worst["f1"]),
    }
