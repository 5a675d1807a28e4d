"""A trained detector and its ONNX graph become a published bundle version: threshold calibrated
on validation rows, the scoring policy, the drift reference and the lineage in one manifest.

Plain Python, so the ``model_bundle`` asset is wiring and the same build runs anywhere."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ds_assets.monitoring.reference import REFERENCE_FILE, reference_from_training_set
from ds_assets.telemetry.schema import LABEL, LABEL_KNOWN, TIMESTAMP
from ds_assets.training.contamination import trim_top
from ds_assets.training.datasets import contiguous_segments, split_rows
from ds_assets.training.detectors import TrainedDetector
from ds_assets.training.promotion import FIT_END_KEY, fit_rows_end
from ds_assets.training.thresholds import (
    MIN_ENTITY_ROWS,
    SCOPES,
    ThresholdError,
    calibrate_threshold,
    entity_thresholds,
)
from ds_serving.alerting import AlertPolicy
from ds_serving.bundle import Bundle, write_bundle
from ds_serving.policy import ScoringPolicy
from ds_serving.scoring import Scorer, score_rows
from ds_serving.smoothing import Adaptation, Smoothing, SmoothingError
from ds_serving.windows import entity_groups

ENTITY = "host_id"


def features_of(split: pd.DataFrame, features: list[str]) -> np.ndarray:
    return split[features].to_numpy(np.float32)


def entities_of(split: pd.DataFrame) -> np.ndarray | None:
    """One id per row for per-entity windows: host plus gap-free segment, so windows over the
    normal-only train/val rows never span a removed anomaly."""
    return contiguous_segments(split, ENTITY) if ENTITY in split.columns else None


def row_scores(onnx_bytes: bytes, detector: TrainedDetector, rows: pd.DataFrame) -> np.ndarray:
    """The graph's score of each row (NaN where a temporal model has no full window yet)."""
    scorer = Scorer(onnx_bytes, features=detector.features, threshold=float("inf"),
                    window=detector.window, backend="cpu")
    return score_rows(scorer, features_of(rows, detector.features), entities_of(rows)).scores


def unlabeled_rows(rows: pd.DataFrame) -> np.ndarray:
    """Rows of unlabeled days (their label 0 is an assumption, not a fact)."""
    if LABEL_KNOWN not in rows.columns:
        return np.zeros(len(rows), bool)
    return ~rows[LABEL_KNOWN].to_numpy(bool)


# per-feature [min, max] of the training rows, in the manifest's extra (learned range checks)
VALUE_RANGES = "value_ranges"


