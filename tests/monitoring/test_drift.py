"""Drift statistics on known samples: no false alarm without a shift, detection of a small one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ds_assets.monitoring.drift import (
    SCORE_STATS,
    comparable_rows,
    compare,
    rate_flags,
    score_shift,
)
from ds_assets.monitoring.episodes import DriftEpisode, consecutive_drift, plan_retrain
from ds_assets.monitoring.reference import (
    SCORE,
    SCORE_BELOW,
    DriftReference,
    build_reference,
    calibrate_thresholds,
    reference_from_training_set,
)
from ds_assets.monitoring.sketches import (
    DriftError,
    Sketch,
    benjamini_hochberg,
    ks_grid,
    psi,
    wasserstein_normalized,
)
from ds_serving.smoothing import Smoothing, smooth_flags

N_REF = 120_000


def _reference(rng: np.random.Generator) -> DriftReference:
    """Three features of different shapes over 6 days, scores with a 1% flag rate."""
    ts = pd.Series(pd.date_range("2026-11-01", periods=N_REF, freq="4320ms", tz="UTC"))
    frame = pd.DataFrame({
        "timestamp": ts,
        "gauss": rng.normal(10.0, 2.0, N_REF),
        "skewed": rng.exponential(3.0, N_REF),
        "clipped": np.clip(rng.normal(0.0, 1.0, N_REF), 0.0, None),  # half the mass at 0
    })
    scores = rng.gamma(2.0, size=N_REF)
    return build_reference(
        frame, ["gauss", "skewed", "clipped"], scores, scores > np.quantile(scores, 0.99)
    )


def _sample(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "gauss": rng.normal(10.0, 2.0, n),
        "skewed": rng.exponential(3.0, n),
        "clipped": np.clip(rng.normal(0.0, 1.0, n), 0.0, None),
    })


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    return _reference(np.random.default_rng(11))


def test_reference_is_a_sketch_with_recorded_calibration(reference: DriftReference) -> None:
    payload = reference.to_json_bytes()
    assert len(payload) < 50_000  # quantiles, not rows
    back = DriftReference.from_json(payload)
    assert back.features == reference.features
    np.testing.assert_allclose(back.sketches["gauss"].quantiles,
                               reference.sketches["gauss"].quantiles)
    cal = back.calibration
    assert cal["n_chunks"] == 6 and cal["sigmas"] == 3.0
    w = cal["statistics"]["gauss"]["wasserstein"]
    assert len(w["chunk_values"]) == 6
    assert back.thresholds["gauss"]["wasserstein"] == pytest.approx(w["mean"] + 3 * w["std"])
    assert set(back.thresholds[SCORE]) == set(SCORE_STATS)
    assert back.anomaly_rate == pytest.approx(0.01, abs=1e-4)


def test_no_false_alarm_on_a_large_unshifted_sample(reference: DriftReference) -> None:
    rng = np.random.default_rng(12)
    sample = _sample(rng, 1_000_000)
    scores = rng.gamma(2.0, size=len(sample))
    result = compare(reference, sample, scores, scores > np.quantile(scores, 0.99))
    assert not result.drifted, result.table.to_string()
    assert result.drift_score < 1.0
    # the point mass of the clipped feature does not fool the grid KS test
    assert result.table.set_index("feature").loc["clipped", "ks_p_bh"] > 0.01


def test_a_small_real_shift_is_detected_on_that_feature_only(reference: DriftReference) -> None:
    sample = _sample(np.random.default_rng(13), 200_000)
    sample["gauss"] += 0.1 * 2.0  # a tenth of a standard deviation
    result = compare(reference, sample)
    assert result.drifted_features == ["gauss"]
    row = result.table.set_index("feature").loc["gauss"]
    assert row["wasserstein"] == pytest.approx(0.1, abs=0.02)  # in reference stds
    assert row["ks_p_bh"] < 1e-6


def test_a_variance_change_with_the_same_mean_is_detected(reference: DriftReference) -> None:
    sample = _sample(np.random.default_rng(14), 100_000)
    sample["skewed"] = 3.0 + (sample["skewed"] - 3.0) * 1.3
    result = compare(reference, sample)
    assert "skewed" in result.drifted_features


def test_a_tiny_sample_does_not_trigger_on_noise(reference: DriftReference) -> None:
    # a big effect estimate on 30 rows is not significant after BH correction
    sample = _sample(np.random.default_rng(15), 30)
    result = compare(reference, sample)
    assert not result.drifted_features


def test_a_small_day_is_not_score_drift_by_sampling_alone(reference: DriftReference) -> None:
    """Thresholds calibrated on 10,000-row reference days called every 300-row day from the
    same distribution drifted (three in a row request a retrain); they widen for a smaller day,
    and a real shift of a small day still shows."""
    rng = np.random.default_rng(17)
    cut = np.quantile(rng.gamma(2.0, size=100_000), 0.99)
    for labeled in (True, False):
        calls = []
        for _ in range(20):
            same = rng.gamma(2.0, size=300)
            calls.append(score_shift(reference, same, same > cut, labeled=labeled)["drifted"])
        assert sum(calls) <= 1, (labeled, calls)
    shifted = rng.gamma(2.0, size=1_000) * 2.0
    assert score_shift(reference, shifted, shifted > cut)["drifted"]


def test_score_and_anomaly_rate_shift(reference: DriftReference) -> None:
    rng = np.random.default_rng(16)
    scores = rng.gamma(2.0, size=100_000) * 1.5
    shifted = score_shift(reference, scores, scores > 7.0)
    assert shifted["drifted"]
    assert "wasserstein" in shifted["over_threshold"]
    assert shifted["anomaly_rate"] > 5 * reference.anomaly_rate
    same = rng.gamma(2.0, size=100_000)
    assert not score_shift(reference, same, same > np.quantile(same, 0.99))["drifted"]


def test_a_normal_day_with_its_labeled_anomalies_is_compared_on_its_normal_rows(
    reference: DriftReference,
) -> None:
    """The reference holds normal rows only; a day's ordinary labeled anomalies (1 %, with
    scores far above the threshold) would read as score drift if they were compared too."""
    rng = np.random.default_rng(21)
    n = 30_000
    day = _sample(rng, n)
    scores = rng.gamma(2.0, size=n)
    anomalous = rng.random(n) < 0.01
    scores[anomalous] = 40.0 + rng.gamma(2.0, size=int(anomalous.sum()))
    day["label"] = anomalous.astype(int)
    cut = np.quantile(rng.gamma(2.0, size=100_000), 0.99)
    every_row = score_shift(reference, scores, scores > cut)
    assert every_row["drifted"]  # what drift_report saw before it left anomalies out
    rows = comparable_rows(day)
    assert rows.sum() == n - anomalous.sum()
    result = compare(reference, day[rows], scores[rows], (scores > cut)[rows])
    assert not result.score["drifted"] and not result.summary()["drifted"]
    no_labels = comparable_rows(day.drop(columns="label"))
    assert no_labels.all()  # without labels (production) every row is compared...
    unlabeled = compare(reference, day.drop(columns="label"), scores, scores > cut,
                              labeled=False)
    # ...and the score by its part at or below the threshold, the rate reported, not deciding
    assert not unlabeled.score["drifted"] and not unlabeled.summary()["drifted"]
    assert unlabeled.score["anomaly_rate"] == pytest.approx(np.mean(scores > cut))
    assert "at or below the threshold" in unlabeled.score["compared"]


def test_an_unlabeled_day_still_shows_a_shift_of_its_normal_scores(
    reference: DriftReference,
) -> None:
    """Leaving the flagged tail out must not hide drift: normal scores 15 % higher (the same
    1 % incidents on top) are still score drift without labels."""
    rng = np.random.default_rng(22)
    n = 30_000
    scores = rng.gamma(2.0, size=n) * 1.15
    incidents = rng.random(n) < 0.01
    scores[incidents] = 40.0 + rng.gamma(2.0, size=int(incidents.sum()))
    cut = np.quantile(rng.gamma(2.0, size=100_000), 0.99)
    shifted = score_shift(reference, scores, scores > cut, labeled=False)
    assert shifted["drifted"] and set(shifted["over_threshold"]) & {"wasserstein", "psi"}
    same = rng.gamma(2.0, size=n)
    same[incidents] = 40.0
    assert not score_shift(reference, same, same > cut, labeled=False)["drifted"]
    # a day almost all over the threshold has no normal part left: every score is compared
    flooded = rng.gamma(2.0, size=n) + 20.0
    result = score_shift(reference, flooded, flooded > cut, labeled=False)
    assert result["drifted"] and result["compared"].startswith("every score")


def test_infinite_scores_count_and_a_day_without_scores_is_not_compared(
    reference: DriftReference,
) -> None:
    """+inf is a scored row, the most extreme (the scorer's mark for a score the graph could
    not compute): a day 60 % infinite has no normal part left and is compared on every score,
    as the same day at 1e6 is. A day a temporal model could not score at all (each host has
    fewer rows than its window) is reported as not compared, not an IndexError."""
    rng = np.random.default_rng(24)
    cut = np.quantile(rng.gamma(2.0, size=100_000), 0.99)
    for top in (np.inf, 1e6):
        scores = rng.gamma(2.0, size=20_000)
        scores[:12_000] = top
        result = score_shift(reference, scores, scores > cut, labeled=False)
        assert result["drifted"] and result["compared"].startswith("every score"), top
    for labeled in (False, True):  # a labeled day's normal rows too
        unscored = score_shift(reference, np.full(20, np.nan), np.zeros(20, bool),
                               labeled=labeled)
        assert not unscored["drifted"] and unscored["compared"].startswith("no scored rows")


def test_a_reference_from_before_the_unflagged_sketch_compares_every_score(
    reference: DriftReference,
) -> None:
    """Bundles trained before the unflagged score sketch existed keep loading and compare
    unlabeled days on every score, as they did."""
    data = reference.to_dict()
    del data["sketches"][SCORE_BELOW], data["thresholds"][SCORE_BELOW]
    old = DriftReference.from_dict(data)
    scores = np.random.default_rng(23).gamma(2.0, size=5_000)
    result = score_shift(old, scores, scores > 7.0, labeled=False)
    assert result["compared"] == "scores of normal rows against the reference scores"


def test_statistics_agree_with_scipy_on_raw_samples() -> None:
    rng = np.random.default_rng(17)
    a, b = rng.normal(size=50_000), rng.normal(0.3, 1.2, size=50_000)
    ref = Sketch.of(a)
    w = wasserstein_normalized(b, ref) * ref.std
    assert w == pytest.approx(stats.wasserstein_distance(a, b), rel=0.03)
    d, _ = ks_grid(b, ref)
    assert d == pytest.approx(stats.ks_2samp(a, b).statistic, abs=0.01)


def test_psi_of_identical_decile_mass_is_zero_and_grows_with_shift() -> None:
    ref = Sketch.of(np.random.default_rng(18).uniform(size=100_000))
    assert psi(np.linspace(0, 1, 100_001), ref) < 1e-3
    assert psi(np.linspace(0.2, 1.2, 100_001), ref) > 0.5


def test_benjamini_hochberg_matches_the_definition() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # p * m / rank, made monotone from the largest p down
    np.testing.assert_allclose(benjamini_hochberg(p), [0.04, 0.16 / 3, 0.16 / 3, 0.5])


def test_consecutive_drift_runs_end_at_the_last_partition() -> None:
    keys = ["d1", "d2", "d3", "d4", "d5"]
    assert consecutive_drift({"d2": True, "d3": True, "d4": True, "d5": True}, keys) == \
        ["d2", "d3", "d4", "d5"]
    assert consecutive_drift({"d1": True, "d2": True, "d4": True}, keys) == []
    assert consecutive_drift({"d3": True, "d5": True}, keys) == ["d5"]


def test_anomaly_rate_compares_raw_flags_with_the_raw_reference_rate(
    reference: DriftReference,
) -> None:
    """The reference rate is built from raw score > threshold flags; a day scored by a bundle
    with k-of-n smoothing must be judged on its raw flags, not the (rarer) smoothed ones."""
    rng = np.random.default_rng(21)
    scores = rng.gamma(2.0, size=20_000)  # the reference's score distribution: no drift
    raw = scores > stats.gamma(2.0).ppf(0.99)  # the reference flagged its top 1%
    scored = pd.DataFrame({"score": scores, "raw_is_anomaly": raw,
                           "is_anomaly": smooth_flags(raw, Smoothing(2, 3))})
    flags = rate_flags(scored)
    np.testing.assert_array_equal(flags, raw)
    fair = score_shift(reference, scores, flags)
    assert not fair["drifted"], fair
    # the smoothed flags' rate is far below the raw reference rate: a false rate shift
    smoothed = score_shift(reference, scores, scored["is_anomaly"].to_numpy())
    assert "anomaly_rate_shift" in smoothed["over_threshold"]
    # without smoothing score_frame writes only is_anomaly, which is then the raw flags
    plain = scored.drop(columns="raw_is_anomaly")
    np.testing.assert_array_equal(rate_flags(plain), plain["is_anomaly"])
    with pytest.raises(DriftError, match="neither 'raw_is_anomaly' nor 'is_anomaly'"):
        rate_flags(scored[["score"]])


def test_plan_retrain_keeps_one_episode_past_a_fixed_look_back() -> None:
    """The reviewer's storm: a 25-day episode seen through an 8-day look-back (its first
    visible day slides forward daily) is one request when the requested episode is kept."""
    days = [f"2026-11-{d:02d}" for d in range(1, 31)]
    drifted = set(days[5:30])
    requested: DriftEpisode | None = None
    requests = []
    for i in range(len(days)):
        keys = days[max(0, i - 7): i + 1]
        plan = plan_retrain({d: d in drifted for d in keys}, keys, "3", 3, requested)
        requested = plan.requested
        if plan.request:
            requests.append(plan.episode)
    assert requests == [f"3:{days[5]}"]
    assert requested == DriftEpisode("3", days[5], days[29])
    # a new reference version, or a run that does not touch the episode, is a new episode
    plan = plan_retrain({d: True for d in days[25:]}, days[25:], "4", 3, requested)
    assert plan.request and plan.episode == f"4:{days[25]}"
    old = DriftEpisode("3", days[0], days[4])
    plan = plan_retrain({d: True for d in days[6:9]}, days[5:9], "3", 3, old)
    assert plan.request and plan.episode == f"3:{days[6]}"


def test_drift_episode_reads_old_and_new_cursors() -> None:
    assert DriftEpisode.from_cursor("12:2026-11-05") == \
        DriftEpisode("12", "2026-11-05", "2026-11-05")
    ep = DriftEpisode("2", "2026-11-05", "2026-11-09")
    assert DriftEpisode.from_cursor(ep.to_dict()) == ep
    assert DriftEpisode.from_cursor(None) is None
    with pytest.raises(DriftError, match="expected a dict with reference_version"):
        DriftEpisode.from_cursor({"first": "2026-11-05"})


def test_bad_inputs_name_the_problem(reference: DriftReference) -> None:
    with pytest.raises(DriftError, match=r"lack feature column\(s\) \['skewed'\]"):
        compare(reference, pd.DataFrame({"gauss": [1.0], "clipped": [0.0]}))
    with pytest.raises(DriftError, match="feature 'gauss': no finite values"):
        compare(reference, pd.DataFrame({"gauss": [np.nan], "skewed": [1.0],
                                               "clipped": [0.0]}))
    with pytest.raises(DriftError, match="format 7"):
        DriftReference.from_dict({"format": 7})
    with pytest.raises(DriftError, match="at least 3 reference chunks"):
        calibrate_thresholds({"x": np.arange(10.0)}, np.zeros(10, int), np.zeros(10))


def _fitted_and_held_out(days: int, val_days: int) -> tuple[Any, ...]:
    """Hourly-ish rows of one host; training rows scaled down so the model "fits" them (their
    scores sit lower than new normal rows'), validation rows like new data."""
    from ds_serving.scoring import Scorer, score_rows
    from tests.support.models import dense_autoencoder

    rng = np.random.default_rng(21)
    features = [f"f{i}" for i in range(4)]
    n = days * 1440
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=features)
    frame.insert(0, "timestamp", pd.date_range("2026-11-01", periods=n, freq="min", tz="UTC"))
    frame.insert(1, "host_id", "h0")
    frame["split"] = np.where(np.arange(n) < (days - val_days) * 1440, "train", "val")
    frame.loc[frame["split"] == "train", features] *= 0.5
    test_rows = frame.iloc[:100].assign(split="test")
    test_rows[features] = 50.0  # must be ignored entirely
    training_set = pd.concat([frame, test_rows], ignore_index=True)
    scorer = Scorer(dense_autoencoder(4, (8, 2)), features=features, threshold=float("inf"),
                    backend="cpu")

    def scores_of(rows: pd.DataFrame) -> np.ndarray:
        return score_rows(scorer, rows[features].to_numpy(np.float32)).scores

    train_scores = scores_of(frame.loc[frame["split"] == "train"])
    val_scores = scores_of(frame.loc[frame["split"] == "val"])
    day = pd.DataFrame(rng.normal(size=(1440, 4)), columns=features)
    return training_set, features, train_scores, val_scores, day, scores_of(day)


