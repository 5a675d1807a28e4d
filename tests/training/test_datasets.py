from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ds_assets.training.datasets import (
    DatasetError,
    build_training_set,
    check_same_training_set,
    contiguous_segments,
    normal_rows,
    select_window,
    split_rows,
    window_reach,
)
from ds_assets.training.promotion import decide_promotion


def _day(day: str, n: int = 100, anomalies: int = 10) -> pd.DataFrame:
    ts = pd.date_range(day, periods=n, freq="10min", tz="UTC")
    label = np.zeros(n, dtype=np.int8)
    label[np.linspace(0, n - 1, anomalies).astype(int)] = 1
    return pd.DataFrame(
        {"timestamp": ts, "host_id": "h", "region": "r", "project_id": "p",
         "x": np.arange(n, dtype=np.float32), "label": label,
         "anomaly_type": np.where(label == 1, "spike", "none")}
    )


def test_time_ordered_split_without_leakage() -> None:
    parts = {d: _day(d) for d in ("2026-11-01", "2026-11-02", "2026-11-03")}
    data = build_training_set(parts, val_fraction=0.2, test_fraction=0.2)
    train, val, test = (data[data.split == s] for s in ("train", "val", "test"))
    assert train.timestamp.max() < val.timestamp.min() <= val.timestamp.max() < test.timestamp.min()
    assert train.label.sum() == 0 and val.label.sum() == 0
    assert test.label.sum() > 0
    all_rows = pd.concat(parts.values())
    assert len(test) == (all_rows.timestamp >= test.timestamp.min()).sum()


def test_labeled_validation_keeps_its_anomalies_only() -> None:
    parts = {d: _day(d) for d in ("2026-11-01", "2026-11-02", "2026-11-03")}
    plain = build_training_set(parts, val_fraction=0.2, test_fraction=0.2)
    data = build_training_set(parts, val_fraction=0.2, test_fraction=0.2, labeled_validation=True)
    train, val = data[data.split == "train"], data[data.split == "val"]
    assert train.label.sum() == 0 and val.label.sum() > 0
    # the split points and the other splits are unchanged; normal_rows gives the old val back
    for split in ("train", "test"):
        pd.testing.assert_frame_equal(split_rows(data, split), split_rows(plain, split))
    pd.testing.assert_frame_equal(normal_rows(split_rows(data, "val")), split_rows(plain, "val"))


def test_feature_mismatch_names_the_partition() -> None:
    other = _day("2026-11-02").rename(columns={"x": "y"})
    with pytest.raises(DatasetError, match="partition 2026-11-02 has features"):
        build_training_set({"2026-11-01": _day("2026-11-01"), "2026-11-02": other})


def test_a_split_whose_rows_are_all_anomalous_says_so() -> None:
    """One labeled file whose anomaly covers the validation time (a SKAB experiment): more
    partitions of the same labels cannot help, and the message says what can."""
    day = _day("2026-11-01", n=100, anomalies=0)
    day.loc[70:84, "label"] = 1  # the default val split: 70-85 % of the time
    with pytest.raises(DatasetError, match=r"the val split \(from 2026-11-01 11:40:00 UTC "
                                           r"to .*\) holds 15 rows, none usable as normal: 15 "
                                           r"are labeled anomalous .* add days with normal rows"):
        build_training_set({"2026-11-01": day})


def test_empty_partition_is_named() -> None:
    with pytest.raises(DatasetError, match="partition 2026-11-01 is empty"):
        build_training_set({"2026-11-01": _day("2026-11-01").iloc[:0]})


def test_window_selection() -> None:
    keys = ["2026-11-03", "2026-11-01", "2026-11-02", "2026-11-05"]
    assert select_window(keys, 2, None) == ["2026-11-03", "2026-11-05"]
    assert select_window(keys, 2, "2026-11-03") == ["2026-11-02", "2026-11-03"]
    with pytest.raises(DatasetError, match="no materialized raw_telemetry partitions up to"):
        select_window(keys, 2, "2026-10-01")


def test_a_window_reaching_past_its_calendar_days_is_named() -> None:
    """The last n stored days: with days missing between them, a 7-day drift retrain trained
    on month-old days without a word."""
    old = ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
    recent = ["2026-12-05", "2026-12-06", "2026-12-07"]
    keys = select_window(old + recent, 7, "2026-12-07")
    said = window_reach(keys, 7, "2026-12-07")
    assert said is not None
    assert "reaches back to 2026-11-02: 4 of its days are older than 2026-12-01" in said
    assert window_reach(recent, 3, "2026-12-07") is None  # consecutive days: nothing to say
    assert window_reach(recent, 7, None) is None  # fewer days stored than asked, all recent
    assert window_reach([], 7, None) is None


def test_promotion_rules() -> None:
    assert decide_promotion("1", 0.5, None, None).promote
    assert decide_promotion("2", 0.6, "1", 0.5).promote
    assert not decide_promotion("2", 0.5, "1", 0.5).promote  # must beat it: a tie keeps it
    lost = decide_promotion("2", 0.4, "1", 0.5)
    assert not lost.promote and "0.4000 < champion 0.5000" in lost.reason
    assert not decide_promotion("2", float("nan"), "1", 0.5).promote


