"""The fused detector: members fitted together, each scaled by its own validation quantile, the
maximum exported as one scoring graph that a bundle carries like any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ds_assets.settings import Settings
from ds_assets.training.detectors import (
    DetectorConfigError,
    DetectorParams,
    TrainedDetector,
    train_detector,
)
from ds_assets.training.export import check_parity, export_onnx
from ds_assets.training.fusion import SCALES, member, reference_scores
from ds_serving.bundle import load_bundle, write_bundle
from ds_serving.scoring import Scorer, score_rows
from ds_serving.windows import window_index
from tests.support.training import ingested

FEATURES = ["a", "b", "c"]
Fused = tuple[TrainedDetector, np.ndarray, np.ndarray]  # detector, validation rows, their hosts


def _rows(n: int, seed: int, features: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Two hosts of correlated normal rows (b follows a), time-ordered per host."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    rows = np.column_stack([a, a + 0.1 * rng.normal(size=n), rng.normal(size=(n, 1))[:, 0]])
    return rows[:, :features].astype(np.float32), np.repeat([0, 1], n // 2)


@pytest.fixture(scope="module")
def fused() -> Fused:
    train, keys = _rows(1200, 0)
    val, val_keys = _rows(400, 1)
    trained = train_detector(DetectorParams(family="fused", epochs=3), train, val, FEATURES,
                             train_entities=keys, val_entities=val_keys, threads=1)
    return trained, val, val_keys


def test_each_member_is_scaled_by_its_own_validation_quantile(fused: Fused) -> None:
    trained, val, val_keys = fused
    assert trained.kind == "fused_zscore_pca_temporal" and trained.window == 16
    assert trained.training_summary["members"] == ["zscore", "pca", "temporal_ae"]
    windows = val[window_index(val_keys, 16).starts]
    score, _ = reference_scores(trained, windows)
    scales = trained.arrays[SCALES]
    # the maximum of three parts, each exceeding 1 on about 1 % of the validation windows
    assert (score >= 1.0).mean() == pytest.approx(0.02, abs=0.02)
    assert np.all(scales > 0) and member(trained, "pca") is not None


def test_the_graph_is_the_members_scored_apart(fused: Fused) -> None:
    trained, val, _ = fused
    result = check_parity(trained, export_onnx(trained), val[:200])
    assert result.passed and result.reference.startswith("members apart")


def test_a_bundle_serves_the_fused_graph_like_any_other(tmp_path: Path, fused: Fused) -> None:
    trained, val, val_keys = fused
    bundle = write_bundle(tmp_path, "fused", export_onnx(trained), kind=trained.kind,
                          features=FEATURES, threshold=1.0, threshold_rule={"rule": "fixed"},
                          window=trained.window)
    scorer = Scorer.from_bundle(load_bundle(bundle.path), backend="cpu")
    got = score_rows(scorer, val, val_keys)
    index = window_index(val_keys, 16)
    expected, _ = reference_scores(trained, val[index.starts])
    np.testing.assert_allclose(got.scores[index.ends], expected, rtol=1e-5)
    assert np.isnan(got.scores).sum() == 2 * 15  # each host's warm-up rows


def test_one_feature_fuses_without_pca_and_a_level_shift_is_caught_by_the_z_score() -> None:
    train, keys = _rows(800, 2, features=1)
    val, val_keys = _rows(400, 3, features=1)
    trained = train_detector(DetectorParams(family="fused", epochs=2), train, val, ["a"],
                             train_entities=keys, val_entities=val_keys, threads=1)
    assert member(trained, "pca") is None and trained.arrays[SCALES][1] == 0
    assert check_parity(trained, export_onnx(trained), val[:100]).passed
    shifted = val[:40].copy()
    shifted[-1] += 8.0  # one row far off the training level: the z-score part alone is > 1
    score, _ = reference_scores(trained, shifted[np.newaxis, -16:])
    assert score[0] > 2.0


def test_a_bad_fusion_quantile_is_refused_by_name() -> None:
    with pytest.raises(DetectorConfigError, match=r"fusion_quantile=1\.5"):
        DetectorParams(family="fused", fusion_quantile=1.5)


def test_the_graph_trains_and_bundles_a_fused_detector(settings: Settings) -> None:
    """The launchpad's family dropdown has ``fused``: the training job fits it, the parity
    check passes and the champion bundle names its kind and window."""
    from ds_serving.bundle import load_champion
    from tests.conftest import DAYS

    defs, instance = ingested(settings)
    run = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config={"ops": {
            "training_set": {"config": {"n_partitions": len(DAYS), "end_partition": DAYS[-1]}},
            "detector": {"config": {"family": "fused", "window": 4, "channels": [8],
                                    "kernel_size": 3, "latent": 4, "epochs": 1}},
        }},
    )
    assert run.success
    assert {e.check_name: e.passed for e in run.get_asset_check_evaluations()} == {
        "onnx_parity": True}
    meta = run.asset_materializations_for_node("detector")[0].metadata
    assert meta["family"].value == "fused" and meta["train_windows"].value > 0
    manifest = load_champion(settings.models_dir, settings.model_name).manifest
    assert manifest.kind == "fused_zscore_pca_temporal" and manifest.window == 4
