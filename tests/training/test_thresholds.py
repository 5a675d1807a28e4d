from __future__ import annotations

import numpy as np
import pytest

from ds_assets.training.thresholds import (
    ThresholdError,
    calibrate_best_f1,
    calibrate_quantile,
    calibrate_threshold,
    entity_thresholds,
)


def test_quantile_rule_records_its_numbers() -> None:
    scores = np.arange(1001, dtype=np.float64)
    value, rule = calibrate_quantile(scores, quantile=0.99, margin=1.5)
    assert value == pytest.approx(990 * 1.5)
    assert rule["rule"] == "quantile" and rule["calibration_rows"] == 1001
    assert rule["quantile"] == 0.99 and rule["margin"] == 1.5 and rule["quantile_value"] == 990
    assert rule["flag"] == "score > threshold"


def test_quantile_rule_skips_unscored_rows_and_rejects_bad_input() -> None:
    scores = np.r_[np.full(5, np.nan), np.arange(101.0)]
    value, rule = calibrate_quantile(scores, quantile=0.5)
    assert value == 50.0 and rule["unscored_rows"] == 5 and rule["calibration_rows"] == 101
    with pytest.raises(ThresholdError, match="no calibration scores"):
        calibrate_quantile(np.array([]))
    with pytest.raises(ThresholdError, match=r"3 rows had no score"):
        calibrate_quantile(np.full(3, np.nan))
    with pytest.raises(ThresholdError, match=r"quantile=1\.0"):
        calibrate_quantile(scores, quantile=1.0)
    with pytest.raises(ThresholdError, match="margin=0"):
        calibrate_quantile(scores, margin=0)
    with pytest.raises(ThresholdError, match="inf"):
        calibrate_quantile(np.array([1.0, np.inf]))


def test_best_f1_threshold_reproduces_its_f1_with_strict_flags() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(500) < 0.1).astype(int)
    scores = (rng.normal(size=500) + 2.5 * labels).astype(np.float32)
    value, rule = calibrate_best_f1(scores, labels)
    flags = scores > np.float32(value)
    tp = int((flags & (labels == 1)).sum())
    f1 = 2 * tp / (flags.sum() + labels.sum())
    assert f1 == pytest.approx(rule["f1"])
    assert rule["rule"] == "best_f1" and rule["calibration_positives"] == labels.sum()
    # brute force over every distinct cut: nothing beats it
    best = max(
        2 * int(((scores > t) & (labels == 1)).sum()) / ((scores > t).sum() + labels.sum())
        for t in np.unique(scores)
    )
    assert rule["f1"] >= best - 1e-12


def test_best_f1_separable_and_ties() -> None:
    scores = np.array([0.1, 0.2, 0.2, 0.9, 0.9, 1.5], np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1])
    value, rule = calibrate_best_f1(scores, labels)
    assert 0.2 < value < 0.9 and rule["f1"] == 1.0 and rule["precision"] == 1.0
    # adjacent float32 values: the threshold still separates them under `>`
    a = np.float32(1.0)
    b = np.nextafter(a, np.float32(2.0))
    value, _ = calibrate_best_f1(np.array([a, b], np.float32), np.array([0, 1]))
    assert not a > np.float32(value) and b > np.float32(value)


def test_auto_picks_best_f1_only_with_both_classes() -> None:
    scores = np.array([0.1, 0.3, 0.2, 5.0, 0.25, np.nan])
    value, rule = calibrate_threshold(scores, np.array([0, 0, 0, 1, 0, 0]))
    assert rule["rule"] == "best_f1" and rule["unscored_rows"] == 1 and 0.3 < value < 5.0
    value, rule = calibrate_threshold(scores[:3], np.zeros(3), quantile=0.5, margin=2.0)
    assert rule["rule"] == "quantile" and value == pytest.approx(0.4)
    # the quantile rule on labeled rows uses the normal ones only
    value, rule = calibrate_threshold(scores[:5], np.array([0, 0, 0, 1, 0]), rule="quantile",
                                      quantile=0.99)
    assert value < 0.3 and rule["calibration_rows"] == 4
    # the only anomaly has no score (temporal warm-up): auto falls back to the quantile rule
    value, rule = calibrate_threshold(np.array([0.1, 0.3, np.nan]), np.array([0, 0, 1]))
    assert rule["rule"] == "quantile"
    with pytest.raises(ThresholdError, match="needs validation labels"):
        calibrate_threshold(scores, rule="best_f1")
    with pytest.raises(ThresholdError, match="both normal and anomalous"):
        calibrate_best_f1(np.arange(3.0), np.zeros(3))
    with pytest.raises(ThresholdError, match="rule='median'"):
        calibrate_threshold(scores, rule="median")


def test_pot_extrapolates_the_tail_the_rows_cannot_resolve() -> None:
    """Exponential scores: the score exceeded with probability 1e-4 is ln(1e4) = 9.21. From
    2,000 rows the empirical quantile can only say "about the maximum"; the fitted tail
    lands near the truth, and matches the empirical quantile where the rows do resolve it."""
    from ds_assets.training.thresholds import calibrate_pot

    rng = np.random.default_rng(0)
    few = rng.exponential(size=2_000)
    value, rule = calibrate_pot(few, risk=1e-4, level=0.95)
    assert rule["rule"] == "pot" and rule["peaks"] == 100
    assert abs(rule["gpd_shape"]) < 0.3 and rule["gpd_scale"] > 0
    assert value == pytest.approx(np.log(1e4), rel=0.2)
    many = rng.exponential(size=200_000)
    value, _ = calibrate_pot(many, risk=1e-3, level=0.98)
    assert value == pytest.approx(float(np.quantile(many, 1 - 1e-3)), rel=0.05)