def training_ranges(train: pd.DataFrame, features: Sequence[str]) -> dict[str, list[float]]:
    """Each feature's finite [min, max] over the training rows."""
    out: dict[str, list[float]] = {}
    for name in features:
        values = train[name].to_numpy(np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            out[name] = [float(values.min()), float(values.max())]
    return out


def learned_ranges(extra: Mapping[str, Any], factor: float) -> dict[str, tuple[float, float]]:
    """Check ranges from a bundle's training ranges, widened by ``factor`` spans each side."""
    out: dict[str, tuple[float, float]] = {}
    for name, (low, high) in dict(extra.get(VALUE_RANGES) or {}).items():
        span = max(float(high) - float(low), abs(float(high)) * 1e-6, 1e-9)
        out[name] = (float(low) - factor * span, float(high) + factor * span)
    return out


def _entity_thresholds(
    val: pd.DataFrame, val_scores: np.ndarray, share: float, rule: Mapping[str, Any],
    *, quantile: float, margin: float, risk: float, level: float, min_rows: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Each host's threshold by the global rule from its own normal validation rows, the top
    ``share`` of its own unlabeled rows left out (a trim over all hosts would take a noisy
    host's normal tail and leave it a threshold below its normal level)."""
    if ENTITY not in val.columns:
        raise ThresholdError(f"threshold_scope='entity' needs the {ENTITY!r} column in the "
                             "validation rows; use threshold_scope='global'")
    hosts = val[ENTITY].to_numpy()
    unlabeled = unlabeled_rows(val)
    normal = np.ones(len(val), bool)
    if share > 0:
        for _, rows in entity_groups(hosts):
            normal[rows] = trim_top(val_scores[rows], unlabeled[rows], share)
    trimmed = int((~normal).sum())
    if LABEL in val.columns:
        normal &= val[LABEL].to_numpy() == 0

    def calibrate(scores: np.ndarray, _entity: object) -> float:
        return calibrate_threshold(scores, rule=str(rule["rule"]), quantile=quantile,
                                   margin=margin, risk=risk, level=level)[0]

    own, counts = entity_thresholds(val_scores[normal], hosts[normal], calibrate, min_rows)
    return own, {**counts, "entity_trimmed_unlabeled_val_rows": trimmed} if trimmed else counts


def adaptation(scores: np.ndarray, rate: float) -> Adaptation:
    """Level adaptation at ``rate`` referenced to the median of the normal validation
    ``scores`` (NaN: warm-up rows, left out)."""
    finite = np.asarray(scores, np.float64)
    finite = finite[np.isfinite(finite)]
    reference = float(np.median(finite)) if finite.size else float("nan")
    if not reference > 0:
        raise ThresholdError(
            f"adapt_rate={rate:g}: level adaptation scales the threshold by the score level over "
            f"the median normal validation score, which is {reference:g} here ({finite.size} "
            "scored rows); use adapt_rate 0 for this detector")
    try:
        return Adaptation(rate=float(rate), reference=reference)
    except SmoothingError as exc:
        raise ThresholdError(f"adapt_rate: {exc}") from None


def build_bundle(
    models_dir: str | os.PathLike[str],
    model_name: str,
    onnx_bytes: bytes,
    detector: TrainedDetector,
    training_set: pd.DataFrame,
    *,
    threshold_rule: str,
    quantile: float,
    margin: float,
    smoothing: Smoothing,
    alerting: AlertPolicy,
    lineage: Mapping[str, Any],
    feature_groups: Mapping[str, Sequence[str]] | None = None,
    risk: float = 1e-3,
    pot_level: float = 0.98,
    threshold_scope: str = "global",
    min_entity_rows: int = MIN_ENTITY_ROWS,
    adapt_rate: float = 0.0,
) -> Bundle:
    """Calibrate the threshold on the validation split (also per entity with
    ``threshold_scope="entity"``), sketch the drift reference on the train/val scores, and
    publish a new bundle version with the scoring policy and lineage. ``adapt_rate`` > 0 adds
    level adaptation (``smoothing.adapt``) referenced to the median normal validation score."""
    if threshold_scope not in SCOPES:
        raise ThresholdError(f"threshold_scope={threshold_scope!r}: choose one of "
                             f"{', '.join(SCOPES)}")
    if threshold_scope == "entity" and adapt_rate:
        raise ThresholdError(
            f"adapt_rate={adapt_rate:g} with threshold_scope='entity': each host's own threshold "
            "already sits at its own level, and level adaptation would scale it again by that "
            "level over the global median; use one of them (adapt_rate 0, or threshold_scope "
            "global)")
    if threshold_scope == "entity" and threshold_rule == "best_f1":
        raise ThresholdError("threshold_scope='entity' calibrates each entity's normal rows by "
                             "quantile or pot, not 'best_f1': set threshold_rule to quantile "
                             "or pot")
    features = detector.features
    val = split_rows(training_set, "val")
    val_scores = row_scores(onnx_bytes, detector, val)
    # unlabeled validation rows may hide anomalies: the detector's contamination share of them,
    # the highest-scoring, does not calibrate the threshold (as it did not train the model)
    share = float(detector.training_summary.get("contamination", {}).get("share", 0.0))
    calibrated = trim_top(val_scores, unlabeled_rows(val), share)
    threshold, rule = calibrate_threshold(
        val_scores[calibrated],
        val[LABEL].to_numpy()[calibrated] if LABEL in val.columns else None,
        rule=threshold_rule, quantile=quantile, margin=margin, risk=risk, level=pot_level,
    )
    if not calibrated.all():
        rule = {**rule, "trimmed_unlabeled_val_rows": int((~calibrated).sum())}
    own: dict[str, float] = {}
    if threshold_scope == "entity":
        if rule["rule"] == "best_f1":  # threshold_rule auto, with labeled validation rows
            raise ThresholdError(
                "threshold_scope='entity' calibrates each entity's normal rows by quantile or "
                "pot, but threshold_rule='auto' chose best_f1 because the validation rows hold "
                "labeled anomalies: set threshold_rule to quantile or pot")
        own, counts = _entity_thresholds(val, val_scores, share, rule, quantile=quantile,
                                         margin=margin, risk=risk, level=pot_level,
                                         min_rows=min_entity_rows)
        rule = {**rule, **counts}
    if adapt_rate:
        normal = calibrated & (val[LABEL].to_numpy() == 0 if LABEL in val.columns else True)
        smoothing = replace(smoothing, adapt=adaptation(val_scores[normal], adapt_rate))
    policy = ScoringPolicy(threshold, rule, smoothing, alerting, entity_thresholds=own)
    # drift baseline shipped with the bundle: quantile sketches + calibrated thresholds
    train = split_rows(training_set, "train")
    train_scores = row_scores(onnx_bytes, detector, train)
    # the reference is the rows the model learned normal from: the screened-out top share of
    # unlabeled rows (by this model's scores, as for the threshold) is left out of it too
    kept = (trim_top(train_scores, unlabeled_rows(train), share), calibrated)
    reference = reference_from_training_set(training_set, features, train_scores, val_scores,
                                            policy, keep=kept)
    summary = detector.training_summary
    return write_bundle(
        models_dir,
        model_name,
        onnx_bytes,
        kind=detector.kind,
        features=features,
        window=detector.window,
        threshold=policy.threshold,
        threshold_rule={k: v for k, v in policy.threshold_section().items() if k != "value"},
        **policy.sections(),
        lineage={
            "partitions": sorted({str(d) for d in training_set[TIMESTAMP].dt.date.unique()}),
            "rows": {s: int((training_set["split"] == s).sum()) for s in ("train", "val", "test")},
            FIT_END_KEY: fit_rows_end(training_set),
            **lineage,
        },
        metrics={"best_val_loss": float(summary["best_val_loss"])},
        extra_files={REFERENCE_FILE: reference.to_json_bytes()},
        feature_groups=feature_groups,
        extra={"normalization": {"mean": detector.mean.tolist(), "std": detector.std.tolist()},
               VALUE_RANGES: training_ranges(train, features),
               "detector": {"family": detector.family, "params": summary["params"]},
               "training": {k: summary[k] for k in ("seed", "epochs_run", "best_epoch",
                                                    "device", "wall_time_s", "train_rows",
                                                    "val_rows", "loss_curve")}},
    )
