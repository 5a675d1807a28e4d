"""The nearest-window detector against a brute-force nearest neighbour, on the data shapes that
motivated it (long shape anomalies, stuck sensors, series far from their training level)."""

from __future__ import annotations

import numpy as np
import pytest

from ds_assets.assets.detector import DetectorConfig, Family
from ds_assets.settings import Settings
from ds_assets.training import nearest_windows
from ds_assets.training.detectors import (
    DetectorConfigError,
    DetectorParams,
    TrainedDetector,
    train_detector,
)
from ds_assets.training.export import (
    check_parity,
    export_onnx,
    model_inputs,
    reference_scores,
)
from ds_assets.training.parity import ort_outputs
from ds_serving.windows import window_index
from tests.support.training import ingested


def _fit(train: np.ndarray, val: np.ndarray, **changes: object):  # type: ignore[no-untyped-def]
    params = DetectorParams(family="window_knn", **changes)  # type: ignore[arg-type]
    return train_detector(params, train, val, [f"f{i}" for i in range(train.shape[1])],
                          train_entities=np.zeros(len(train), int),
                          val_entities=np.zeros(len(val), int))


def _sine(n: int, seed: int, period: float = 24.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (np.sin(2 * np.pi * t / period) + 0.05 * rng.normal(size=n))[:, None]


def test_score_is_the_distance_to_the_nearest_training_window() -> None:
    rng = np.random.default_rng(0)
    train, val, test = (rng.normal(size=(n, 3)) for n in (400, 120, 60))
    trained = _fit(train, val, scales=(5,), bank_size=10_000, flatline_quantile=None)
    windows = model_inputs(trained, test)
    score, errors = ort_outputs(export_onnx(trained), windows)
    # brute force over every training window, in float64, no distance expansion
    z_train = (train - trained.mean) / trained.std
    bank = z_train[window_index(np.zeros(len(train), int), 5).starts]
    assert len(bank) == trained.training_summary["bank_windows"] == 396
    z = (windows - trained.mean) / trained.std
    per_pair = ((z[:, None] - bank[None]) ** 2).mean(axis=2)  # [n, bank, F]
    nearest = per_pair.mean(axis=2).argmin(axis=1)
    calibration = float(trained.arrays[nearest_windows.SCALE + "5"][0])
    expected = per_pair[np.arange(len(z)), nearest] / calibration
    np.testing.assert_allclose(errors, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(score, expected.mean(axis=1), rtol=1e-4, atol=1e-6)


def test_far_from_the_origin_the_exact_nearest_window_is_found() -> None:
    """Windows far from the origin (normalized units) make a float32 distance expansion cancel
    (GutenTAG's random-walk series were 3-5e-2 off with it): the graph ranks in float64 and
    compares its shortlist exactly, so the score is the exact nearest distance."""
    rng = np.random.default_rng(0)
    params = DetectorParams(family="window_knn", scales=(4,), flatline_quantile=None)
    bank = (1000.0 + rng.normal(scale=0.05, size=(64, 4, 1))).astype(np.float32)
    queries = (1000.0 + rng.normal(scale=0.05, size=(64, 4, 1))).astype(np.float32)
    trained = TrainedDetector(
        "window_knn", ["a"], params, np.zeros(1, np.float32), np.ones(1, np.float32),
        {nearest_windows.BANK + "4": bank, nearest_windows.SCALE + "4": np.ones(1, np.float32)})
    exact = ((queries.astype(np.float64)[:, None] - bank[None]) ** 2).mean(axis=(2, 3)).min(axis=1)
    score, _ = ort_outputs(export_onnx(trained), queries)
    np.testing.assert_allclose(score, exact, rtol=1e-5)
    assert check_parity(trained, export_onnx(trained), queries).passed


def _hosts(rows: int, seed: int, noise: float, features: int = 8, hosts: int = 6,
           ) -> tuple[np.ndarray, np.ndarray]:
    """``hosts`` hosts at their own levels (0..100) with small cycles and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)[:, None]
    x = np.concatenate([level + 10 * noise * np.sin(2 * np.pi * t / 50 + np.arange(features))
                        + noise * rng.normal(size=(rows, features))
                        for level in np.linspace(0, 100, hosts)])
    return x.astype(np.float32), np.repeat(np.arange(hosts), rows)


@pytest.mark.parametrize("noise", [0.05, 0.01])
def test_hosts_at_their_own_levels_score_normal_windows_exactly(noise: float) -> None:
    """Global normalization puts each host's windows near |z| ~ 1 with spreads of 1e-3, where
    float32 distances round off more than the distances: the shortlist was random, normal
    windows scored up to 2.8x too high and the blocking parity check failed (review,
    2026-12-07). In float64 the graph matches the exact reference."""
    (tx, te), (vx, ve), (sx, se) = (_hosts(n, seed, noise)
                                    for n, seed in ((1500, 0), (400, 1), (300, 2)))
    trained = train_detector(DetectorParams(family="window_knn"), tx, vx,
                             [f"f{i}" for i in range(8)], train_entities=te, val_entities=ve)
    windows = sx[window_index(se, trained.window).starts]
    graph = export_onnx(trained)
    score, _ = ort_outputs(graph, windows)
    exact, _ = reference_scores(trained, windows)
    np.testing.assert_allclose(score, exact, rtol=1e-5)
    assert check_parity(trained, graph, windows).passed


def test_a_level_shift_of_every_feature_passes_the_parity_check() -> None:
    """50 features shifted together by ~280 training std: distances near 1e8, where float32
    sums over the shortlist tied and picked another window than the reference (feature
    errors 3e-4 off; the blocking check allows 1e-5)."""
    def rows(n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        t = np.arange(n)[:, None]
        return (np.sin(2 * np.pi * t / 24 + np.arange(50))
                + 0.01 * rng.normal(size=(n, 50))).astype(np.float32)

    trained = _fit(rows(6000, 0), rows(1500, 1))
    test = rows(600, 2)
    test[300:360] += 200.0
    assert check_parity(trained, export_onnx(trained), test).passed


def test_fitting_keeps_to_the_training_thread_count() -> None:
    """The bank's distances are numpy (BLAS) work: ``threads`` limits them as it limits torch."""
    from threadpoolctl import threadpool_info

    seen: list[int] = []
    real = nearest_windows._nearest_errors

    def spy(bank: np.ndarray, windows: np.ndarray) -> np.ndarray:
        seen.extend(pool["num_threads"] for pool in threadpool_info()
                    if pool["user_api"] == "blas")
        return real(bank, windows)

    rng = np.random.default_rng(0)
    mp = pytest.MonkeyPatch()
    mp.setattr(nearest_windows, "_nearest_errors", spy)
    try:
        train_detector(DetectorParams(family="window_knn", scales=(4,)), rng.normal(size=(300, 2)),
                       rng.normal(size=(100, 2)), ["a", "b"],
                       train_entities=np.zeros(300, int), val_entities=np.zeros(100, int),
                       threads=1)
    finally:
        mp.undo()
    assert seen and set(seen) == {1}


def test_a_shape_anomaly_longer_than_the_short_scales_ranks_above_normal_windows() -> None:
    trained = _fit(_sine(3000, 0), _sine(600, 1), scales=(4, 16, 48))
    test = _sine(600, 2)
    test[300:340, 0] = np.sin(2 * np.pi * np.arange(40) / 48.0)  # half the frequency, same range
    score, _ = ort_outputs(export_onnx(trained), model_inputs(trained, test))
    ends = np.arange(47, 600)  # the row each window ends at
    inside = (ends >= 310) & (ends < 350)
    assert score[inside].max() > 2 * score[~inside & ((ends < 290) | (ends > 400))].max()


def test_a_stuck_sensor_scores_above_calibration_through_the_flatline_term() -> None:
    rng = np.random.default_rng(1)
    train, val, test = (rng.normal(size=(n, 2)) for n in (2000, 400, 200))
    test[100:160, 1] = 0.0  # stuck at its mean: close to calm normal windows
    trained = _fit(train, val, scales=(4, 16))
    score, errors = ort_outputs(export_onnx(trained), model_inputs(trained, test))
    ends = np.arange(15, 200)
    stuck = (ends >= 116) & (ends < 160)  # windows wholly inside the stuck rows
    assert score[stuck].min() > 1.0 > np.median(score[~stuck])
    assert (errors[stuck].argmax(axis=1) == 1).all()  # the explanation names the stuck feature
    without = _fit(train, val, scales=(4, 16), flatline_quantile=None)
    plain, _ = ort_outputs(export_onnx(without), model_inputs(without, test))
    assert plain[stuck].max() < score[stuck].min()


def test_one_feature_is_enough() -> None:
    trained = _fit(_sine(800, 0), _sine(200, 1), scales=(4, 16))
    assert trained.window == 16 and trained.kind == "nearest_window_multiscale"
    assert check_parity(trained, export_onnx(trained), _sine(300, 3)).passed


@pytest.mark.parametrize(("changes", "named"), [
    ({"scales": ()}, "scales="),
    ({"scales": (4, 4)}, "scales="),
    ({"scales": (1,)}, "^scales=.*longest must be >= 2"),
    ({"scales": (4, 40)}, "multiple of it"),
    ({"scales": (4.5, 16)}, "^scales=.*whole numbers"),
    ({"scales": (True, 16)}, "^scales=.*whole numbers"),
    ({"scales": "4,16,48"}, "^scales=.*whole numbers"),
    ({"scales": 16}, "^scales=.*whole numbers"),
    ({"scale_points": 0}, "scale_points="),
    ({"scales": (5, 10), "scale_points": 2.5}, "^scale_points=.*whole number"),
    ({"bank_size": 0}, "bank_size="),
    ({"bank_size": 100.5}, "^bank_size=.*whole number"),
    ({"window": 32}, "set scales instead"),
    ({"fusion_quantile": 0.0}, "fusion_quantile="),
    ({"fusion_quantile": 1.0}, "fusion_quantile="),
    ({"fusion_quantile": 1.5}, "fusion_quantile="),
])
def test_configs_that_cannot_work_are_named(changes: dict[str, object], named: str) -> None:
    with pytest.raises(DetectorConfigError, match=named):
        DetectorParams(family="window_knn", **changes)  # type: ignore[arg-type]


def test_the_temporal_aes_own_fields_are_not_checked_for_window_knn() -> None:
    """Fields of other families are ignored: a kernel size the temporal AE refuses is fine."""
    assert DetectorParams(family="window_knn", kernel_size=4, channels=()).window == 48


def test_window_is_the_largest_scale_and_survives_the_launchpad_config() -> None:
    params = DetectorParams(family="window_knn", scales=(48, 4, 16))
    assert params.scales == (4, 16, 48) and params.window == 48
    assert DetectorParams.from_dict(params.to_dict()) == params
    from_config = DetectorConfig(family=Family.window_knn, scales=[2, 6], scale_points=3,
                                 bank_size=64).params()
    assert from_config.window == 6 and from_config.scales == (2, 6)
    assert set(params.relevant()) >= {"scales", "scale_points", "bank_size", "window"}


def test_a_window_longer_than_the_validation_rows_is_refused_before_fitting() -> None:
    with pytest.raises(DetectorConfigError, match="window=48"):
        _fit(_sine(500, 0), _sine(40, 1))


def test_the_graph_trains_and_bundles_a_nearest_window_detector(settings: Settings) -> None:
    """The launchpad's family dropdown has ``window_knn``: the training job builds the bank,
    the parity check passes and the champion bundle names its kind and window."""
    from ds_serving.bundle import load_champion
    from tests.conftest import DAYS

    defs, instance = ingested(settings)
    run = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config={"ops": {
            "training_set": {"config": {"n_partitions": len(DAYS), "end_partition": DAYS[-1]}},
            "detector": {"config": {"family": "window_knn", "scales": [2, 8],
                                    "scale_points": 4, "bank_size": 256}},
        }},
    )
    assert run.success
    assert {e.check_name: e.passed for e in run.get_asset_check_evaluations()} == {
        "onnx_parity": True}
    meta = run.asset_materializations_for_node("detector")[0].metadata
    assert meta["family"].value == "window_knn" and meta["bank_windows"].value == 256
    manifest = load_champion(settings.models_dir, settings.model_name).manifest
    assert manifest.kind == "nearest_window_multiscale" and manifest.window == 8
