"""Level adaptation (``ds_serving.smoothing.Adaptation``): the rule on crafted sequences, batch =
stream = causal, the same flags as the threshold on ``adapted_scores``, validation, manifests,
bundles, hot-reload adoption and the live scorer flagging exactly as dataset scoring does."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_assets.assets.detector import BundleConfig
from ds_assets.training.bundling import adaptation, build_bundle, row_scores
from ds_assets.training.datasets import split_rows
from ds_assets.training.export import export_onnx
from ds_assets.training.thresholds import ThresholdError
from ds_serving.alerting import AlertPolicy
from ds_serving.bundle import load_bundle
from ds_serving.smoothing import (
    Adaptation,
    Rebaseline,
    Smoothing,
    SmoothingError,
    StreamingSmoother,
    adapted_scores,
    flag_scores,
    smooth_flags,
)
from tests.support.serving import normal_rows, write_point_bundle
from tests.support.smoothing import assert_streams_like_the_table, dataset_and_live_flags
from tests.training.test_bundling import _trained


def test_the_level_follows_clipped_log_scores_and_only_ever_raises_the_threshold() -> None:
    # reference 1, rate 0.5, clip 2: row 1 (4) moves the log level by 0.5 x log 2 (its pull is
    # clipped to 2 x the level), row 2 is judged at 4 / sqrt(2) and pulls up to log 2 ...
    rule = Adaptation(rate=0.5, reference=1.0)
    got = adapted_scores(np.array([1.0, 4.0, 4.0, 4.0]), None, rule)
    np.testing.assert_allclose(got, [1.0, 4.0, 4.0 / math.sqrt(2), 2.0])
    # scores under the reference lower the level, never the threshold
    quiet = adapted_scores(np.array([0.01] * 20 + [3.0]), None, rule)
    assert quiet[-1] == 3.0
    # NaN (warm-up) stays NaN and moves nothing; +inf stays +inf and pulls by the clip alone
    odd = adapted_scores(np.array([np.nan, np.inf, 4.0]), None, rule)
    assert math.isnan(odd[0]) and odd[1] == math.inf
    assert odd[2] == pytest.approx(4.0 / math.sqrt(2))
    # each entity has its own level
    two = adapted_scores(np.array([4.0, 4.0, 4.0]), np.array(["a", "a", "b"]), rule)
    np.testing.assert_allclose(two, [4.0, 4.0 / math.sqrt(2), 4.0])


def test_a_persistent_rise_stops_flagging_while_a_short_incident_is_flagged_throughout() -> None:
    """What it is for: a new regime whose every score is 10x the calibration level stops
    alarming after about 1 / rate rows; a 20-row incident at 5x stays flagged end to end."""
    rng = np.random.default_rng(0)
    base = rng.gamma(4.0, 0.25, 3000)  # median ~0.92, its 0.999 quantile ~3.7
    threshold = float(np.quantile(base[:1000], 0.999))
    smoothing = Smoothing(adapt=Adaptation(rate=0.01, reference=float(np.median(base[:1000]))))
    incident = base.copy()
    incident[500:520] *= 5.0
    flags = flag_scores(incident, threshold, smoothing)
    assert flags[500:520].mean() >= 0.9
    assert flags[520:].sum() == flag_scores(base, threshold, smoothing)[520:].sum()
    regime = base.copy()
    regime[1000:] *= 10.0
    flags = flag_scores(regime, threshold, smoothing)
    plain = flag_scores(regime, threshold, Smoothing())
    assert plain[1000:].mean() > 0.9  # without it every row of the new regime alarms
    assert flags[1000:1050].mean() > 0.9 and flags[1500:].mean() < 0.01


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(0, 150), max_size=4),
       k=st.integers(1, 3), rate=st.sampled_from([0.01, 0.1, 0.5]),
       rebaseline=st.booleans())
def test_stream_in_any_batches_flags_as_the_whole_table_and_as_the_adapted_scores(
    seed: int, cuts: list[int], k: int, rate: float, rebaseline: bool
) -> None:
    """Batch (``flag_scores``) and stream (``StreamingSmoother`` fed in arbitrary pieces) give
    the same flags per entity, NaN rows included; rows before a cut never depend on later
    scores; and the flags are the plain policy's on ``adapted_scores``."""
    rng = np.random.default_rng(seed)
    n = 150
    ids = rng.choice(np.array(["a", "b", "c"]), n)
    scores = np.abs(rng.normal(size=n)) * np.where(np.arange(n) > 70, 6.0, 1.0)
    scores[rng.random(n) < 0.05] = np.nan
    rule = Rebaseline(2.0, 2.0, 10, alpha=0.3) if rebaseline else None
    adapt = Adaptation(rate=rate, reference=0.7)
    policy = Smoothing(k=k, n=3, rebaseline=rule, adapt=adapt)
    whole = assert_streams_like_the_table(policy, scores, ids, 1.5, cuts, rng)
    plain = Smoothing(k=k, n=3, rebaseline=rule)
    np.testing.assert_array_equal(whole, flag_scores(adapted_scores(scores, ids, adapt), 1.5,
                                                     plain, ids))


