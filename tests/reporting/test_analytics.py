"""Dataset analytics used as materialization metadata: top-k, hourly series, histograms, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ds_assets.reporting.analytics import (
    ScoredSummary,
    error_distribution,
    histogram_table,
    hourly_png,
    hourly_series,
    png_markdown,
    top_k,
    top_k_markdown,
)


def _scored() -> pd.DataFrame:
    n = 48 * 4
    hosts = np.repeat(["h0", "h1", "h2", "h3"], 48)
    stamps = np.tile(pd.date_range("2026-11-02", periods=48, freq="30min", tz="UTC"), 4)
    label = np.zeros(n, bool)
    label[[5, 6, 7, 60, 61, 150]] = True
    flags = label.copy()
    flags[[7, 150]] = False  # two misses
    flags[[100, 101, 102]] = True  # three false alarms on h2
    return pd.DataFrame({
        "timestamp": stamps, "host_id": hosts,
        "region": np.where(np.isin(hosts, ["h0", "h1"]), "eu-west", "us-east"),
        "project_id": "proj-a", "score": np.where(flags, 3.0, 0.1),
        "is_anomaly": flags, "label": label.astype(np.int8),
        "anomaly_type": np.where(label, np.where(np.arange(n) < 100, "spike", "level_shift"),
                                 "none"),
    })


def test_top_k_ranks_groups_by_flagged_rows() -> None:
    table = top_k(_scored(), "host_id", "is_anomaly", k=2)
    assert list(table["host_id"]) == ["h2", "h0"]
    assert list(table["flagged"]) == [3, 2]
    assert table.loc[0, "rate"] == 3 / 48
    text = top_k_markdown(_scored(), "is_anomaly")
    assert "**by region**" in text and "**by anomaly_type**" in text
    assert "| none |" not in text  # normal rows are not an anomaly type


def test_hourly_series_gives_a_mean_and_rate_per_hour() -> None:
    series = hourly_series(_scored(), "score", "is_anomaly")
    assert len(series) == 24
    assert series.loc[3, "anomaly_rate"] == 2 / 8  # rows 6 and 7 (03:00) of 8 in that hour
    assert png_markdown(hourly_png(series)).startswith("![plot](data:image/png;base64,iVBOR")


def test_histogram_counts_every_finite_value() -> None:
    table = histogram_table(pd.Series([0.0, 1.0, 2.0, np.nan, 10.0]), bins=5)
    assert int(table["rows"].sum()) == 4
    assert table["low"].iloc[0] == 0.0 and table["high"].iloc[-1] == 10.0


def test_error_distribution_by_type_and_region() -> None:
    by_type = error_distribution(_scored(), "anomaly_type").set_index("anomaly_type")
    assert by_type.loc["spike", "tp"] == 4 and by_type.loc["spike", "fn"] == 1
    assert by_type.loc["level_shift", "recall"] == 0.0
    assert by_type.loc["none", "fp"] == 3
    by_region = error_distribution(_scored(), "region").set_index("region")
    assert by_region.loc["us-east", "false_alarm_rate"] == round(3 / 95, 6)
    assert error_distribution(_scored().drop(columns="label"), "region").empty


def test_a_pipe_inside_a_cell_does_not_split_the_row() -> None:
    from ds_assets.reporting.analytics import markdown_table

    frame = pd.DataFrame({"baseline": ["zscore"], "rule": ["max |z| over features"]})
    table = markdown_table(frame)
    row = table.splitlines()[2]
    assert row == "| zscore | max \\|z\\| over features |"
    assert row.replace("\\|", "").count("|") == 3  # two cells: three unescaped separators


@settings(max_examples=25, deadline=None)
@given(unit=st.sampled_from(["s", "ms", "us", "ns"]), seed=st.integers(0, 10_000),
       parts=st.integers(1, 5), wide=st.booleans(), dictionary=st.booleans(),
       untimed=st.booleans())
# two rows in three parts: an empty batch (its sums once cast the totals to integers, and its
# all-null ids could not be read as a dictionary)
@example(unit="s", seed=1515, parts=3, wide=False, dictionary=False, untimed=False)
@example(unit="s", seed=1515, parts=3, wide=False, dictionary=True, untimed=False)
def test_summing_arrow_batches_in_numpy_equals_the_pandas_sums(
    unit: str, seed: int, parts: int, wide: bool, dictionary: bool, untimed: bool,
) -> None:
    """``ScoredSummary.add_table`` (bincounts over dictionary indices and hours) gives what
    ``add`` (pandas groupby) gives: any time unit, times before 1970 and years apart, rows
    without a time, unscored rows, rows without a group, ids stored as dictionaries or
    strings."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    step = np.timedelta64(3 * 365 * 86_400 // n if wide else 37, "s")
    times = np.datetime64("1969-12-31T22:00:00") + np.arange(n) * step
    frame = pd.DataFrame({
        "timestamp": pd.to_datetime(times.astype(f"datetime64[{unit}]")).tz_localize("UTC"),
        "host_id": rng.choice(["h1", "h2", "h3", None], n),
        "region": rng.choice(["eu", "us", None], n), "project_id": "p1",
        "label": (rng.random(n) < 0.2).astype(np.int8),
        "anomaly_type": rng.choice(["normal", "spike", "drift"], n),
        "score": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)).astype(np.float32),
        "is_anomaly": rng.random(n) < 0.3,
    })
    if untimed:  # rows without a time count everywhere but in the hourly series
        frame.loc[rng.random(n) < 0.1, "timestamp"] = pd.NaT
    by_pandas, by_numpy = ScoredSummary(), ScoredSummary()
    for rows in np.array_split(np.arange(n), parts):
        part = frame.iloc[rows].reset_index(drop=True)
        by_pandas.add(part)
        table = pa.Table.from_pandas(part, preserve_index=False)
        if dictionary:
            at = table.schema.get_field_index("host_id")
            table = table.set_column(at, "host_id", table.column("host_id").dictionary_encode())
        by_numpy.add_table(table)
    assert (by_numpy.rows, by_numpy.flagged) == (by_pandas.rows, by_pandas.flagged)
    pd.testing.assert_frame_equal(by_numpy.hourly(), by_pandas.hourly())
    assert by_numpy.top_k_markdown() == by_pandas.top_k_markdown()
    for by in ("anomaly_type", "region", "project_id"):
        pd.testing.assert_frame_equal(by_numpy.errors(by), by_pandas.errors(by))


