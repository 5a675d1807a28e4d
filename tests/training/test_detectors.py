"""Every detector family on tiny data: train, round trip, export, ONNX parity, score through
ds_serving, and configs that cannot work failing before training."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ds_assets.settings import Settings
from ds_assets.training import evaluated_default
from ds_assets.training.datasets import DatasetError, contiguous_segments
from ds_assets.training.detectors import (
    FAMILIES,
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
    scoring_graph,
)
from ds_assets.training.fusion import member
from ds_serving.bundle import load_bundle, write_bundle
from ds_serving.scoring import Scorer, score_rows
from ds_serving.windows import window_index
from tests.support.training import FEATURES, correlated_rows, ingested

TINY = {
    "dense_ae": DetectorParams(family="dense_ae", hidden=(8, 2), epochs=2, batch_size=64),
    "temporal_ae": DetectorParams(
        family="temporal_ae", window=6, channels=(8, 4), kernel_size=3, latent=4, epochs=2,
        batch_size=64,
    ),
    "pca": DetectorParams(family="pca", explained_variance=0.9),
    "fused": DetectorParams(
        family="fused", window=6, channels=(8, 4), kernel_size=3, latent=4, epochs=2,
        batch_size=64, explained_variance=0.9,
    ),
    # window 6: the last 2 rows, and 6 rows as 3 points of 2
    "window_knn": DetectorParams(family="window_knn", scales=(2, 6), scale_points=3,
                                 bank_size=64),
}
ENTITIES_TRAIN = np.repeat(["a", "b", "c"], 160)
ENTITIES_VAL = np.repeat(["a", "b", "c"], 40)


def _train(family: str, **changes: object) -> TrainedDetector:
    params = DetectorParams(**{**TINY[family].to_dict(), **changes})
    return train_detector(
        params, correlated_rows(480), correlated_rows(120, 1), FEATURES,
        train_entities=ENTITIES_TRAIN, val_entities=ENTITIES_VAL,
    )


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request: pytest.FixtureRequest) -> TrainedDetector:
    return _train(request.param)


def _anomalous_rows(n: int = 90, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rows = correlated_rows(n, seed)
    labels = np.zeros(n, bool)
    labels[40:44] = True
    rows[40:44, 0] += 8.0  # break the correlation on one feature
    return rows, labels


def test_family_trains_with_summary(trained: TrainedDetector) -> None:
    s = trained.training_summary
    assert s["family"] == trained.family and s["seed"] == 0
    assert s["train_rows"] == 480 and s["val_rows"] == 120
    assert s["wall_time_s"] >= 0 and np.isfinite(s["best_val_loss"])
    assert "loss_curve" in s and s["params"]["family"] == trained.family
    if trained.family == "pca":
        assert s["epochs_run"] == 0 and 1 <= s["n_components"] <= 3
        assert s["explained_variance_ratio"] >= 0.9
    elif trained.family == "window_knn":  # no training: a bank of windows per scale
        assert s["epochs_run"] == 0 and s["bank_windows"] == 64
        assert s["scales"]["2"]["rows_per_point"] == 1 and s["scales"]["6"]["rows_per_point"] == 2
    else:
        assert s["epochs_run"] == 2 and len(s["val_loss"]) == 2
    if trained.family == "fused":  # the autoencoder's summary, the PCA's and the scales
        assert s["members"] == ["zscore", "pca", "temporal_ae"] and s["n_components"] >= 1
        assert all(v > 0 for v in s["fusion_scales"].values())
    if trained.family in ("temporal_ae", "fused", "window_knn"):
        assert trained.window == 6
        # windows never cross entities: 3 entities x (160 - 6 + 1)
        assert s["train_windows"] == 3 * 155 and s["val_windows"] == 3 * 35
    else:
        assert trained.window is None
    np.testing.assert_allclose(trained.mean, correlated_rows(480).mean(axis=0), rtol=1e-5)


def test_round_trip_is_exact_and_pickle_free(trained: TrainedDetector) -> None:
    restored = TrainedDetector.from_bytes(trained.to_bytes())
    rows = correlated_rows(40, 9)
    assert restored.family == trained.family and restored.params == trained.params
    assert restored.window == trained.window
    np.testing.assert_array_equal(
        reference_scores(restored, rows)[0], reference_scores(trained, rows)[0]
    )


def test_onnx_parity_and_scoring_through_the_graph(trained: TrainedDetector, tmp_path) -> None:
    onnx_bytes = export_onnx(trained)
    rows, labels = _anomalous_rows()
    parity = check_parity(trained, onnx_bytes, rows)
    assert parity.passed, parity
    assert parity.reference == {"pca": "numpy", "fused": "members apart (numpy, torch)",
                                "window_knn": "numpy"}.get(trained.family, "torch")

    bundle = load_bundle(write_bundle(
        tmp_path, "m", onnx_bytes, kind=trained.kind, features=FEATURES, threshold=1.0,
        threshold_rule={"rule": "quantile"}, window=trained.window,
    ).path)
    scorer = Scorer.from_bundle(bundle, backend="cpu")
    entities = np.repeat(["x", "y"], 45)
    batch = score_rows(scorer, rows, entities, explain=True)
    assert batch.feature_errors is not None and batch.feature_errors.shape == rows.shape
    ref_score, ref_errors = reference_scores(trained, rows if trained.window is None else
                                             rows[window_index(entities, 6).starts])
    if trained.window is None:
        np.testing.assert_allclose(batch.scores, ref_score, rtol=1e-4, atol=1e-6)
        assert not np.isnan(batch.scores).any()
    else:
        # rows before an entity's first full window get no score and no flag
        unscored = np.isnan(batch.scores)
        assert unscored.sum() == 2 * 5
        assert unscored[:5].all() and unscored[45:50].all()
        assert not batch.flags[unscored].any()
        ends = window_index(entities, 6).ends
        np.testing.assert_allclose(batch.scores[ends], ref_score, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(batch.feature_errors[ends], ref_errors, rtol=1e-4, atol=1e-6)
    # the injected anomaly scores above every normal row of its entity
    scores = np.nan_to_num(batch.scores, nan=-1.0)
    normal = scores[:45][~labels[:45]]
    assert scores[40:44].max() > normal.max()


def test_seeded_training_is_reproducible() -> None:
    a, b = _train("temporal_ae", seed=4), _train("temporal_ae", seed=4)
    c = _train("temporal_ae", seed=5)
    for key in a.arrays:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key])
    assert any(not np.array_equal(a.arrays[k], c.arrays[k]) for k in a.arrays)


def test_a_recent_window_score_weighs_its_last_rows_most() -> None:
    """``recent``: a window whose rows all err alike scores as in the mean; a one-row spike
    at its end weighs ~0.29 of it (1/16 in the mean), and the graph exports with parity."""
    import torch

    from ds_assets.training.detectors import recent_weights
    from ds_assets.training.networks import window_errors

    weights = recent_weights(16)
    assert weights.sum() == pytest.approx(1.0) and (np.diff(weights) > 0).all()
    assert weights[-1] == pytest.approx(0.294, abs=1e-3)
    even = torch.full((2, 16, 3), 0.5)
    for how in ("window_mean", "last_row", "recent"):
        torch.testing.assert_close(window_errors(even, how), torch.full((2, 3), 0.5))
    spike = torch.zeros((1, 16, 3))
    spike[0, -1, 0] = 16.0
    assert window_errors(spike, "window_mean")[0, 0] == pytest.approx(1.0)
    assert window_errors(spike, "recent")[0, 0] == pytest.approx(16 * 0.294, abs=0.02)

    slower = recent_weights(16, half_life=8.0)  # nearer the mean: the last row 0.11
    assert slower[-1] == pytest.approx(0.110, abs=1e-3) and slower[0] == pytest.approx(
        slower[-1] / 2 ** (15 / 8), rel=1e-5)

    recent = _train("temporal_ae", temporal_score="recent", recent_half_life=4.0, epochs=1)
    rows = correlated_rows(30, 2)
    assert check_parity(recent, export_onnx(recent), rows).passed
    assert recent.params.relevant()["recent_half_life"] == 4.0
    assert "recent_half_life" not in _train("temporal_ae", epochs=1).params.relevant()
    fused = DetectorParams(family="fused", temporal_score="recent", recent_half_life=8.0)
    assert fused.relevant()["recent_half_life"] == 8.0  # its autoencoder member scores so
    with pytest.raises(DetectorConfigError, match=r"temporal_score.*window_mean, last_row, recent"):
        DetectorParams(family="temporal_ae", temporal_score="latest")
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(DetectorConfigError, match=r"recent_half_life.*rows > 0"):
            DetectorParams(family="temporal_ae", temporal_score="recent", recent_half_life=bad)


def test_temporal_last_row_score_and_pca_sum_combination() -> None:
    last = _train("temporal_ae", temporal_score="last_row", epochs=1)
    rows = correlated_rows(30, 2)
    score, errors = reference_scores(last, rows)
    np.testing.assert_allclose(score, errors.mean(axis=1), rtol=1e-6)
    assert check_parity(last, export_onnx(last), rows).passed

    summed = _train("pca", pca_combine="sum", t2_weight=0.25)
    maxed = _train("pca")
    np.testing.assert_array_equal(summed.arrays["components"], maxed.arrays["components"])
    s_sum, _ = reference_scores(summed, rows)
    s_max, _ = reference_scores(maxed, rows)
    assert np.all(s_sum <= s_max + 1e-6)  # a weighted mean never exceeds the max
    assert check_parity(summed, export_onnx(summed), rows).passed


def test_pca_keeps_a_residual_subspace_and_caps_components() -> None:
    full = _train("pca", explained_variance=1.0)
    assert full.training_summary["n_components"] == len(FEATURES) - 1
    capped = _train("pca", explained_variance=1.0, max_components=1)
    assert capped.arrays["components"].shape == (len(FEATURES), 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"family": "lstm"}, "family='lstm': unknown detector family"),
        ({"epochs": 0}, "epochs=0: must be >= 1"),
        ({"learning_rate": -1.0}, "learning_rate=-1.0"),
        ({"hidden": ()}, "hidden=()"),
        ({"family": "temporal_ae", "window": 1}, "window=1: must be >= 2"),
        ({"family": "temporal_ae", "kernel_size": 4}, "kernel_size=4: must be a positive odd"),
        ({"family": "temporal_ae", "temporal_score": "max"}, "temporal_score='max'"),
        ({"family": "pca", "explained_variance": 0.0}, r"explained_variance=0.0: must be in \(0"),
        ({"family": "pca", "pca_combine": "mean"}, "pca_combine='mean'"),
        ({"family": "pca", "t2_weight": 2.0}, "t2_weight=2.0"),
        ({"error_scale": "max"}, "error_scale='max': choose one of none, validation"),
        ({"learning_rate": "1e-3"}, r"learning_rate='1e-3': must be a number \(in YAML"),
        ({"seed": None}, "seed=None: must be a number"),
    ],
)
def test_bad_params_name_the_value(changes: dict[str, object], message: str) -> None:
    with pytest.raises(DetectorConfigError, match=message):
        DetectorParams(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_data_fails_before_training(family: str) -> None:
    params = TINY[family]
    train = correlated_rows(60)
    train[7, 2] = np.inf
    with pytest.raises(DetectorConfigError, match=r"feature 'f3' is inf at row 7"):
        train_detector(params, train, correlated_rows(20), FEATURES)
    with pytest.raises(DetectorConfigError, match="at least one feature"):
        train_detector(params, np.zeros((10, 0), np.float32), np.zeros((5, 0), np.float32), [])
    nan_val = correlated_rows(20)
    nan_val[3, 0] = np.nan
    with pytest.raises(DetectorConfigError, match=r"validation rows: feature 'f1' is nan"):
        train_detector(params, correlated_rows(60), nan_val, FEATURES)


def test_window_longer_than_every_entity_fails_before_training() -> None:
    params = DetectorParams(family="temporal_ae", window=50, epochs=1)
    entities = np.repeat(["h1", "h2"], 30)
    with pytest.raises(DetectorConfigError, match=r"window=50 is longer than every entity's "
                       r"training rows \(longest: entity 'h1' with 30 rows, 2 entities\)"):
        train_detector(params, correlated_rows(60), correlated_rows(60), FEATURES,
                       train_entities=entities, val_entities=entities)
    with pytest.raises(DetectorConfigError, match=r"got 2 entity ids \(shape \(2,\)\) for 60 rows"):
        train_detector(params, correlated_rows(60), correlated_rows(60), FEATURES,
                       train_entities=np.array(["a", "b"]))


# --------------------------------------------------------------------------------------------
# through the asset graph


def test_temporal_then_pca_through_the_graph(settings: Settings) -> None:
    """A temporal AE trains, exports, passes parity and scores per host through the real jobs;
    a PCA challenger is then compared with it on the test rows both score."""
    import pandas as pd

    from ds_assets.training.dataset_scoring import score_frame
    from ds_assets.training.datasets import split_rows
    from ds_assets.training.promotion import champion_alias_version
    from ds_serving.bundle import load_champion
    from ds_serving.smoothing import Smoothing, smooth_flags
    from tests.conftest import DAYS, TINY_SOURCE

    defs, instance = ingested(settings)
    window_days = {"n_partitions": len(DAYS), "end_partition": DAYS[-1]}
    temporal = {"family": "temporal_ae", "window": 4, "channels": [8], "kernel_size": 3,
                "latent": 4, "epochs": 1, "batch_size": 128}
    run = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config={"ops": {
            "training_set": {"config": window_days},
            "detector": {"config": temporal},
            "model_bundle": {"config": {"smoothing_k": 2, "smoothing_n": 3}},
        }},
    )
    assert run.success
    assert {e.check_name: e.passed for e in run.get_asset_check_evaluations()} == {
        "onnx_parity": True}
    meta = run.asset_materializations_for_node("detector")[0].metadata
    assert meta["family"].value == "temporal_ae" and meta["seed"].value == 0
    assert meta["epochs_run"].value == 1 and meta["train_windows"].value > 0
    assert {"wall_time_s", "loss_curve_summary", "train_rows", "params"} <= set(meta)

    bundle = load_champion(settings.models_dir, settings.model_name)
    m = bundle.manifest
    assert (m.kind, m.window, m.smoothing) == ("temporal_autoencoder", 4, {"k": 2, "n": 3})
    assert m.threshold_rule["rule"] == "quantile"
    # warm-up rows: W-1 per gap-free segment of each host's normal validation rows
    val = split_rows(pd.read_parquet(settings.data_dir / "assets" / "training_set.parquet"), "val")
    segments = np.unique(contiguous_segments(val))
    assert m.threshold_rule["unscored_rows"] == sum(
        min(3, int((contiguous_segments(val) == seg).sum())) for seg in segments
    )
    registered = json.loads((settings.data_dir / "assets" / "model_bundle.json").read_text())
    assert champion_alias_version(settings.mlflow_tracking_uri, settings.model_name) == (
        registered["mlflow_model_version"])

    raw = pd.read_parquet(settings.data_dir / "assets" / "raw_telemetry" / f"{DAYS[0]}.parquet")
    scorer = Scorer.from_bundle(bundle, backend="cpu")
    scored = score_frame(scorer, raw)  # the bundle's smoothing, from its scoring policy
    first_rows = scored.groupby("host_id").head(3).index
    assert scored.loc[first_rows, "score"].isna().all()
    assert scored["score"].isna().sum() == 3 * TINY_SOURCE["n_hosts"]
    assert not scored.loc[first_rows, "is_anomaly"].any()
    expected = smooth_flags(scored["raw_is_anomaly"].to_numpy(), Smoothing(2, 3),
                            scored["host_id"].to_numpy())
    assert (scored["is_anomaly"].to_numpy() == expected).all()
    # shuffled rows would give other windows and flags: refused, naming a row and the fix
    shuffled = raw.sample(frac=1.0, random_state=0).reset_index(drop=True)
    with pytest.raises(DatasetError, match=r"rows must be in time order within each host_id"):
        score_frame(scorer, shuffled)
    gone = scorer.features[2]
    with pytest.raises(DatasetError, match=rf"rows lack feature column\(s\) \['{gone}'\]"):
        score_frame(scorer, raw.drop(columns=[gone]))

    again = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config={"ops": {
            "training_set": {"config": window_days}, "detector": {"config": {"family": "pca"}},
        }},
    )
    assert again.success
    decision = json.loads((settings.data_dir / "assets" / "champion.json").read_text())
    d = decision["decision"]
    assert (d["challenger_version"], d["champion_version"]) == ("2", "1")
    assert d["champion_pr_auc"] is not None and d["challenger_pr_auc"] is not None
    test = split_rows(pd.read_parquet(settings.data_dir / "assets" / "training_set.parquet"),
                      "test")
    # every test row: the temporal champion continues from each host's validation rows
    assert d["compared_rows"] == len(test)
    # the PR-AUC order decides unless a false-alarm case of the gate does (either way)
    burden = "false alarms" in d["reason"]
    assert burden or d["promote"] == (d["challenger_pr_auc"] > d["champion_pr_auc"])
    champ_meta = again.asset_materializations_for_node("champion")[0].metadata
    assert champ_meta["promoted"].value == d["promote"]
    assert champ_meta["previous_champion_pr_auc"].value == d["champion_pr_auc"]


def test_launchpad_config_maps_to_validated_params() -> None:
    from ds_assets.assets.detector import DetectorConfig, Family

    config = DetectorConfig(family=Family.temporal_ae, window=8, channels=[4, 2], epochs=3)
    params = config.params()
    assert params == DetectorParams(family="temporal_ae", window=8, channels=(4, 2), epochs=3)
    assert params.max_train_rows == 10_000  # the family's default, resolved
    assert DetectorConfig().params() == DetectorParams(family=evaluated_default.FAMILY)
    with pytest.raises(DetectorConfigError, match="kernel_size=2"):
        DetectorConfig(family=Family.temporal_ae, kernel_size=2).params()


def test_the_graph_defaults_to_the_evaluated_family_and_policy() -> None:
    """What `make eval` chose on data it was not tuned on is what a dataset gets unconfigured."""
    from ds_assets.assets.detector import BundleConfig, DetectorConfig

    assert DetectorConfig().family.value == evaluated_default.FAMILY
    bundle = BundleConfig()
    assert {k: getattr(bundle, k) for k in evaluated_default.POLICY} == evaluated_default.POLICY


def test_each_epoch_trains_on_a_fresh_sample_of_the_cap() -> None:
    from ds_assets.training.detectors import TRAIN_ITEMS_PER_EPOCH
    from ds_assets.training.networks import epoch_orders

    orders = epoch_orders(1000, 100, seed=3)
    epochs = [next(orders).numpy() for _ in range(5)]
    assert all(len(e) == len(set(e)) == 100 for e in epochs)
    assert len(set(np.concatenate(epochs))) > 300  # not one fixed sample
    again = epoch_orders(1000, 100, seed=3)
    assert all((next(again).numpy() == e).all() for e in epochs)  # reproducible by seed
    everything = epoch_orders(50, 100, seed=3)
    assert sorted(next(everything).tolist()) == list(range(50))  # under the cap: all, shuffled
    assert DetectorParams(family="temporal_ae").max_train_rows == TRAIN_ITEMS_PER_EPOCH[
        "temporal_ae"]
    assert DetectorParams(family="dense_ae", max_train_rows=None).max_train_rows is None
    with pytest.raises(DetectorConfigError, match="0 for the family's default"):
        DetectorParams(max_train_rows=-1)


def test_early_stopping_reads_one_seeded_sample_of_the_validation_rows() -> None:
    from ds_assets.training.detectors import EARLY_STOPPING_ITEMS

    val = correlated_rows(EARLY_STOPPING_ITEMS + 500, seed=1)
    train = correlated_rows(600)
    params = DetectorParams(family="dense_ae", hidden=(8, 2), epochs=2, batch_size=64,
                            max_train_rows=200)
    trained = train_detector(params, train, val, FEATURES)
    s = trained.training_summary
    assert (s["val_items"], s["early_stopping_items"]) == (len(val), EARLY_STOPPING_ITEMS)
    assert (s["train_items"], s["train_items_per_epoch"]) == (600, 200)
    again = train_detector(params, train, val, FEATURES).training_summary
    assert again["val_loss"] == s["val_loss"]  # the same sample every run and every epoch


def test_training_device_is_chosen_by_name_and_refused_with_the_reason() -> None:
    import torch

    from ds_assets.training.networks import pick_device

    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DetectorConfigError, match=r"device='gpu': choose one of auto, cpu, cuda"):
        pick_device("gpu")
    if torch.cuda.is_available():
        assert pick_device("cuda").type == "cuda"
    else:
        with pytest.raises(DetectorConfigError, match="torch sees no CUDA GPU"):
            pick_device("cuda")


@pytest.mark.gpu
def test_autoencoders_train_on_cuda_like_on_cpu() -> None:
    """Same seed, same rows: CUDA and CPU training reach nearly the same validation loss
    (kernels differ, so not bit for bit: cuDNN's convolutions drift further than the dense
    layers' matmuls) and the CUDA model exports like any other."""
    import torch

    from ds_assets.training.networks import pick_device

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    rows, val = correlated_rows(2048), correlated_rows(512, 1)
    for family in ("dense_ae", "temporal_ae"):
        params = DetectorParams(family=family, hidden=(8, 2), window=4, channels=(4,),
                                kernel_size=3, latent=2, epochs=3, seed=0)
        runs = {d: train_detector(params, rows, val, FEATURES, device=pick_device(d))
                for d in ("cuda", "cpu")}
        assert runs["cuda"].training_summary["device"] == "cuda"
        losses = [runs[d].training_summary["best_val_loss"] for d in ("cuda", "cpu")]
        rtol = 1e-3 if family == "dense_ae" else 5e-2
        assert abs(losses[0] - losses[1]) <= rtol * max(losses), (family, losses)
        assert check_parity(runs["cuda"], export_onnx(runs["cuda"]), val[:64]).passed


def test_window_spread_is_each_windows_std_when_entities_interleave() -> None:
    """Telemetry sorted by time interleaves its hosts: a window's rows are its entity's, not
    the adjacent rows of other hosts (which made every real window look flat)."""
    from ds_assets.training.detectors import window_spread

    z = np.random.default_rng(0).normal(size=(50, 3))
    for entities in (np.repeat([0, 1], 25), np.tile([0, 1], 25)):
        windows = window_index(entities, 5).starts
        expected = np.stack([z[w].std(axis=0) for w in windows])
        np.testing.assert_allclose(window_spread(z, windows, chunk=7), expected, atol=1e-9)


def test_a_stuck_feature_scores_through_the_flatline_term_in_torch_and_onnx() -> None:
    """A sensor frozen inside its normal range reconstructs well; the flat-line term (a window
    flatter than the training floor) raises its score, names it the top feature and exports
    with parity; turned off, the same window scores like normal ones."""
    rng = np.random.default_rng(1)
    t = np.arange(600)
    rows = np.stack([np.sin(t / 7 + k) + 0.1 * rng.normal(size=600) for k in range(3)], axis=1)
    rows = rows.astype(np.float32)
    stuck = rows[400:].copy()
    stuck[60:120, 1] = stuck[59, 1]  # frozen at its last value
    params = DetectorParams(family="temporal_ae", window=8, channels=(8,), kernel_size=3,
                            latent=4, epochs=3, batch_size=64)
    on = train_detector(params, rows[:300], rows[300:400], ["a", "b", "c"])
    off = train_detector(DetectorParams(**{**params.to_dict(), "flatline_quantile": None}),
                         rows[:300], rows[300:400], ["a", "b", "c"])
    assert on.flatline is not None and off.flatline is None
    assert on.training_summary["flatline"]["features_watched"] == 3
    for model, flagged in ((on, True), (off, False)):
        score, errors = reference_scores(model, stuck)
        normal_top = np.quantile(score[:50], 0.999)
        frozen = score[70:110]  # windows wholly inside the frozen stretch
        assert (frozen.min() > 2 * normal_top) == flagged
        if flagged:
            assert (errors[70:110].argmax(axis=1) == 1).all()
        onnx_bytes = export_onnx(model)
        assert check_parity(model, onnx_bytes, stuck).passed
    restored = TrainedDetector.from_bytes(on.to_bytes())
    np.testing.assert_array_equal(reference_scores(restored, stuck)[0],
                                  reference_scores(on, stuck)[0])
    with pytest.raises(DetectorConfigError, match=r"flatline_quantile=0\.7: must be in"):
        DetectorParams(family="temporal_ae", flatline_quantile=0.7)


@pytest.mark.parametrize("family", ["dense_ae", "temporal_ae", "fused"])
def test_error_scale_puts_each_feature_in_units_of_its_validation_error(family: str) -> None:
    """A smooth feature is reconstructed more closely than white noise; with ``error_scale``
    each feature's error is divided by its mean on the validation items, so on those items
    every feature averages 1 (the flat-line penalty is then in the same units). Exports with
    parity (fused: in its autoencoder member) and survives the round trip."""
    rng = np.random.default_rng(4)
    t = np.arange(1600)
    rows = np.stack([np.sin(t / 9), np.cos(t / 13), rng.normal(size=1600)], axis=1)
    rows = rows.astype(np.float32)
    params = DetectorParams(family=family, hidden=(8, 2), window=6, channels=(8,),
                            kernel_size=3, latent=2, epochs=4, batch_size=64,
                            error_scale="validation")
    model = train_detector(params, rows[:1200], rows[1200:], ["a", "b", "c"])
    if family == "fused":
        model = member(model, "temporal_ae")
    inverse = model.error_scale_inverse
    assert inverse is not None
    raw = np.asarray(model.training_summary["error_scale"]["mean_validation_error"])
    np.testing.assert_allclose(inverse, 1.0 / raw, rtol=1e-4)
    graph = scoring_graph(model)
    with torch.no_grad():
        score, errors = graph(torch.from_numpy(model_inputs(model, rows[1200:])))
    flat = model.flatline
    if flat is None:
        np.testing.assert_allclose(errors.numpy().mean(axis=0), 1.0, rtol=1e-3)
    else:  # penalty = weight x the scaled validation scores' 0.999 quantile x features
        top = model.training_summary["flatline"]["val_score_q999"]
        assert flat[1] == pytest.approx(params.flatline_weight * top * 3, rel=1e-5)
        assert 0.8 < float(np.quantile(score.numpy(), 0.5)) < 1.2
    assert check_parity(model, export_onnx(model), rows[1200:]).passed
    restored = TrainedDetector.from_bytes(model.to_bytes())
    np.testing.assert_array_equal(restored.error_scale_inverse, inverse)
    unscaled = train_detector(replace(params, error_scale="none"), rows[:1200], rows[1200:],
                              ["a", "b", "c"])
    assert unscaled.error_scale_inverse is None and "error_scale" not in unscaled.history