@pytest.mark.parametrize(("data", "match"), [
    ({"rate": 0, "reference": 1.0}, r"adapt.rate must be in \(0, 1\]"),
    ({"rate": 1.5, "reference": 1.0}, r"adapt.rate must be in \(0, 1\]"),
    ({"rate": 0.01, "reference": 0.0}, r"adapt.reference must be > 0"),
    ({"rate": 0.01, "reference": float("inf")}, r"adapt.reference must be > 0"),
    ({"rate": 0.01, "reference": 1.0, "clip": 1.0}, r"adapt.clip must be > 1"),
    ({"rate": 0.01}, r"missing \['reference'\]"),
    ({"rate": 0.01, "reference": 1.0, "speed": 2}, r"unknown key\(s\) \['speed'\]"),
    ({"rate": "fast", "reference": 1.0}, r"adapt.rate must be a number, got .fast."),
])
def test_bad_adaptations_name_the_value(data: dict, match: str) -> None:
    with pytest.raises(SmoothingError, match=match):
        Smoothing.from_dict({"k": 1, "n": 1, "adapt": data})


def test_manifest_round_trip_describe_and_raw_flag_paths() -> None:
    policy = Smoothing(k=3, n=5, adapt=Adaptation(0.003, 0.25))
    assert Smoothing.from_dict(policy.to_dict()) == policy
    assert policy.to_dict()["adapt"] == {"rate": 0.003, "reference": 0.25, "clip": 2.0}
    assert policy.enabled and Smoothing(adapt=Adaptation(0.1, 1.0)).enabled
    assert policy.describe() == "3-of-5, level adaptation rate 0.003"
    with pytest.raises(SmoothingError, match=r"smoothing\.adapt must be a mapping"):
        Smoothing.from_dict({"adapt": 0.01})
    with pytest.raises(SmoothingError, match="use flag_scores"):
        smooth_flags(np.ones(3, bool), policy)
    with pytest.raises(SmoothingError, match="use apply_scores"):
        StreamingSmoother(policy).apply(np.ones(3, bool), np.array(["a"] * 3))


def test_adoption_starts_the_level_afresh() -> None:
    """Hot reload: the level belongs to the old model's scores; the raw-flag tail carries."""
    policy = Smoothing(adapt=Adaptation(rate=0.5, reference=1.0))
    old = StreamingSmoother(policy)
    ids = np.array(["h"] * 10)
    old.apply_scores(np.full(10, 8.0), 1.0, ids)  # the level is now ~8
    assert not old.apply_scores(np.array([4.0]), 1.0, ids[:1])[0]
    new = StreamingSmoother(policy)
    new.adopt(old)
    assert new.apply_scores(np.array([4.0]), 1.0, ids[:1]).tolist() == [True]