def test_top_k_by_anomaly_type_fills_its_places_with_anomaly_types() -> None:
    """Normal rows took one of the k places and were then dropped: 4 types shown of 5."""
    types = ["a", "b", "c", "d", "e", "f"]
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2026-11-02", periods=70, freq="min", tz="UTC"),
        "host_id": "h", "region": "r", "project_id": "p",
        "anomaly_type": ["none"] * 40 + [t for t in types for _ in range(5)],
        "is_anomaly": [True] * 10 + [False] * 30 + [i % 5 < 3 - (j > 2)
                                                    for j in range(6) for i in range(5)]})
    text = top_k_markdown(frame, "is_anomaly", k=5).split("**by anomaly_type**")[1]
    assert text.count("\n| ") == 6 and "| none |" not in text  # header + 5 types


def test_hours_are_utc_whatever_zone_the_rows_carry_and_the_plot_keeps_gaps() -> None:
    """Tz-aware rows were floored in their own zone (other buckets than the same instants in
    UTC; AmbiguousTimeError at a DST change); the plot drew row positions as hours."""
    utc = pd.date_range("2024-01-01", periods=6, freq="20min", tz="UTC")
    frame = pd.DataFrame({"timestamp": utc, "score": np.arange(6.0),
                          "is_anomaly": [1, 0, 1, 0, 1, 0]})
    local = frame.assign(timestamp=utc.tz_convert("Asia/Kolkata"))
    pd.testing.assert_frame_equal(hourly_series(local, "score", "is_anomaly"),
                                  hourly_series(frame, "score", "is_anomaly"))
    dst = frame.assign(timestamp=pd.date_range("2023-11-05 05:00", periods=6, freq="20min",
                                               tz="UTC").tz_convert("America/New_York"))
    assert len(hourly_series(dst, "score", "is_anomaly")) == 2
    gapped = pd.DataFrame({"hour": ["2024-01-01 22:00", "2024-01-02 05:00"],
                           "mean_score": [1.0, 2.0], "anomaly_rate": [0.0, 0.5]})
    assert hourly_png(gapped).startswith(b"\x89PNG")