def test_score_baseline_comes_from_held_out_days() -> None:
    """Training rows are in-sample for the model: with enough validation days the score sketch,
    the anomaly rate and their thresholds come from them; features use the whole window."""
    training_set, features, train_scores, val_scores, day, day_scores = \
        _fitted_and_held_out(days=10, val_days=5)
    threshold = float(np.quantile(val_scores, 0.99))
    ref = reference_from_training_set(
        training_set, features, train_scores, val_scores, threshold
    )
    np.testing.assert_allclose(ref.sketches[SCORE].quantiles,
                               Sketch.of(val_scores, SCORE).quantiles, rtol=1e-6)
    assert ref.anomaly_rate == pytest.approx(np.mean(val_scores > threshold))
    fitted = training_set.loc[training_set["split"] != "test", "f0"].to_numpy()
    np.testing.assert_allclose(ref.sketches["f0"].quantiles, Sketch.of(fitted, "f0").quantiles)
    assert ref.calibration["n_chunks"] == 10  # features: the ten days
    assert ref.calibration["score_baseline"]["n_chunks"] == 5  # scores: the held-out days
    assert ref.calibration["score_baseline"]["rows"] == "held-out (validation) rows"
    # a new normal day, scored like the held-out rows, raises no score drift ...
    result = compare(ref, day, day_scores, day_scores > threshold)
    assert not result.score["drifted"], result.score
    # ... but it would against a baseline (and thresholds) from the fitted rows
    in_sample = build_reference(
        training_set.loc[training_set["split"] == "train"].reset_index(drop=True), features,
        train_scores, train_scores > threshold,
    )
    assert compare(in_sample, day, day_scores, day_scores > threshold).score["drifted"]
    with pytest.raises(DriftError, match="val scores for"):
        reference_from_training_set(training_set, features, train_scores,
                                          val_scores[:-1], threshold)
    with pytest.raises(DriftError, match="none of the"):
        reference_from_training_set(training_set, features, train_scores,
                                          val_scores * np.nan, 1.0)


