"""The promotion gate's evidence: both models on the same held-out rows, with or without labels.

Each model scores the real test rows (its false-alarm burden at its own deployed policy) and a
copy with anomalies injected (:mod:`ds_assets.training.injection`: PR-AUC and event recall on
what was injected). Labeled anomalies among the rows, when there are any, are the evidence the
PR-AUC comparison uses; otherwise the injected ones are. Either way the decision is
:func:`~ds_assets.training.promotion.decide_promotion`: one rule, different evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ds_assets.monitoring.alerts import alert_events
from ds_assets.reporting.evaluation import average_precision, event_metrics
from ds_assets.telemetry.schema import LABEL, LABEL_KNOWN, TIMESTAMP
from ds_assets.training.dataset_scoring import dataset_scorer, score_frame
from ds_assets.training.injection import Injected, inject_anomalies
from ds_assets.training.promotion import Burden, PromotionDecision, decide_promotion
from ds_serving.bundle import load_bundle

ENTITY = "host_id"
INJECTION_SEED = 20261205


def known_labels(rows: pd.DataFrame) -> np.ndarray:
    """Rows whose label is known (all of them for training sets built before unlabeled days
    could be trained on)."""
    if LABEL not in rows.columns:
        return np.zeros(len(rows), bool)
    if LABEL_KNOWN not in rows.columns:
        return np.ones(len(rows), bool)
    return rows[LABEL_KNOWN].to_numpy(bool)


def injected_test_rows(test: pd.DataFrame, features: list[str], seed: int = INJECTION_SEED
                       ) -> Injected:
    """The test rows with anomalies injected (the same seed everywhere, so the gate and the
    evaluation report judge the same copy)."""
    return inject_anomalies(test, features, seed=seed)


@dataclass(frozen=True)
class ModelRun:
    """One model on the real test rows and on the injected copy."""

    version: str
    scores: np.ndarray
    flags: np.ndarray
    injected_scores: np.ndarray
    injected_flags: np.ndarray
    alerts_start: np.ndarray  # alert start times on the real rows (for the per-day burden)
    alerts_entity: np.ndarray

    @classmethod
    def of(cls, bundle_path: str | Path, test: pd.DataFrame, injected: Injected,
           before: pd.DataFrame | None = None) -> ModelRun:
        """The bundle's run on ``test`` and on its injected copy, each continuing from the
        rows ``before`` them (the day before a shadow day) where given."""
        bundle = load_bundle(bundle_path)
        scorer = dataset_scorer(bundle)
        real = score_frame(scorer, test, before=before)
        fake = score_frame(scorer, injected.frame, before=before)
        alerts = alert_events(real, bundle.manifest.policy.alerting) if ENTITY in real else None
        return cls(
            version=bundle.manifest.version,
            scores=real["score"].to_numpy(np.float64),
            flags=real["is_anomaly"].to_numpy(bool),
            injected_scores=fake["score"].to_numpy(np.float64),
            injected_flags=fake["is_anomaly"].to_numpy(bool),
            alerts_start=(pd.to_datetime(alerts["start"], utc=True).to_numpy()
                          if alerts is not None else np.array([], "datetime64[ns]")),
            alerts_entity=(alerts["entity"].astype(str).to_numpy()
                           if alerts is not None else np.array([], object)),
        )


def _pr_auc(labels: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> float:
    y = labels[rows]
    return average_precision(y, scores[rows]) if y.any() else float("nan")


def _entity_days(test: pd.DataFrame, rows: np.ndarray) -> int:
    if TIMESTAMP not in test.columns:
        return 1
    days = pd.to_datetime(test[TIMESTAMP], utc=True).dt.floor("D")[rows]
    entity = test[ENTITY].astype(str)[rows] if ENTITY in test.columns else 0
    return max(int(pd.DataFrame({"d": days, "e": entity}).drop_duplicates().shape[0]), 1)


def measure(run: ModelRun, test: pd.DataFrame, injected: Injected, rows: np.ndarray,
            known_anomalous: np.ndarray) -> dict[str, Any]:
    """A model's numbers over ``rows`` (a mask of the test rows both models are judged on)."""
    normal = rows & ~known_anomalous
    flag_rate = float(run.flags[normal].mean()) if normal.any() else float("nan")
    if TIMESTAMP in test.columns and len(run.alerts_start):
        first = pd.to_datetime(test[TIMESTAMP], utc=True)[rows].min()
        alerts = int((pd.to_datetime(run.alerts_start, utc=True) >= first).sum())
    else:
        alerts = len(run.alerts_start)
    keep = rows & ~known_anomalous  # real anomalies would count against the injected labels
    timestamps = (test[TIMESTAMP].to_numpy("datetime64[ns]")[keep]
                  if TIMESTAMP in test.columns else None)
    entities = test[ENTITY].astype(str).to_numpy()[keep] if ENTITY in test.columns else None
    events = event_metrics(injected.labels[keep], run.injected_flags[keep], timestamps, entities)
    return {
        "version": run.version,
        "flag_rate": flag_rate,
        "alerts_per_entity_day": alerts / _entity_days(test, rows),
        "injected_pr_auc": _pr_auc(injected.labels, run.injected_scores, keep),
        "injected_event_recall": events.event_recall,
        "injected_events": events.n_events,
    }