def test_bundles_reference_the_median_normal_validation_score(tmp_path: Path) -> None:
    training_set, _, detector = _trained()
    onnx = export_onnx(detector)
    bundle = build_bundle(
        tmp_path / "models", "m", onnx, detector, training_set, threshold_rule="quantile",
        quantile=0.99, margin=1.0, smoothing=Smoothing(), alerting=AlertPolicy(), lineage={},
        adapt_rate=0.003,
    )
    adapt = load_bundle(bundle.path).manifest.policy.smoothing.adapt
    val = split_rows(training_set, "val")
    normal = val["label"].to_numpy() == 0
    assert adapt is not None and adapt.rate == 0.003
    assert adapt.reference == pytest.approx(float(np.median(row_scores(onnx, detector, val)
                                                           [normal])))
    with pytest.raises(ThresholdError, match=r"adapt_rate=0.01: .*median normal validation "
                                             r"score, which is 0 here .*use adapt_rate 0"):
        adaptation(np.zeros(50), 0.01)
    with pytest.raises(ThresholdError, match=r"adapt_rate: smoothing.adapt.rate must be in"):
        adaptation(np.ones(50), 2.0)
    assert BundleConfig().adapt_rate == 0.0  # off unless asked for


def test_live_scorer_flags_like_dataset_scoring(tmp_path: Path) -> None:
    """A bundle whose policy adapts: single rows streamed to the gRPC scorer get the flags
    ``score_frame`` (the scored_telemetry asset's function) gives the same rows."""
    models = tmp_path / "models"
    smoothing = Smoothing(k=1, n=1, adapt=Adaptation(rate=0.05, reference=0.5))
    path = write_point_bundle(models, smoothing=smoothing.to_dict())
    rows = normal_rows(240, 5)
    rows[60:200] += 2.0  # a new regime for 140 rows, an incident inside it
    rows[150:160] += 6.0
    expected, streamed, info = dataset_and_live_flags(models, path, rows)
    deployed = expected["is_anomaly"].to_numpy()
    assert (deployed != expected["raw_is_anomaly"].to_numpy()).any()  # the rule acted
    assert deployed[150:160].all()
    np.testing.assert_array_equal(streamed, deployed)
    assert '"adapt"' in info.smoothing_json


@pytest.mark.parametrize(("data", "match"), [
    ({"rate": True, "reference": 1.0}, r"adapt.rate must be a number, got True"),
    ({"rate": 0.01, "reference": True}, r"adapt.reference must be a number, got True"),
    ({"rate": "0.01", "reference": 1.0}, r"adapt.rate must be a number, got '0.01'"),
    ({"rate": 0.01, "reference": 1.0, "clip": True}, r"adapt.clip must be a number, got True"),
    ({"rate": 0.01, "reference": None}, r"adapt.reference must be a number, got None"),
])
def test_adaptation_values_must_be_numbers_not_bools_or_text(data: dict, match: str) -> None:
    """A manifest's ``true`` or ``"0.01"`` is refused, naming the key, as the other sections
    refuse them (found by review: they loaded as 1.0 and 0.01)."""
    with pytest.raises(SmoothingError, match=match):
        Smoothing.from_dict({"adapt": data})
    assert Smoothing.from_dict({"adapt": {"rate": 1, "reference": 2}}).adapt == Adaptation(1, 2)


def test_a_long_run_of_inf_stays_inf_and_flagged() -> None:
    """Each +inf row raises the level by rate x log(clip) without bound; the factor is capped,
    so +inf stays +inf (flagged) and a finite score after it stays a number (found by review:
    from row 1,025 at rate 1, inf / inf gave NaN, never flagged)."""
    adapt = Adaptation(rate=1.0, reference=1.0)
    scores = np.concatenate([np.full(1100, np.inf), [5.0]])
    got = adapted_scores(scores, None, adapt)
    assert np.isposinf(got[:1100]).all() and np.isfinite(got[1100])
    assert flag_scores(scores, 3.0, Smoothing(adapt=adapt))[:1100].all()


def test_bundles_refuse_adaptation_beside_per_entity_thresholds(tmp_path: Path) -> None:
    """Each host's own threshold sits at its own level already: adaptation (one global
    reference) would scale a noisy host's threshold again and lose its incidents (found by
    review: 20 of 20 incident rows flagged without it, 0 with it)."""
    training_set, _, detector = _trained()
    with pytest.raises(ThresholdError, match=r"adapt_rate=0.003 with threshold_scope='entity'"
                                             r".*use one of them"):
        build_bundle(tmp_path / "models", "m", export_onnx(detector), detector, training_set,
                     threshold_rule="quantile", quantile=0.99, margin=1.0,
                     smoothing=Smoothing(), alerting=AlertPolicy(), lineage={},
                     threshold_scope="entity", adapt_rate=0.003)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*.onnx"))