def test_few_held_out_days_fall_back_to_the_whole_window() -> None:
    """One validation day cannot calibrate whole-day thresholds: every reference row is used
    (as for the features), and the calibration record says why."""
    training_set, features, train_scores, val_scores, _, _ = \
        _fitted_and_held_out(days=6, val_days=1)
    ref = reference_from_training_set(training_set, features, train_scores,
                                            val_scores, 1.0)
    all_scores = np.concatenate([train_scores, val_scores])
    np.testing.assert_allclose(ref.sketches[SCORE].quantiles,
                               Sketch.of(all_scores, SCORE).quantiles, rtol=1e-6)
    assert "fewer than 4 whole days" in ref.calibration["score_baseline"]["rows"]


def test_anomaly_rate_threshold_never_goes_below_sampling_noise() -> None:
    """No flagged reference row gives a zero spread; a flagged row or two on a new day is
    sampling noise, not drift."""
    n = 4 * 1000
    chunks = np.repeat(np.arange(4), 1000)
    values = {SCORE: np.random.default_rng(5).gamma(2.0, size=n)}
    thresholds, record = calibrate_thresholds(values, chunks, np.zeros(n))
    floor = record["statistics"][SCORE]["anomaly_rate_shift"]["sampling_floor"]
    assert floor == pytest.approx(3 * np.sqrt((1 / 1000) * (1 - 1 / 1000) / 1000))
    assert thresholds[SCORE]["anomaly_rate_shift"] == floor > 2 / 1000