def judge(
    challenger: ModelRun,
    champion: ModelRun | None,
    test: pd.DataFrame,
    injected: Injected,
    *,
    eligible: np.ndarray | None = None,
    excluded_rows: int = 0,
    min_improvement: float = 0.0,
) -> PromotionDecision:
    """The promotion decision on the test rows both models scored (and ``eligible`` marks:
    after the champion's fit window), from labeled anomalies when some are among them, else
    from the injected ones; both models' numbers on every kind of evidence go into details."""
    other = champion or challenger
    rows = (np.isfinite(challenger.scores) & np.isfinite(other.scores)
            & np.isfinite(challenger.injected_scores) & np.isfinite(other.injected_scores))
    if eligible is not None:
        rows &= np.asarray(eligible, bool)
    known = known_labels(test)
    labels = test[LABEL].to_numpy() == 1 if LABEL in test.columns else np.zeros(len(test), bool)
    known_anomalous = known & labels
    labeled_rows = rows & known
    evidence = "labels" if known_anomalous[rows].any() else "injected"
    numbers = {"challenger": measure(challenger, test, injected, rows, known_anomalous)}
    if champion is not None:
        numbers["champion"] = measure(champion, test, injected, rows, known_anomalous)
    for side, run in (("challenger", challenger), ("champion", champion)):
        if run is not None:
            numbers[side]["labeled_pr_auc"] = _pr_auc(labels, run.scores, labeled_rows)
    key = "labeled_pr_auc" if evidence == "labels" else "injected_pr_auc"
    details = {
        "evidence": evidence,
        "compared_rows": int(rows.sum()),
        "labeled_rows": int(labeled_rows.sum()),
        "labeled_anomalies": int(known_anomalous[rows].sum()),
        "injected": {"seed": INJECTION_SEED, "events": injected.events,
                     "types": injected.counts()},
        **numbers,
    }

    def burden(side: str) -> Burden | None:
        if side not in numbers or not np.isfinite(numbers[side]["flag_rate"]):
            return None
        return Burden(numbers[side]["flag_rate"], numbers[side]["alerts_per_entity_day"])

    return decide_promotion(
        challenger.version, numbers["challenger"][key],
        champion.version if champion is not None else None,
        numbers["champion"][key] if champion is not None else None,
        min_improvement=min_improvement, compared_rows=int(rows.sum()),
        excluded_rows=excluded_rows, evidence=evidence,
        challenger_burden=burden("challenger"), champion_burden=burden("champion"),
        details=details,
    )
