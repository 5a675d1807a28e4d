"""Bundle building as a plain function: calibration, policy, drift reference, lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ds_assets.monitoring.reference import REFERENCE_FILE, load_reference
from ds_assets.telemetry.generator import GeneratorConfig, generate_day
from ds_assets.telemetry.schema import LABEL_KNOWN
from ds_assets.training.bundling import build_bundle, features_of, row_scores
from ds_assets.training.contamination import trim_top
from ds_assets.training.datasets import build_training_set, normal_rows, split_rows
from ds_assets.training.detectors import DetectorParams, train_detector
from ds_assets.training.export import export_onnx
from ds_assets.training.thresholds import ThresholdError, calibrate_quantile
from ds_serving.alerting import AlertPolicy
from ds_serving.bundle import load_bundle
from ds_serving.policy import ScoringPolicy
from ds_serving.smoothing import Smoothing


def _trained(n_hosts: int = 2) -> tuple[pd.DataFrame, list[str], object]:
    config = GeneratorConfig(n_hosts=n_hosts, interval_seconds=900, seed=3)
    days = {d: generate_day(d, config) for d in ("2026-11-01", "2026-11-02")}
    training_set = build_training_set(days)
    features = [c for c in days["2026-11-01"].columns if c.startswith(("cpu", "mem", "lat"))]
    train, val = split_rows(training_set, "train"), normal_rows(split_rows(training_set, "val"))
    detector = train_detector(DetectorParams(family="pca"), features_of(train, features),
                              features_of(val, features), features)
    return training_set, features, detector


def test_a_trained_detector_becomes_a_bundle_without_dagster(tmp_path: Path) -> None:
    training_set, features, detector = _trained()
    bundle = build_bundle(
        tmp_path / "models", "m", export_onnx(detector), detector, training_set,
        threshold_rule="quantile", quantile=0.99, margin=1.0, smoothing=Smoothing(2, 3),
        alerting=AlertPolicy(k=2, n=4, m=3, cooldown=0.0), lineage={"dagster_run_id": "r1"},
    )
    m = load_bundle(bundle.path).manifest
    assert m.policy.smoothing == Smoothing(2, 3) and m.policy.alerting.k == 2
    assert m.policy.threshold_rule["rule"] == "quantile" and m.threshold > 0
    assert m.lineage["partitions"] == ["2026-11-01", "2026-11-02"]
    assert m.lineage["dagster_run_id"] == "r1" and "fit_rows_end" in m.lineage
    assert REFERENCE_FILE in m.files
    assert load_reference(bundle.path).features == tuple(features)


def _per_entity(tmp_path: Path, training_set: pd.DataFrame, detector: Any, quantile: float
                ) -> tuple[ScoringPolicy, pd.DataFrame, np.ndarray]:
    """A per-entity quantile bundle's policy, its validation rows and their scores."""
    bundle = build_bundle(
        tmp_path / "models", "m", export_onnx(detector), detector, training_set,
        threshold_rule="quantile", quantile=quantile, margin=1.0, smoothing=Smoothing(),
        alerting=AlertPolicy(), lineage={}, threshold_scope="entity", min_entity_rows=5,
    )
    val = split_rows(training_set, "val")
    return (load_bundle(bundle.path).manifest.policy, val,
            row_scores(export_onnx(detector), detector, val))


def test_per_entity_thresholds_come_from_each_hosts_own_validation_rows(tmp_path: Path) -> None:
    training_set, _, detector = _trained(n_hosts=3)
    policy, val, scores = _per_entity(tmp_path, training_set, detector, 0.9)
    normal = val["label"].to_numpy() == 0
    hosts = val["host_id"].to_numpy()
    assert set(policy.entity_thresholds) == set(np.unique(hosts))
    for host, value in policy.entity_thresholds.items():
        assert value == calibrate_quantile(scores[normal & (hosts == host)], 0.9)[0]
    assert policy.threshold == calibrate_quantile(scores[normal], 0.9)[0]
    assert policy.threshold_rule["scope"] == "entity"
    assert policy.threshold_rule["entities_calibrated"] == 3


def test_a_contamination_trim_takes_each_hosts_own_top_rows(tmp_path: Path) -> None:
    """Unlabeled validation rows may hide anomalies: per entity, the top share of each host's
    own rows is left out, not the top share of all rows (a noisy host's normal tail)."""
    training_set, _, detector = _trained(n_hosts=3)
    training_set[LABEL_KNOWN] = False  # unlabeled days
    detector.training_summary["contamination"] = {"share": 0.1}
    policy, val, scores = _per_entity(tmp_path, training_set, detector, 0.95)
    hosts = val["host_id"].to_numpy()
    for host, value in policy.entity_thresholds.items():
        own = scores[hosts == host]
        kept = own[trim_top(own, np.ones(len(own), bool), 0.1)]
        assert value == calibrate_quantile(kept, 0.95)[0]
    assert policy.threshold_rule["entity_trimmed_unlabeled_val_rows"] > 0


def test_the_drift_reference_leaves_out_the_screened_unlabeled_rows(tmp_path: Path) -> None:
    """The top share of unlabeled rows, left out of the fit and the threshold as possible
    anomalies, was still in the drift reference: its feature tails and anomaly rate described
    the anomalies as normal."""
    training_set, features, detector = _trained(n_hosts=2)
    training_set[LABEL_KNOWN] = False
    references = {}
    for share in (0.0, 0.1):
        detector.training_summary["contamination"] = {"share": share}
        bundle = build_bundle(
            tmp_path / f"models{share}", "m", export_onnx(detector), detector, training_set,
            threshold_rule="quantile", quantile=0.95, margin=1.0, smoothing=Smoothing(),
            alerting=AlertPolicy(), lineage={})
        references[share] = load_reference(bundle.path)
    onnx = export_onnx(detector)
    rows = sum(len(split_rows(training_set, s)) for s in ("train", "val"))
    screened = sum(int((~trim_top(row_scores(onnx, detector, split_rows(training_set, s)),
                                  np.ones(len(split_rows(training_set, s)), bool), 0.1)).sum())
                   for s in ("train", "val"))
    assert screened > 0
    assert references[0.1].sketches[features[0]].n == rows - screened
    assert references[0.0].sketches[features[0]].n == rows


@pytest.mark.parametrize(("kw", "match"), [
    ({"threshold_scope": "host"}, r"threshold_scope='host': choose one of global, entity"),
    ({"threshold_scope": "entity", "threshold_rule": "best_f1"},
     r"threshold_scope='entity' calibrates each entity's normal rows by quantile or pot, not "
     r"'best_f1'"),
    ({"threshold_scope": "entity", "threshold_rule": "auto"},
     r"threshold_rule='auto' chose best_f1 because the validation rows hold labeled anomalies"),
])
def test_an_unworkable_threshold_scope_names_the_fix(
    tmp_path: Path, kw: dict[str, str], match: str
) -> None:
    training_set, _, detector = _trained()
    val = training_set.index[training_set["split"] == "val"]
    training_set.loc[val[:3], "label"] = 1  # labeled validation anomalies
    params = {"threshold_rule": "quantile", **kw}
    with pytest.raises(ThresholdError, match=match):
        build_bundle(tmp_path / "models", "m", export_onnx(detector), detector, training_set,
                     quantile=0.9, margin=1.0, smoothing=Smoothing(), alerting=AlertPolicy(),
                     lineage={}, **params)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*.onnx"))
