"""Dense autoencoder training (seeding, early stopping, train-only scaling) and ONNX parity."""

from __future__ import annotations

import numpy as np
import pytest

from ds_assets.training.detectors import (
    DetectorConfigError,
    DetectorParams,
    TrainedDetector,
    train_detector,
)
from ds_assets.training.export import check_parity, export_onnx, reference_scores
from tests.support.training import FEATURES, correlated_rows, tiny_model


def test_training_is_seeded_and_early_stops() -> None:
    a = tiny_model(epochs=3, seed=1)
    b = tiny_model(epochs=3, seed=1)
    for key in a.arrays:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key])
    assert a.training_summary["val_loss"] == b.training_summary["val_loss"]
    stopped = train_detector(
        DetectorParams(hidden=(4, 2), epochs=200, patience=2, min_delta=10.0, batch_size=64),
        correlated_rows(256), correlated_rows(64, 1), FEATURES,
    )
    summary = stopped.training_summary
    assert summary["stopped_early"] and summary["epochs_run"] == 3
    assert summary["best_epoch"] == 0


def test_training_reduces_validation_loss() -> None:
    model = tiny_model(epochs=15)
    losses = model.training_summary["val_loss"]
    assert losses[model.training_summary["best_epoch"]] < losses[0]
    curve = model.training_summary["loss_curve"]
    assert curve["best_val_loss"] == min(losses) and curve["first_val_loss"] == losses[0]


def test_normalization_uses_train_rows_only() -> None:
    train = correlated_rows(512)
    val = correlated_rows(128, 1) + 1000.0
    model = train_detector(DetectorParams(hidden=(4, 2), epochs=1), train, val, FEATURES)
    np.testing.assert_allclose(model.mean, train.mean(axis=0), rtol=1e-5)


def test_weights_round_trip_without_pickle() -> None:
    model = tiny_model(epochs=1)
    payload = model.to_bytes()
    with np.load(__import__("io").BytesIO(payload), allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    restored = TrainedDetector.from_bytes(payload)
    rows = correlated_rows(32, 5)
    np.testing.assert_array_equal(
        reference_scores(model, rows)[0], reference_scores(restored, rows)[0]
    )
    assert restored.training_summary == model.training_summary
    assert restored.params == model.params and restored.window is None


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (np.full((10, 4), np.nan, np.float32), "feature 'f1' is nan at row 0"),
        (np.zeros((10, 0), np.float32), "at least one feature"),
        (np.zeros((1, 4), np.float32), "at least 2 rows"),
    ],
)
def test_bad_training_data_fails_before_training(train: np.ndarray, message: str) -> None:
    with pytest.raises(DetectorConfigError, match=message):
        features = FEATURES if train.shape[1] else []
        train_detector(DetectorParams(), train, correlated_rows(8), features)


def test_bad_params() -> None:
    with pytest.raises(DetectorConfigError, match="epochs=0"):
        train_detector(DetectorParams(epochs=0), correlated_rows(8), correlated_rows(8), FEATURES)


@pytest.mark.parametrize("name", ["min_delta", "weight_decay"])
def test_non_finite_optimizer_settings_are_refused(name: str) -> None:
    with pytest.raises(DetectorConfigError, match=f"{name}=nan"):
        DetectorParams(**{name: float("nan")})


def test_diverged_training_fails_instead_of_shipping_initial_weights() -> None:
    with pytest.raises(DetectorConfigError, match="training diverged"):
        train_detector(
            DetectorParams(hidden=(4, 2), epochs=3, learning_rate=1e5, batch_size=64),
            correlated_rows(256), correlated_rows(64, 1), FEATURES,
        )


def test_onnx_graph_matches_torch() -> None:
    model = tiny_model(epochs=3)
    rows = correlated_rows(300, 9)
    rows[:10] *= 3.0  # anomalies: large scores exercise the relative tolerance
    result = check_parity(model, export_onnx(model), rows)
    assert result.passed, result
    assert result.max_rel_diff <= 1e-5 and result.rows == 300
    assert result.max_abs_diff_score < 1e-3 and result.reference == "torch"


def test_parity_detects_a_different_model() -> None:
    model = tiny_model(epochs=3, seed=0)
    other = tiny_model(epochs=3, seed=5)
    result = check_parity(model, export_onnx(other), correlated_rows(64, 2))
    assert not result.passed and result.max_rel_diff > 1e-3


def test_parity_is_also_judged_element_by_element() -> None:
    """Against the batch's largest magnitude only, one anomaly scoring 1e6 hid a normal row
    scoring 5.0 instead of 0.02; a wrong output shape broadcast silently. Float32 noise (a
    relative 1e-7 per element here) still passes."""
    from ds_assets.training.parity import compare_outputs

    ref = (np.array([1e6, 0.01, 0.02]), np.array([[1e5, 0.0], [0.001, 0.0], [0.002, 0.0]]))
    off = (np.array([1e6, 0.01, 5.0]), np.array([[1e5, 0.0], [0.001, 0.0], [0.5, 0.0]]))
    result = compare_outputs(ref, off, 1e-5, "torch")
    assert result.max_rel_diff <= 1e-5 and not result.passed
    assert result.max_element_rel_diff > result.element_tolerance == 1e-3
    assert compare_outputs(ref, (ref[0] * (1 + 1e-7), ref[1] * (1 + 1e-7)), 1e-5, "t").passed
    assert not compare_outputs(ref, (ref[0][:1], ref[1][:1]), 1e-5, "torch").passed
