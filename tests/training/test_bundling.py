"""Bundle building as a plain function: calibration, policy, drift reference, lineage."""

from __future__ import annotations

from pathlib import Path

from ds_assets.monitoring.reference import REFERENCE_FILE, load_reference
from ds_assets.telemetry.generator import GeneratorConfig, generate_day
from ds_assets.training.bundling import build_bundle, features_of
from ds_assets.training.datasets import build_training_set, normal_rows, split_rows
from ds_assets.training.detectors import DetectorParams, train_detector
from ds_assets.training.export import export_onnx
from ds_serving.alerting import AlertPolicy
from ds_serving.bundle import load_bundle
from ds_serving.smoothing import Smoothing


def test_a_trained_detector_becomes_a_bundle_without_dagster(tmp_path: Path) -> None:
    config = GeneratorConfig(n_hosts=2, interval_seconds=900, seed=3)
    days = {d: generate_day(d, config) for d in ("2026-11-01", "2026-11-02")}
    training_set = build_training_set(days)
    features = [c for c in days["2026-11-01"].columns if c.startswith(("cpu", "mem", "lat"))]
    train, val = split_rows(training_set, "train"), normal_rows(split_rows(training_set, "val"))
    detector = train_detector(DetectorParams(family="pca"), features_of(train, features),
                              features_of(val, features), features)
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