def test_contiguous_segments_break_at_removed_rows() -> None:
    times = pd.date_range("2026-11-01", periods=6, freq="60s", tz="UTC")
    frame = pd.DataFrame(
        {
            "timestamp": list(times[[0, 1, 3, 4, 5]]) + list(times[[0, 1]]),
            "host_id": ["a"] * 5 + ["b"] * 2,
        }
    )
    # host a lost the row at t=2 (an anomaly removed from training): windows must not span it
    assert contiguous_segments(frame).tolist() == ["a#0", "a#0", "a#1", "a#1", "a#1", "b#0", "b#0"]


def test_jitter_and_a_short_step_are_no_gaps_but_holes_are() -> None:
    """With the smallest step as the interval, one step 1 ms short (a clock correction) or
    scrape jitter made every normal step a gap: the host became one-row segments and gave a
    temporal model no window. Interleaved hosts keep their own intervals."""
    rng = np.random.default_rng(0)
    start = pd.Timestamp("2026-11-01", tz="UTC")
    minutes = start + pd.to_timedelta(np.arange(600) * 60.0 + rng.uniform(-0.5, 0.5, 600),
                                      unit="s")
    hourly = start + pd.to_timedelta(np.arange(40) * 3600.0, unit="s")
    hourly = hourly.delete([10, 11])  # a hole of two missing rows
    corrected = list(minutes)
    corrected[300:] = [t - pd.Timedelta(milliseconds=1) for t in corrected[300:]]
    frame = pd.DataFrame({"timestamp": [*corrected, *hourly],
                          "host_id": ["m"] * 600 + ["h"] * 38}).sort_values(
        "timestamp", kind="stable", ignore_index=True)
    segments = contiguous_segments(frame)
    by_host = pd.Series(segments).groupby(frame["host_id"]).unique()
    assert list(by_host["m"]) == ["m#0"]
    assert list(by_host["h"]) == ["h#0", "h#1"]


def test_contiguous_segments_need_the_entity_column() -> None:
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-11-01", periods=2, tz="UTC")})
    with pytest.raises(DatasetError, match="no 'host_id' column"):
        contiguous_segments(frame)


def test_a_bundle_is_evaluated_only_on_its_own_training_set() -> None:
    times = pd.date_range("2026-11-01", periods=6, freq="12h", tz="UTC")
    frame = pd.DataFrame({"timestamp": times, "split": ["train"] * 3 + ["val", "test", "test"]})
    lineage = {"partitions": ["2026-11-01", "2026-11-02", "2026-11-03"],
               "rows": {"train": 3, "val": 1, "test": 2}}
    check_same_training_set(lineage, frame)  # the set it was trained from: fine
    with pytest.raises(DatasetError, match="may not be held out"):
        check_same_training_set({**lineage, "partitions": ["2026-11-02", "2026-11-03"]}, frame)
    with pytest.raises(DatasetError, match="Re-materialize the detector"):
        check_same_training_set({**lineage, "rows": {"train": 2, "val": 2, "test": 2}}, frame)


def test_unlabeled_days_train_with_their_screened_rows_left_out() -> None:
    """A day without labels trains: its rows are marked label_known False, train/val keep
    those the screen did not mark, and the test split keeps them all."""
    days = ("2026-11-01", "2026-11-02", "2026-11-03")
    parts = {d: _day(d) for d in days[:2]}
    unlabeled = _day(days[2]).drop(columns=["label", "anomaly_type"])
    parts[days[2]] = unlabeled
    screen = np.zeros(len(unlabeled), bool)
    screen[:30] = True  # early rows of the day: train/val for a 2-day-long window
    data = build_training_set(parts, val_fraction=0.3, test_fraction=0.2,
                              screened={days[2]: screen})
    known = data["label_known"].to_numpy(bool)
    day3 = data["timestamp"].dt.date.astype(str) == days[2]
    assert not known[day3].any() and known[~day3].all()
    assert (data.loc[day3, "label"] == 0).all()
    assert (data.loc[day3, "anomaly_type"] == "unknown").all()
    fitted = data["split"] != "test"
    screened_times = set(unlabeled["timestamp"][screen])
    assert not data.loc[fitted & day3, "timestamp"].isin(screened_times).any()
    # labeled anomalies are still dropped from train/val; test keeps every row
    assert data.loc[fitted & ~day3, "label"].sum() == 0
    test = data[data["split"] == "test"]
    assert len(test) == (pd.concat(parts.values()).timestamp >= test.timestamp.min()).sum()
    assert "_screened" not in data.columns


def test_a_screen_of_the_wrong_length_is_refused() -> None:
    unlabeled = _day("2026-11-02").drop(columns=["label", "anomaly_type"])
    with pytest.raises(DatasetError, match="screen of partition 2026-11-02 covers 3 rows"):
        build_training_set({"2026-11-01": _day("2026-11-01"), "2026-11-02": unlabeled},
                           screened={"2026-11-02": np.zeros(3, bool)})
