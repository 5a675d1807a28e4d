"""reporting.evaluation against scikit-learn (the reference) and hand-computed examples."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ds_assets.reporting.evaluation import (
    EvaluationReport,
    alarm_rates,
    average_precision,
    best_f1,
    confusion_counts,
    evaluate,
    event_metrics,
    per_type_recall,
    precision_at_k,
    precision_recall_f1,
    roc_auc,
    skab_f1,
)


def _random_case(seed: int, n: int, decimals: int | None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(np.int64)
    y[:2] = [0, 1]  # both classes always present
    s = rng.normal(size=n) + 1.2 * y
    if decimals is not None:
        s = np.round(s, decimals)
    return y, s


# ---------------------------------------------------------------------------------------------
# ranking metrics vs sklearn


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [None, 1, 0], ids=["continuous", "ties-1dp", "ties-0dp"])
def test_ranking_metrics_match_sklearn(seed: int, decimals: int | None) -> None:
    y, s = _random_case(seed, 400, decimals)
    if decimals is not None:
        assert np.unique(s).size < s.size / 4  # the tie handling is really exercised
    assert abs(roc_auc(y, s) - roc_auc_score(y, s)) <= 1e-12
    assert abs(average_precision(y, s) - average_precision_score(y, s)) <= 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_ranking_metrics_match_sklearn_on_tiny_inputs(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    y = np.array([0, 1, 0, 1, 1, 0, 0])
    s = rng.integers(0, 3, size=y.size).astype(float)  # only 3 distinct scores
    assert abs(roc_auc(y, s) - roc_auc_score(y, s)) <= 1e-12
    assert abs(average_precision(y, s) - average_precision_score(y, s)) <= 1e-12


def test_ranking_metrics_accept_bool_labels_and_int_scores() -> None:
    y, s = _random_case(7, 200, 1)
    yb = y.astype(bool)
    si = np.round(s * 10).astype(np.int64)
    assert abs(roc_auc(yb, si) - roc_auc_score(y, si)) <= 1e-12
    assert abs(average_precision(yb, si) - average_precision_score(y, si)) <= 1e-12


def test_perfect_reversed_and_constant_scores() -> None:
    y = np.array([0, 0, 1, 1, 0])
    up = np.array([0.1, 0.2, 0.8, 0.9, 0.3])
    assert roc_auc(y, up) == 1.0
    assert average_precision(y, up) == 1.0
    assert roc_auc(y, -up) == 0.0
    assert average_precision(y, -up) == pytest.approx(average_precision_score(y, -up), abs=1e-12)
    flat = np.full(5, 0.7)
    assert roc_auc(y, flat) == 0.5
    assert average_precision(y, flat) == pytest.approx(2 / 5)  # = contamination


def test_tied_infinite_scores_form_one_group() -> None:
    # inf - inf is NaN; tied infinities must still share a rank / a threshold step
    y = np.array([1, 0, 1, 0, 0, 1])
    s = np.array([np.inf, np.inf, 0.3, -np.inf, -np.inf, 0.1])
    finite = np.where(np.isposinf(s), 1e300, np.where(np.isneginf(s), -1e300, s))
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, finite), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, finite), abs=1e-12)


def test_single_class_is_nan() -> None:
    s = np.arange(4.0)
    assert math.isnan(roc_auc(np.zeros(4), s))
    assert math.isnan(roc_auc(np.ones(4), s))
    assert math.isnan(average_precision(np.zeros(4), s))
    assert average_precision(np.ones(4), s) == 1.0  # all positives: precision is 1 everywhere
    f1, threshold = best_f1(np.zeros(4), s)
    assert f1 == 0.0 and math.isnan(threshold)


# ---------------------------------------------------------------------------------------------
# counts and rates


def test_confusion_counts_and_rates_hand_computed() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    flags = np.array([True, True, False, True, False, False, False, False])
    counts = confusion_counts(labels, flags)
    assert counts == {"tp": 2, "fp": 1, "fn": 2, "tn": 3}
    assert all(type(v) is int for v in counts.values())
    precision, recall, f1 = precision_recall_f1(counts)
    assert precision == pytest.approx(2 / 3)
    assert recall == pytest.approx(2 / 4)
    assert f1 == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))  # = 4/7


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"tp": 0, "fp": 0, "fn": 0, "tn": 5}, (0.0, 0.0, 0.0)),  # nothing to find, nothing flagged
        ({"tp": 0, "fp": 0, "fn": 3, "tn": 5}, (0.0, 0.0, 0.0)),  # flags nothing
        ({"tp": 0, "fp": 4, "fn": 0, "tn": 5}, (0.0, 0.0, 0.0)),  # no positives, false alarms
        ({"tp": 0, "fp": 2, "fn": 3, "tn": 5}, (0.0, 0.0, 0.0)),  # all wrong
    ],
)
def test_zero_division_gives_zero(
    counts: dict[str, int], expected: tuple[float, float, float]
) -> None:
    assert precision_recall_f1(counts) == expected


def test_confusion_counts_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="same length"):
        confusion_counts(np.array([0, 1, 1]), np.array([True, False]))


# ---------------------------------------------------------------------------------------------
# best F1


@pytest.mark.parametrize("seed", range(8))
def test_best_f1_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(50) < 0.3).astype(np.int64)
    y[0] = 1
    s = np.round(rng.normal(size=50) + y, 1)
    brute_f1 = max(precision_recall_f1(confusion_counts(y, s >= t))[2] for t in np.unique(s))
    f1, threshold = best_f1(y, s)
    assert f1 == pytest.approx(brute_f1, abs=1e-12)
    assert threshold in s
    assert precision_recall_f1(confusion_counts(y, s >= threshold))[2] == pytest.approx(f1)


def test_best_f1_hand_computed_and_ties_pick_highest_threshold() -> None:
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    # >=0.9: F1 2/3; >=0.8: 1/2; >=0.7: 4/5; >=0.1: 2/3
    assert best_f1(y, s) == (pytest.approx(0.8), 0.7)
    # F1 = 2/3 at both >= 0.9 and >= 0.1: the stricter threshold wins
    assert best_f1(np.array([1, 0, 0, 1]), np.array([0.9, 0.5, 0.4, 0.1])) == (
        pytest.approx(2 / 3),
        0.9,
    )


# ---------------------------------------------------------------------------------------------
# per-type recall


def test_per_type_recall_crafted() -> None:
    types = np.array(["none", "spike", "drift", "spike", "stuck", "none", "spike", "drift"])
    flags = np.array([True, True, False, True, False, True, False, True])
    result = per_type_recall(types, flags)
    assert list(result) == ["drift", "spike", "stuck"]  # sorted, "none" excluded
    assert result == {
        "drift": {"rows": 2, "detected": 1, "recall": 0.5},
        "spike": {"rows": 3, "detected": 2, "recall": pytest.approx(2 / 3)},
        "stuck": {"rows": 1, "detected": 0, "recall": 0.0},
    }
    assert per_type_recall(np.array(["none", "none"]), np.array([True, False])) == {}
    with pytest.raises(ValueError, match="same length"):
        per_type_recall(types, flags[:-1])


# ---------------------------------------------------------------------------------------------
# evaluate() and the report


def _report() -> EvaluationReport:
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    scores = np.array([0.1, 0.5, 0.6, 0.5, 0.9, 0.7, 0.2, 0.3])
    types = np.array(["none", "none", "none", "spike", "spike", "drift", "none", "drift"])
    return evaluate(labels, scores, threshold=0.5, anomaly_types=types)


def test_evaluate_flags_strictly_greater_than_threshold() -> None:
    report = _report()
    # flagged: 0.6 (normal), 0.9, 0.7 (anomalies); both rows at exactly 0.5 are NOT flagged
    assert (report.tp, report.fp, report.fn, report.tn) == (2, 1, 2, 3)
    assert report.precision == pytest.approx(2 / 3)
    assert report.recall == pytest.approx(0.5)
    assert report.f1 == pytest.approx(4 / 7)
    assert report.n_rows == 8 and report.n_anomalies == 4 and report.contamination == 0.5
    assert report.threshold == 0.5
    assert report.per_type_recall == {
        "drift": {"rows": 2, "detected": 1, "recall": 0.5},
        "spike": {"rows": 2, "detected": 1, "recall": 0.5},
    }
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    scores = np.array([0.1, 0.5, 0.6, 0.5, 0.9, 0.7, 0.2, 0.3])
    assert report.roc_auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert report.pr_auc == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert (report.best_f1_oracle, report.best_f1_threshold) == best_f1(labels, scores)
    # moving the threshold just below the tied scores flags them
    lower = evaluate(labels, scores, threshold=0.4999)
    assert (lower.tp, lower.fp) == (3, 2)
    assert lower.per_type_recall == {}


def test_metrics_flat_and_nan_kept() -> None:
    metrics = _report().metrics()
    assert set(metrics) == {
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "pr_auc",
        "best_f1_oracle",
        "contamination",
        "precision_at_k",
        "far",
        "mar",
        "recall_drift",
        "recall_spike",
    }
    assert all(type(v) is float for v in metrics.values())
    single = evaluate(np.zeros(3, dtype=int), np.arange(3.0), threshold=1.0).metrics()
    assert math.isnan(single["roc_auc"]) and math.isnan(single["pr_auc"])
    assert single["precision"] == 0.0 and single["contamination"] == 0.0


def test_to_dict_is_strict_json() -> None:
    report = _report()
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["tp"] == 2 and data["per_type_recall"]["spike"]["detected"] == 1
    assert data["pr_auc"] == pytest.approx(report.pr_auc)
    single = evaluate(np.zeros(3, dtype=int), np.arange(3.0), threshold=1.0).to_dict()
    assert single["roc_auc"] is None and single["pr_auc"] is None
    assert single["best_f1_threshold"] is None
    json.dumps(single, allow_nan=False)


def test_to_markdown_tables() -> None:
    md = _report().to_markdown()
    assert "oracle: threshold chosen on test labels" in md
    assert "score > threshold" in md
    assert "| drift | 2 | 1 |" in md and "| spike | 2 | 1 |" in md
    assert "| actual anomaly | 2 (TP) | 2 (FN) |" in md
    assert md.count("|---|") >= 3  # three tables
    single = evaluate(np.zeros(3, dtype=int), np.arange(3.0), threshold=1.0).to_markdown()
    assert "n/a" in single and "oracle" in single


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1, 1], [0.1, 0.2], "same length, got 3 and 2"),
        ([], [], "no rows to evaluate"),
        ([0, 2, 1, -1], [0.1, 0.2, 0.3, 0.4], "labels contain values other than 0/1: [-1, 2]"),
        ([0, 1, 0], [0.1, float("nan"), float("nan")], "scores contain 2 NaN"),
        ([[0, 1]], [[0.1, 0.2]], "must be 1-D"),
        (["a", "b"], [0.1, 0.2], "labels must be numeric"),
    ],
)
def test_evaluate_validation_messages(labels: list, scores: list, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate(np.array(labels), np.array(scores, dtype=float), threshold=0.5)


def test_evaluate_rejects_misaligned_types_and_nan_threshold() -> None:
    y, s = np.array([0, 1]), np.array([0.1, 0.9])
    with pytest.raises(ValueError, match="anomaly_types and labels"):
        evaluate(y, s, 0.5, anomaly_types=np.array(["none"]))
    with pytest.raises(ValueError, match="threshold is NaN"):
        evaluate(y, s, float("nan"))


def test_metric_functions_validate_too() -> None:
    with pytest.raises(ValueError, match=re.escape("values other than 0/1: [3]")):
        roc_auc(np.array([0, 3]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.array([0, 1]), np.array([np.nan, 0.2]))


# ---------------------------------------------------------------------------------------------
# FAR / MAR / SKAB F1 / precision@k


def test_alarm_rates_and_skab_f1_hand_computed() -> None:
    counts = {"tp": 6, "fp": 2, "fn": 4, "tn": 18}
    far, mar = alarm_rates(counts)
    assert far == pytest.approx(2 / 20)
    assert mar == pytest.approx(4 / 10)
    assert skab_f1(counts) == pytest.approx(6 / (6 + 3))
    # SKAB's formula is the usual F1 written differently
    assert skab_f1(counts) == pytest.approx(precision_recall_f1(counts)[2])
    nothing = {"tp": 0, "fp": 0, "fn": 0, "tn": 5}
    assert math.isnan(alarm_rates(nothing)[1]) and alarm_rates(nothing)[0] == 0.0
    assert math.isnan(skab_f1(nothing))
    assert math.isnan(alarm_rates({"tp": 3, "fp": 0, "fn": 1, "tn": 0})[0])


def test_precision_at_k() -> None:
    y = np.array([1, 0, 1, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.05])
    # k = 3 anomalies: top-3 scores are rows 0, 1, 2 -> 2 anomalies
    assert precision_at_k(y, s) == pytest.approx(2 / 3)
    assert precision_at_k(y, s, k=1) == 1.0
    assert precision_at_k(y, s, k=6) == 0.5
    # equals recall at the same cut (R-precision)
    rng = np.random.default_rng(3)
    y2 = (rng.random(300) < 0.1).astype(int)
    s2 = rng.normal(size=300) + 2 * y2
    k = int(y2.sum())
    top = np.argsort(-s2)[:k]
    assert precision_at_k(y2, s2) == pytest.approx(y2[top].sum() / k)
    assert math.isnan(precision_at_k(np.zeros(3, int), np.arange(3.0)))
    with pytest.raises(ValueError, match="k=7 must be between 1 and the number of rows"):
        precision_at_k(y, s, k=7)


# ---------------------------------------------------------------------------------------------
# events


def test_event_metrics_delay_and_false_alarms_hand_computed() -> None:
    # one entity, 60 s sampling: event A rows 2-4 (first flag at row 3), event B rows 8-9
    # (missed), false-alarm runs at rows 0 and 6, and a flag run 11-12 touching nothing else
    labels = np.array([0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0])
    flags = np.array([1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
    t = np.datetime64("2026-01-01T00:00") + np.arange(14) * np.timedelta64(60, "s")
    stats = event_metrics(labels, flags, t)
    assert (stats.n_events, stats.detected) == (2, 1)
    assert stats.event_recall == 0.5
    assert stats.mean_delay_rows == 1.0 and stats.mean_delay_seconds == 60.0
    assert stats.median_delay_seconds == 60.0
    # row 0 and rows 11-12 are episodes; the run 3-6 overlaps event A, so it is no false alarm
    assert stats.false_alarm_episodes == 2
    assert stats.normal_hours == pytest.approx(9 * 60 / 3600)
    assert stats.false_alarms_per_hour == pytest.approx(2 / (9 / 60))
    assert stats.false_alarms_per_entity_day == pytest.approx(24 * 2 / (9 / 60))
    assert stats.false_alarms_per_1000_rows == pytest.approx(1000 * 2 / 14)
    assert stats.to_dict()["false_alarms_per_1000_rows"] == stats.false_alarms_per_1000_rows


def test_event_metrics_groups_entities_and_orders_by_time() -> None:
    # two hosts interleaved and shuffled: each has one event starting at its 2nd row
    t = np.array([0, 0, 10, 10, 20, 20, 30, 30], dtype=float)
    ent = np.array(["a", "b"] * 4)
    labels = np.array([0, 0, 1, 1, 1, 1, 0, 0])
    flags = np.array([0, 0, 0, 1, 1, 1, 0, 0], dtype=bool)
    order = np.array([7, 2, 5, 0, 3, 6, 1, 4])
    stats = event_metrics(labels[order], flags[order], t[order], ent[order])
    assert stats.n_events == 2 and stats.detected == 2
    assert sorted([stats.mean_delay_seconds, stats.median_delay_seconds]) == [5.0, 5.0]
    assert stats.false_alarm_episodes == 0
    assert stats.normal_hours == pytest.approx(4 * 10 / 3600)
    # the same rows as one entity would merge the hosts' runs: entities matter
    merged = event_metrics(labels, flags, None, None)
    assert merged.n_events == 1 and math.isnan(merged.mean_delay_seconds)
    assert math.isnan(merged.false_alarms_per_hour)


def test_event_metrics_no_events_and_validation() -> None:
    stats = event_metrics(np.zeros(4, int), np.array([1, 1, 0, 1], bool), np.arange(4.0))
    assert stats.n_events == 0 and math.isnan(stats.event_recall)
    assert math.isnan(stats.mean_delay_seconds) and stats.false_alarm_episodes == 2
    with pytest.raises(ValueError, match="timestamps must be datetime64 or numeric"):
        event_metrics(np.zeros(2, int), np.zeros(2, bool), np.array(["x", "y"]))
    with pytest.raises(ValueError, match="entities and labels"):
        event_metrics(np.zeros(2, int), np.zeros(2, bool), None, np.array(["a"]))


def test_evaluate_with_flags_override_and_events() -> None:
    labels = np.array([0, 0, 1, 1, 0, 0])
    scores = np.array([0.1, 0.9, 0.8, 0.7, 0.2, 0.1])
    smoothed = np.array([0, 0, 0, 1, 1, 0], dtype=bool)  # e.g. 2-of-2 smoothing output
    t = np.arange(6) * 30.0
    report = evaluate(labels, scores, 0.5, flags=smoothed, timestamps=t)
    assert (report.tp, report.fp, report.fn, report.tn) == (1, 1, 1, 3)
    assert report.far == pytest.approx(1 / 4) and report.mar == pytest.approx(1 / 2)
    assert report.precision_at_k == 0.5  # top-2 scores: 0.9 (normal), 0.8 (anomaly)
    assert report.events is not None and report.events["mean_delay_seconds"] == 30.0
    metrics = report.metrics()
    assert metrics["mean_delay_seconds"] == 30.0 and metrics["event_recall"] == 1.0
    assert metrics["false_alarms_per_hour"] == 0.0  # the flag at row 4 continues the event run
    md = report.to_markdown()
    assert "false alarms per hour" in md and "missed alarm rate" in md
    json.dumps(report.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="flags and labels"):
        evaluate(labels, scores, 0.5, flags=smoothed[:3])
