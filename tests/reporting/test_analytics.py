"""Dataset analytics used as materialization metadata: top-k, hourly series, histograms, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ds_assets.reporting.analytics import (
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
