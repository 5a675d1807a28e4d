"""What ``ds-dataset scaffold`` infers from a user's file, and what it says when it cannot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ds_assets.telemetry.declaration import DatasetSpec
from ds_assets.telemetry.files import read_rows
from ds_assets.telemetry.inspection import inspect_source
from ds_assets.telemetry.sources import SourceError


def test_iso_timestamps_whose_first_value_has_no_decimals_are_found(tmp_path: Path) -> None:
    """``isoformat()`` writes decimals only where a time has a fraction, so the first value's
    layout does not fit the rest; the column is still the timestamp, its range read whole."""
    times = pd.date_range("2024-08-01", periods=300, freq="1min", tz="UTC")
    times = times + pd.to_timedelta([0.0] + [0.5] * 299, unit="s")
    frame = pd.DataFrame({"timestamp": [t.isoformat() for t in times], "a": 1.0, "b": 2.0})
    frame.to_csv(tmp_path / "x.csv", index=False)
    found = inspect_source(str(tmp_path / "x.csv"), "x")
    assert found.timestamp == "timestamp" and found.features == ["a", "b"]
    assert pd.Timestamp(found.first) == times[0] and pd.Timestamp(found.last) == times[-1]


def test_epoch_numbers_in_a_time_column_ask_for_their_unit(tmp_path: Path) -> None:
    pd.DataFrame({"timestamp": [1709251200 + 60 * i for i in range(5)], "a": 1.0}).to_csv(
        tmp_path / "x.csv", index=False)
    with pytest.raises(SourceError, match=r"column 'timestamp' holds numbers \(1709251200\); "
                                          r"if they are times pass --timestamp timestamp "
                                          r"--timestamp-unit"):
        inspect_source(str(tmp_path / "x.csv"), "x")


def test_empty_and_reserved_columns_are_left_out_and_the_path_is_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A trailing separator's empty column and a numeric column named like one the platform
    writes (``split``) would fail every day or the declaration: they are left out, saying so.
    A relative path is written absolute, so materialize works from any directory."""
    times = pd.date_range("2024-03-01", periods=50, freq="1min")
    frame = pd.DataFrame({"time": times.strftime("%Y-%m-%d %H:%M"), "a": 1.0, "split": 0,
                          "empty": float("nan")})
    frame.to_csv(tmp_path / "x.csv", index=False)
    monkeypatch.chdir(tmp_path)
    found = inspect_source("x.csv", "x")
    assert found.features == ["a"]
    assert any("['empty'] hold no value" in n for n in found.notes)
    assert any("['split'] carry names the platform reserves" in n for n in found.notes)
    assert found.source["path"] == str(tmp_path / "x.csv")


def test_the_interval_is_each_entitys_in_time_order(tmp_path: Path) -> None:
    """Two hosts a minute apart each, 30 s out of step, the file shuffled: the interval is a
    minute and nothing is a gap (in file order it read 30 s, or hours)."""
    times = pd.date_range("2024-03-01", periods=100, freq="1min")
    frame = pd.concat([
        pd.DataFrame({"time": times.strftime("%Y-%m-%d %H:%M:%S"), "host": "a", "v": 1.0}),
        pd.DataFrame({"time": (times + pd.Timedelta(seconds=30)).strftime("%Y-%m-%d %H:%M:%S"),
                      "host": "b", "v": 2.0}),
    ]).sample(frac=1.0, random_state=0)
    frame.to_csv(tmp_path / "x.csv", index=False)
    found = inspect_source(str(tmp_path / "x.csv"), "x")
    assert found.entity == {"column": "host"}
    assert found.interval_seconds == 60.0 and found.gaps == 0


def test_labels_other_than_0_and_1_ask_which_marks_an_anomaly(tmp_path: Path) -> None:
    """-1/1 (scikit-learn's outlier labels) has no obvious anomaly value: scaffold asks for
    it, and with --label-positive -1 every 1 is normal, as the reader then reads it."""
    times = pd.date_range("2024-03-01", periods=50, freq="1min")
    frame = pd.DataFrame({"time": times.strftime("%Y-%m-%d %H:%M"), "v": 1.0,
                          "label": [1] * 45 + [-1] * 5})
    frame.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(SourceError, match=r"label column 'label' holds \['-1', '1'\], not 0 "
                                          r"\(normal\) and 1 \(anomaly\); pass --label-positive"):
        inspect_source(str(tmp_path / "x.csv"), "x")
    found = inspect_source(str(tmp_path / "x.csv"), "x", label_positive=["-1"])
    assert found.labels == {"kind": "column", "column": "label", "positive": ["-1"]}
    spec = DatasetSpec.model_validate({"source": {"path": str(tmp_path / "x.csv")},
                                       "timestamp": {"column": "time"}, "labels": found.labels})
    rows, _ = read_rows(spec, tmp_path / "s", "x")
    assert rows["label"].tolist() == [0] * 45 + [1] * 5