def _gamma_scores_reference(seed: int) -> tuple[Callable[[], DriftReference], float]:
    """A week of 4.32-s rows with gamma scores: a builder of its reference (called again after
    a floor is patched) and the 0.99 quantile the scores are flagged above."""
    rng = np.random.default_rng(seed)
    ts = pd.Series(pd.date_range("2026-11-01", periods=N_REF, freq="4320ms", tz="UTC"))
    frame = pd.DataFrame({"timestamp": ts, "x": rng.normal(size=N_REF)})
    scores = rng.gamma(2.0, size=N_REF)
    cut = float(np.quantile(scores, 0.99))
    return lambda: build_reference(frame, ["x"], scores, scores > cut), cut


def test_score_psi_below_the_floor_is_not_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    """A week of large days calibrates the score's PSI threshold near 0.001; the demo's normal
    days after the training window (rows the model never fitted, the week's slow wander) sit at
    0.002-0.004 and read as drift depending on training noise. The floor keeps them normal;
    W1 still catches a real shift of the scores."""
    import ds_assets.monitoring.reference as reference_module

    build, cut = _gamma_scores_reference(11)

    day_rng = np.random.default_rng(3)
    day = day_rng.gamma(2.0, size=30_000)
    pulled = day_rng.choice(len(day), 600, replace=False)  # 2 % of the mass moved to the median
    day[pulled] = np.median(day) + day_rng.normal(0.0, 0.05, len(pulled))
    ref = build()
    assert ref.thresholds[SCORE]["psi"] == ref.thresholds[SCORE_BELOW]["psi"] == 0.1
    assert ref.calibration["statistics"][SCORE]["psi"]["floor"] == 0.1
    shape = score_shift(ref, day, day > cut)
    assert 0.001 < shape["psi"] < 0.01 and not shape["drifted"]
    assert score_shift(ref, day * 1.05, day * 1.05 > cut)["over_threshold"] == [
        "wasserstein", "anomaly_rate_shift"]
    monkeypatch.setattr(reference_module, "SCORE_PSI_FLOOR", 0.0)
    assert score_shift(build(), day, day > cut)["over_threshold"] == ["psi"]


