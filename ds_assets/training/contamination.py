"""Training on unlabeled days: leave out the rows most likely anomalous, without labels.

Two screens, each recorded with its numbers:

1. The serving champion's flags and the alert episodes around them, per unlabeled day, used
   only where the champion still describes the day: on a day where it flags more than
   ``max_flag_rate`` of the rows (drift: the reason for the retrain) its flags say "different",
   not "anomalous", and that day is left to the second screen.
2. The candidate's own scores: fit, drop the top ``share`` of the unlabeled training rows by
   the fitted model's score, fit again once (the detector asset); the bundle drops the same
   share of unlabeled validation rows before calibrating its threshold. ``share`` is the
   expected contamination of unlabeled days, as in IsolationForest's ``contamination``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ds_assets.monitoring.alerts import ENTITY, alert_events
from ds_assets.telemetry.schema import TIMESTAMP
from ds_assets.training.dataset_scoring import dataset_scorer, lead_in_mismatch, score_frame
from ds_serving.bundle import load_bundle
from ds_serving.scoring import ranked

MAX_FLAG_RATE = 0.05  # above this share of flagged rows the champion does not describe the day
DEFAULT_SHARE = 0.02


def champion_screen(bundle_path: str | Path | None, day: pd.DataFrame,
                    max_flag_rate: float = MAX_FLAG_RATE, before: pd.DataFrame | None = None,
                    ) -> tuple[np.ndarray, dict[str, Any]]:
    """(rows to leave out, what was done and why) for one unlabeled day (rows time-ordered
    within each entity): rows the champion flagged and the rows of its alert episodes, scored
    continuing from ``before`` (the day before, when the window holds it) as the day's
    ``scored_telemetry`` is."""
    none = np.zeros(len(day), bool)
    if bundle_path is None:
        return none, {"used": False, "excluded_rows": 0, "reason": "no champion to screen with"}
    bundle = load_bundle(bundle_path)
    version = bundle.manifest.version
    absent = [f for f in bundle.manifest.features if f not in day.columns]
    if absent:  # the dataset changed its features: the champion cannot describe this day
        return none, {
            "used": False, "champion_version": version, "excluded_rows": 0,
            "reason": f"champion v{version} needs feature(s) {absent} the day lacks, so only "
                      "the candidate's own scores screen it"}
    if before is not None and lead_in_mismatch(list(before.columns), list(day.columns),
                                               bundle.manifest.features):
        before = None  # what the day before cannot give, the day goes without (as scoring)
    scored = score_frame(dataset_scorer(bundle), day, before=before)
    flags = scored["is_anomaly"].to_numpy(bool)
    rate = float(flags.mean()) if len(flags) else 0.0
    if rate > max_flag_rate:
        return none, {
            "used": False, "champion_version": version, "flag_rate": rate, "excluded_rows": 0,
            "reason": f"champion v{version} flags {rate:.1%} of the rows (> {max_flag_rate:.0%}): "
                      "it does not describe this day, so only the candidate's own scores "
                      "screen it"}
    out = flags.copy()
    alerts = pd.DataFrame()
    if ENTITY in scored.columns and TIMESTAMP in scored.columns:
        alerts = alert_events(scored, bundle.manifest.policy.alerting)
        times = pd.to_datetime(scored[TIMESTAMP], utc=True)
        hosts = scored[ENTITY].astype(str)
        for alert in alerts.itertuples(index=False):
            out |= ((hosts == str(alert.entity)) & (times >= alert.start)
                    & (times <= alert.end)).to_numpy()
    return out, {"used": True, "champion_version": version, "flag_rate": rate,
                 "flagged_rows": int(flags.sum()), "alert_episodes": len(alerts),
                 "excluded_rows": int(out.sum()),
                 "reason": f"rows champion v{version} flagged, and their alert episodes"}


def trim_top(scores: np.ndarray, candidates: np.ndarray, share: float) -> np.ndarray:
    """Keep-mask: every row except the top ``share`` of the ``candidates`` (unlabeled rows) by
    score. Unscored rows (temporal warm-up) are kept."""
    scores = np.asarray(scores, np.float64)
    keep = np.ones(len(scores), bool)
    pool = np.asarray(candidates, bool) & ~np.isnan(scores)
    if share <= 0 or not pool.any():
        return keep
    # +inf (a score the graph could not compute) is the most anomalous row: it ranks first,
    # and goes even when ties at the top put the cut on it
    order = ranked(scores)
    cut = float(np.quantile(order[pool], 1.0 - share))
    keep[pool & (order > cut)] = False
    keep[pool & np.isposinf(scores)] = False
    return keep


def check_enough_left(kept: int, total: int, min_share: float, what: str) -> None:
    """Refuse a window where screening left too little to learn from, naming the numbers."""
    from ds_assets.training.datasets import DatasetError

    if total and kept < min_share * total:
        raise DatasetError(
            f"{what}: screening for anomalies left {kept} of {total} unlabeled rows "
            f"({kept / total:.1%} < the minimum {min_share:.0%}); the window is mostly "
            "anomalous or the champion flags most of it. Widen the window (n_partitions), "
            "lower min_kept_share, or label some days")