def test_pot_refuses_what_it_cannot_fit() -> None:
    from ds_assets.training.thresholds import calibrate_pot

    scores = np.random.default_rng(1).exponential(size=300)
    with pytest.raises(ThresholdError, match=r"risk=0.05 must be above 0 and below 1 - level"):
        calibrate_pot(scores, risk=0.05, level=0.98)
    with pytest.raises(ThresholdError, match=r"at least 10 validation scores above its level "
                                             r"and 20 scores in all, got \d+ above the .* of 15"):
        calibrate_pot(scores[:15], risk=1e-3, level=0.99)
    with pytest.raises(ThresholdError, match=r"got 0 above"):
        calibrate_pot(np.ones(100), risk=1e-3)


def test_pot_lowers_its_level_until_the_tail_has_enough_peaks() -> None:
    """60 validation rows (SKAB's 15 % of 400) have one row above the 0.98 quantile; the level
    drops to keep 10 peaks, and the manifest says so."""
    from ds_assets.training.thresholds import calibrate_pot

    scores = np.random.default_rng(3).exponential(size=60)
    value, rule = calibrate_pot(scores, risk=1e-3, level=0.98)
    assert rule["level"] == 0.98 and rule["level_used"] == pytest.approx(1 - 10 / 60)
    assert rule["peaks"] == 10 and value > scores.max()
    _, rule = calibrate_pot(np.random.default_rng(3).exponential(size=5_000), level=0.98)
    assert rule["level_used"] == 0.98


def test_a_fitted_tail_gives_the_threshold_at_other_risks_without_refitting() -> None:
    from ds_assets.training.thresholds import calibrate_pot, pot_at

    scores = np.random.default_rng(4).exponential(size=3_000)
    _, fitted = calibrate_pot(scores, risk=1e-3)
    for risk, margin in ((1e-2, 1.0), (1e-4, 1.5)):
        assert pot_at(fitted, risk, margin) == calibrate_pot(scores, risk=risk, margin=margin)
    with pytest.raises(ThresholdError, match=r"risk=0\.5 must be above 0"):
        pot_at(fitted, 0.5)


def test_the_pot_rule_uses_the_normal_validation_rows() -> None:
    rng = np.random.default_rng(2)
    scores = np.r_[rng.exponential(size=5_000), np.full(50, 1e3)]  # labeled anomalies far out
    labels = np.r_[np.zeros(5_000, int), np.ones(50, int)]
    value, rule = calibrate_threshold(scores, labels, rule="pot", risk=1e-3, level=0.98)
    assert rule["rule"] == "pot" and rule["calibration_rows"] == 5_000
    assert value < 20  # the labeled anomalies did not stretch the tail


def test_each_entity_gets_its_own_threshold_unless_it_has_too_few_rows() -> None:
    rng = np.random.default_rng(0)
    ids = np.repeat(np.array(["low", "high", "thin", "flat"], dtype=object), [200, 200, 20, 150])
    scores = np.concatenate([rng.random(200), 10 + rng.random(200), rng.random(20),
                             np.full(150, np.nan)]).astype(np.float32)
    scores[:10] = np.nan  # unscored rows do not count towards the minimum

    def q99(own: np.ndarray, entity: object) -> float:
        assert entity in ("low", "high")  # "thin" and "flat" never reach the rule
        return calibrate_quantile(own, 0.99)[0]

    own, counts = entity_thresholds(scores, ids, q99, min_rows=100)
    assert list(own) == ["high", "low"]
    assert own["low"] == calibrate_quantile(scores[10:200], 0.99)[0] < 1.0 < own["high"]
    assert counts == {"scope": "entity", "min_entity_rows": 100, "entities_calibrated": 2,
                      "entities_too_few_rows": 2, "entities_failed": 0}


def test_an_entity_whose_rule_fails_keeps_the_global_threshold() -> None:
    ids = np.array(["a"] * 50 + ["b"] * 50, dtype=object)

    def rule(own: np.ndarray, entity: object) -> float:
        if entity == "a":
            raise ThresholdError("tail too thin")
        return float("inf") if entity == "b" else 1.0

    assert entity_thresholds(np.ones(100), ids, rule, min_rows=10)[1]["entities_failed"] == 2
    with pytest.raises(ThresholdError, match="got 100 scores but 3 entity ids"):
        entity_thresholds(np.ones(100), ids[:3], rule)
    with pytest.raises(ThresholdError, match=r"min_entity_rows=0 must be a whole number >= 1"):
        entity_thresholds(np.ones(100), ids, rule, min_rows=0)


def test_a_margin_above_one_raises_the_threshold_on_negative_scores_too() -> None:
    """threshold = value x margin lowered a negative value: at margin 1.5 about 91 % of the
    normal rows were flagged."""
    scores = (-np.random.default_rng(0).exponential(1.0, 1000) - 5.0).astype(np.float32)
    for rule in ("quantile", "pot"):
        plain, _ = calibrate_threshold(scores, rule=rule, margin=1.0)
        wide, _ = calibrate_threshold(scores, rule=rule, margin=1.5)
        assert wide > plain and (scores > np.float32(wide)).mean() <= 0.01, rule
    positive = np.arange(1.0, 101.0)
    assert calibrate_threshold(positive, rule="quantile", quantile=0.5, margin=2.0)[0] == \
        pytest.approx(2 * np.quantile(positive, 0.5))  # unchanged for a positive value


def test_labels_of_another_length_are_named() -> None:
    with pytest.raises(ThresholdError, match="got 4 scores but 3 labels"):
        calibrate_threshold(np.r_[0.0, 1, 2, 3], np.r_[0, 0, 1])