def test_score_w1_below_the_floor_is_not_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    """The week's own days calibrate the below-threshold W1 near 0.045 while normal days after
    the window (rows the model never fitted) measured up to 0.041: a tenth of the reference
    spread is the floor. An unlabeled day whose normal part sits a little higher than the
    reference is no drift; a real shift of it still is."""
    import ds_assets.monitoring.reference as reference_module

    build, cut = _gamma_scores_reference(12)

    day = np.random.default_rng(4).gamma(2.0, size=30_000) * 1.04  # out of sample: higher
    ref = build()
    assert ref.thresholds[SCORE_BELOW]["wasserstein"] == 0.1
    assert ref.calibration["statistics"][SCORE_BELOW]["wasserstein"]["floor"] == 0.1
    assert ref.thresholds[SCORE]["wasserstein"] < 0.05  # a labeled day's W1 keeps its own
    shifted = score_shift(ref, day, day > cut, labeled=False)
    assert 0.02 < shifted["wasserstein"] < 0.1 and not shifted["drifted"]
    real = score_shift(ref, day * 1.3, day * 1.3 > cut, labeled=False)
    assert real["drifted"] and "wasserstein" in real["over_threshold"]
    monkeypatch.setattr(reference_module, "SCORE_W1_FLOOR", 0.0)
    assert score_shift(build(), day, day > cut, labeled=False)["over_threshold"] == [
        "wasserstein"]