def test_a_spreadsheets_sep_line_gives_the_separator_and_is_not_the_header(
    tmp_path: Path,
) -> None:
    """Excel reads and writes ``sep=;`` as a file's first line; it was taken for the header
    ('found no timestamp column among ['sep=', ...]')."""
    rows = "".join(f"2024-03-01 00:{i:02d};host{i % 2};{i},5\n" for i in range(40))
    (tmp_path / "x.csv").write_text("\ufeffsep=;\nts;machine;v\n" + rows)
    found = inspect_source(str(tmp_path / "x.csv"), "x")
    assert found.timestamp == "ts" and found.entity == {"column": "machine"}
    assert found.features == ["v"] and found.source["separator"] == ";"
    assert pd.Timestamp(found.last) == pd.Timestamp("2024-03-01 00:39", tz="UTC")


def test_features_are_the_columns_every_file_has_and_a_stray_file_is_named(
    tmp_path: Path,
) -> None:
    """Only the first file was sampled: a column it alone has was declared and every other
    file then failed on it; a file of other data failed inside pandas, naming no file."""
    times = pd.date_range("2024-06-01", periods=60, freq="1min")
    for i in range(3):
        frame = pd.DataFrame({"time": (times + pd.Timedelta(days=i)).strftime(
            "%Y-%m-%d %H:%M"), "cpu": 1.0, "mem": 2.0})
        if i == 0:
            frame["fan"] = 3.0
        frame.to_csv(tmp_path / f"day_{i}.csv", index=False)
    found = inspect_source(str(tmp_path), "x")
    assert found.features == ["cpu", "mem"]
    assert any("column 'fan' is missing from 2 of 3 files (e.g. day_1.csv)" in n
               for n in found.notes)
    (tmp_path / "hosts.csv").write_text("host,location\na,b\n")
    with pytest.raises(SourceError, match=r"hosts.csv: no column\(s\) \['time'\], which "
                                          r"day_0.csv has .*move it out or narrow the path"):
        inspect_source(str(tmp_path), "x")


def test_an_exclude_that_names_no_column_is_refused(tmp_path: Path) -> None:
    times = pd.date_range("2024-03-01", periods=50, freq="1min")
    pd.DataFrame({"time": times.strftime("%Y-%m-%d %H:%M"), "temp": 1.0, "cpu": 2.0}).to_csv(
        tmp_path / "x.csv", index=False)
    with pytest.raises(SourceError, match=r"--exclude names \['tmep'\], which the file lacks"):
        inspect_source(str(tmp_path / "x.csv"), "x", exclude=["tmep"])
    found = inspect_source(str(tmp_path / "x.csv"), "x", exclude=["temp"])
    assert found.features == ["cpu"]
    assert any("column(s) ['cpu'] hold one value in the first 50 rows" in n
               for n in found.notes)


def test_a_stray_token_among_numbers_is_named_by_line_not_the_column_dropped(
    tmp_path: Path,
) -> None:
    """One 'x1' made the column text: scaffold left it out of the features with a note, and
    materialize trained without it; the reader refuses such a column by line."""
    times = pd.date_range("2024-03-01", periods=50, freq="1min")
    flow: list[object] = [float(i) for i in range(50)]
    flow[21] = "x1"
    pd.DataFrame({"time": times.strftime("%Y-%m-%d %H:%M"), "flow": flow, "temp": 1.5}).to_csv(
        tmp_path / "x.csv", index=False)
    with pytest.raises(SourceError, match=r"x.csv: line 23: column 'flow' holds 'x1' among "
                                          r"numbers; .* or pass --exclude flow"):
        inspect_source(str(tmp_path / "x.csv"), "x")
    assert inspect_source(str(tmp_path / "x.csv"), "x", exclude=["flow"]).features == ["temp"]