def test_a_feature_constant_in_the_reference_scores_no_drift_until_it_moves() -> None:
    """Its thresholds are 0: unmoved, 0/0 gave a NaN drift score in the report; a move is
    an infinite ratio, drifted."""
    rng = np.random.default_rng(5)
    ts = pd.Series(pd.date_range("2026-11-01", periods=N_REF, freq="4320ms", tz="UTC"))
    frame = pd.DataFrame({"timestamp": ts, "gauss": rng.normal(10.0, 2.0, N_REF),
                          "stuck": 0.0})
    scores = rng.gamma(2.0, size=N_REF)
    ref = build_reference(frame, ["gauss", "stuck"], scores,
                          scores > np.quantile(scores, 0.99))
    same = compare(ref, pd.DataFrame({"gauss": rng.normal(10.0, 2.0, 5000), "stuck": 0.0}))
    row = same.table.set_index("feature").loc["stuck"]
    assert row["drift_score"] == 0.0 and not row["drifted"]
    for level in (1.0, -1.0):  # up or down (downward PSI stays 0: its ratio was NaN, too)
        moved = compare(ref, pd.DataFrame({"gauss": rng.normal(10.0, 2.0, 5000),
                                           "stuck": level}))
        assert moved.table.set_index("feature").loc["stuck", "drift_score"] == np.inf
        assert moved.drifted_features == ["stuck"]  # KS saw no mass below its grid before
