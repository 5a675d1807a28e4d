"""Declared datasets read from users' files: each label kind, one feature, bad files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

import ds_assets.telemetry.files as files_module
from ds_assets.telemetry.declaration import DatasetSpec
from ds_assets.telemetry.files import days_with_rows, read_rows
from ds_assets.telemetry.sources import SourceError


def _spec(path: Path | str, **extra: Any) -> DatasetSpec:
    return DatasetSpec.model_validate({"source": {"path": str(path)}, **extra})


def _series(path: Path, n: int = 48, start: str = "2024-03-01", sep: str = ",",
            **columns: Any) -> Path:
    frame = pd.DataFrame({"ts": pd.date_range(start, periods=n, freq="1h").strftime(
        "%Y-%m-%d %H:%M:%S"), **{k: v for k, v in columns.items()}})
    frame.to_csv(path, index=False, sep=sep)
    return path


def test_a_column_label_with_any_feature_names(tmp_path: Path) -> None:
    n = 48
    columns: dict[str, Any] = {"Flow Rate": np.arange(n, dtype=float), "pressure": 2.0,
                               "state": ["ok"] * 40 + ["bad"] * 8}
    frame = pd.DataFrame({"ts": pd.date_range("2024-03-01", periods=n, freq="1h").strftime(
        "%Y-%m-%d %H:%M:%S"), **columns})
    frame.to_csv(tmp_path / "pump.csv", index=False)
    spec = _spec(tmp_path / "pump.csv", timestamp={"column": "ts"},
                 labels={"kind": "column", "column": "state", "positive": ["bad"]})
    rows, report = read_rows(spec, tmp_path / "stage", "pump")
    assert list(rows.columns) == ["timestamp", "host_id", "region", "project_id", "Flow Rate",
                                  "pressure", "label", "anomaly_type"]
    assert rows["label"].sum() == 8 and rows["label"].iloc[-1] == 1
    assert (rows["host_id"] == "pump").all()  # no entity column: one entity, the dataset
    assert str(rows["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert rows["Flow Rate"].dtype == np.float32
    assert report.gaps["interval_seconds"] == 3600 and report.gaps["gaps"] == 0
    day, _ = read_rows(spec, tmp_path / "stage", "pump", day="2024-03-02")
    assert len(day) == 24 and (day["timestamp"].dt.day == 2).all()
    assert days_with_rows(spec, tmp_path / "stage", "pump") == ["2024-03-01", "2024-03-02"]


def test_windows_label_the_rows_inside_them_per_entity(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "time": list(pd.date_range("2024-03-01", periods=10, freq="1min").astype(str)) * 2,
        "machine": ["a"] * 10 + ["b"] * 10, "value": np.arange(20.0)})
    frame.to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "w.csv").write_text("start,end,entity\n"
                                    "2024-03-01 00:02:00,2024-03-01 00:04:00,a\n"
                                    "2024-03-01 00:08:00,2024-03-01 00:08:00,\n")
    spec = _spec(tmp_path / "m.csv", timestamp={"column": "time"}, entity={"column": "machine"},
                 labels={"kind": "windows", "windows": str(tmp_path / "w.csv")})
    rows, report = read_rows(spec, tmp_path / "stage", "m")
    flagged = rows.loc[rows["label"] == 1, ["host_id", "timestamp"]]
    assert flagged["host_id"].tolist() == ["a", "a", "a", "a", "b"]  # 3 of a's, 00:08 of both
    assert report.windows_applied == 2
    assert set(rows["anomaly_type"]) == {"labeled", "none"}


def test_no_labels_gives_no_label_column(tmp_path: Path) -> None:
    _series(tmp_path / "x.csv", n=5, v=1.0)
    rows, _ = read_rows(_spec(tmp_path / "x.csv", timestamp={"column": "ts"}), tmp_path / "s",
                        "x")
    assert "label" not in rows.columns and list(rows.columns)[-1] == "v"


def test_semicolons_decimal_commas_and_files_per_entity(tmp_path: Path) -> None:
    for name in ("1", "2"):
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / f"{name}.csv").write_text(
            "datetime;temp;anomaly\n2024-01-01 00:00:00;20,5;0\n2024-01-01 00:00:01;21,25;1\n")
    spec = _spec(tmp_path / "runs", timestamp={"column": "datetime"},
                 entity={"per_file": True}, labels={"kind": "column", "column": "anomaly"})
    rows, _ = read_rows(spec, tmp_path / "stage", "runs")
    assert sorted(rows["host_id"].unique()) == ["1", "2"]
    assert rows["temp"].tolist() == [20.5, 21.25, 20.5, 21.25]
    assert rows["label"].tolist() == [0, 1, 0, 1]


def test_local_time_zones_become_utc(tmp_path: Path) -> None:
    _series(tmp_path / "x.csv", n=2, start="2024-07-01 02:00", v=1.0)
    spec = _spec(tmp_path / "x.csv", timestamp={"column": "ts", "timezone": "Europe/Berlin"})
    rows, _ = read_rows(spec, tmp_path / "s", "x")
    assert rows["timestamp"].iloc[0] == pd.Timestamp("2024-07-01 00:00", tz="UTC")


def test_numeric_timestamps_count_units_from_the_origin(tmp_path: Path) -> None:
    """A series indexed by sample number (GutenTAG, many benchmark suites) or epoch seconds."""
    pd.DataFrame({"t": [0, 1, 2, 5], "v": [1.0, 2.0, 3.0, 4.0]}).to_csv(tmp_path / "x.csv",
                                                                       index=False)
    spec = _spec(tmp_path / "x.csv", timestamp={"column": "t", "unit": "s",
                                                "origin": "2024-01-01", "timezone": "Etc/GMT-1"})
    rows, report = read_rows(spec, tmp_path / "s", "x")
    assert rows["timestamp"].tolist() == [pd.Timestamp("2023-12-31 23:00", tz="UTC")
                                          + pd.Timedelta(seconds=k) for k in (0, 1, 2, 5)]
    assert report.gaps["gaps"] == 1
    pd.DataFrame({"t": ["0", "x"], "v": [1.0, 2.0]}).to_csv(tmp_path / "y.csv", index=False)
    with pytest.raises(SourceError, match=r"y.csv: line 3: column 't' holds 'x', not a number "
                                          "of s after 1970-01-01"):
        read_rows(_spec(tmp_path / "y.csv", timestamp={"column": "t", "unit": "s"}),
                  tmp_path / "s", "y")


def test_unsorted_rows_are_sorted_and_reported_duplicates_refused_or_kept_last(
    tmp_path: Path,
) -> None:
    (tmp_path / "x.csv").write_text("ts,v\n2024-01-01 00:02,3\n2024-01-01 00:01,2\n"
                                    "2024-01-01 00:03,4\n2024-01-01 00:03,5\n")
    spec = _spec(tmp_path / "x.csv", timestamp={"column": "ts"})
    with pytest.raises(SourceError, match=r"1 row\(s\) repeat .* x.csv line 4, x.csv line 5"):
        read_rows(spec, tmp_path / "s", "x")
    rows, report = read_rows(_spec(tmp_path / "x.csv", timestamp={"column": "ts"},
                                   duplicates="keep_last"), tmp_path / "s", "x")
    assert rows["v"].tolist() == [2, 3, 5]
    assert report.rows_out_of_order == 1 and report.duplicates_dropped == 1


def test_epoch_milliseconds_declared_as_seconds_are_refused_by_line(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("ts,v\n1709251200000,1\n1709251260000,1\n")
    spec = _spec(tmp_path / "x.csv", timestamp={"column": "ts", "unit": "s"})
    with pytest.raises(SourceError, match=r"x.csv: line 2: column 'ts' holds 1709251200000, "
                                          r"which as s after 1970-01-01 falls outside the years "
                                          r"1677-2262: is timestamp.unit right"):
        read_rows(spec, tmp_path / "s", "x")
    ms = _spec(tmp_path / "x.csv", timestamp={"column": "ts", "unit": "ms"})
    assert str(read_rows(ms, tmp_path / "s", "x")[0]["timestamp"].iloc[0]) == (
        "2024-03-01 00:00:00+00:00")


def test_a_date_without_its_time_of_day_is_named_as_such_in_a_short_message(
    tmp_path: Path,
) -> None:
    """1,440 rows of one date: the message shows five lines, not all of them, and says what
    the repeats look like instead of suggesting keep_last (which would keep one row)."""
    times = pd.date_range("2024-03-01", periods=1440, freq="1min")
    pd.DataFrame({"date": times.strftime("%Y-%m-%d"), "clock": times.strftime("%H:%M"),
                  "v": 1.0}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(SourceError) as refused:
        read_rows(_spec(tmp_path / "x.csv", timestamp={"column": "date"}), tmp_path / "s", "x")
    message = str(refused.value)
    assert "x.csv line 6 and 1435 more;" in message and "x.csv line 7" not in message
    assert "without the time of day" in message and len(message) < 600


def test_gaps_are_reported_not_filled(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("ts,v\n2024-01-01 00:00,1\n2024-01-01 00:01,1\n"
                                    "2024-01-01 00:02,1\n2024-01-01 01:00,1\n")
    rows, report = read_rows(_spec(tmp_path / "x.csv", timestamp={"column": "ts"}),
                             tmp_path / "s", "x")
    assert len(rows) == 4
    assert report.gaps["gaps"] == 1 and report.gaps["largest_gap"]["seconds"] == 3480


@pytest.mark.parametrize(("content", "declared", "message"), [
    ("ts,v\n2024-01-01,1\n", {"features": {"columns": ["v", "w"]}},
     r"missing column\(s\) \['w'\] named in the declaration; the file has \['ts', 'v'\]"),
    ("ts,v\n2024-01-01 00:00,1\n2024-01-01 00:01,n/a\n", {},
     r"x.csv: line 3: column 'v' holds 'n/a', not a number"),
    ("ts,v\n2024-01-01 00:00,1\n2024-01-01 00:01,inf\n", {},
     r"x.csv: line 3: column 'v' holds 'inf', which is not a finite float32 number"),
    ("ts,v\n2024-01-01 00:00,-1e39\n", {},
     r"x.csv: line 2: column 'v' holds '-1e\+39', which is not a finite float32 number"),
    ("ts,v\n2024-01-01 00:00,1\nyesterday,2\n", {},
     r"line 3: column 'ts' holds 'yesterday', not a timestamp"),
    ("", {}, r"file is empty"),
    ("ts,v\n", {}, r"a header but no data rows"),
    ("ts;v\n2024-01-01;1\n", {"source": {"separator": ","}},
     r"declared separator ',' does not occur in the header .* separated by ';'"),
    ("ts,v,label\n2024-01-01 00:00,1,\n", {"labels": {"kind": "column", "column": "label"}},
     r"line 2: label column 'label' is empty"),
    ("ts,v,label\n2024-01-01 00:00,1,0\n2024-01-01 00:01,1,2\n",
     {"labels": {"kind": "column", "column": "label"}},
     r"line 3: label column 'label' holds '2', neither 0 \(normal\) nor a positive value \(1\)"),
    ("ts,v\n1709251200,1\n", {},
     r"line 2: column 'ts' holds numbers \(1709251200\), not written dates; declare "
     r"timestamp.unit"),
])
def test_bad_files_are_refused_naming_file_line_column_value(
    tmp_path: Path, content: str, declared: dict[str, Any], message: str,
) -> None:
    (tmp_path / "x.csv").write_text(content)
    source = {"path": str(tmp_path / "x.csv"), **declared.pop("source", {})}
    spec = DatasetSpec.model_validate({"source": source, "timestamp": {"column": "ts"},
                                       **declared})
    with pytest.raises(SourceError, match=message):
        read_rows(spec, tmp_path / "s", "x")
    assert not list((tmp_path / "s").glob("*.parquet"))  # nothing half-staged


def test_a_bad_value_in_a_later_chunk_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(files_module, "CHUNK_ROWS", 10)
    values = [str(i) for i in range(25)]
    values[21] = "x1"
    _series(tmp_path / "x.csv", n=25, v=values)
    with pytest.raises(SourceError, match=r"line 23: column 'v' holds 'x1'"):
        read_rows(_spec(tmp_path / "x.csv", timestamp={"column": "ts"}), tmp_path / "s", "x")


def test_chunked_staging_matches_one_read_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _series(tmp_path / "x.csv", n=100, v=np.arange(100.0), w=np.arange(100.0) ** 2)
    spec = _spec(tmp_path / "x.csv", timestamp={"column": "ts"})
    whole, _ = read_rows(spec, tmp_path / "one", "x")
    monkeypatch.setattr(files_module, "CHUNK_ROWS", 7)
    chunked, _ = read_rows(spec, tmp_path / "many", "x")
    pd.testing.assert_frame_equal(whole, chunked)
    [staged] = (tmp_path / "many").glob("*.parquet")
    before = staged.stat().st_mtime_ns
    read_rows(spec, tmp_path / "many", "x")
    assert staged.stat().st_mtime_ns == before  # same file, same declaration: not re-staged
    os.utime(tmp_path / "x.csv", ns=(1, 1))  # the file changed: staged again, in its place
    read_rows(spec, tmp_path / "many", "x")
    [again] = (tmp_path / "many").glob("*.parquet")
    assert again != staged and not staged.exists()
    # a file of the same name elsewhere is another source: its copy stays beside this one
    (tmp_path / "other").mkdir()
    _series(tmp_path / "other" / "x.csv", n=10, v=np.arange(10.0), w=1.0)
    read_rows(_spec(tmp_path / "other" / "x.csv", timestamp={"column": "ts"}),
              tmp_path / "many", "x")
    assert len(list((tmp_path / "many").glob("*.parquet"))) == 2 and again.exists()


def test_parquet_sources_read_alike(tmp_path: Path) -> None:
    _series(tmp_path / "x.csv", n=10, v=np.arange(10.0))
    pd.read_csv(tmp_path / "x.csv").to_parquet(tmp_path / "x.parquet")
    spec_csv = _spec(tmp_path / "x.csv", timestamp={"column": "ts"})
    spec_pq = _spec(tmp_path / "x.parquet", timestamp={"column": "ts"})
    a, _ = read_rows(spec_csv, tmp_path / "a", "x")
    b, _ = read_rows(spec_pq, tmp_path / "b", "x")
    pd.testing.assert_frame_equal(a, b)


def test_unset_environment_variables_in_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"\['DS_TEST_UNSET_DIR'\], which are not set"):
        read_rows(_spec("$DS_TEST_UNSET_DIR/x.csv"), tmp_path, "x")
    with pytest.raises(SourceError, match="matches no CSV or Parquet file"):
        read_rows(_spec(tmp_path / "nothing" / "*.csv"), tmp_path, "x")


@pytest.mark.parametrize(("declared", "message"), [
    ({"labels": {"kind": "column"}}, "needs labels.column"),
    ({"labels": {"kind": "windows"}}, "needs labels.windows"),
    ({"features": {"columns": ["label"]}}, "names the platform reserves"),
    ({"features": {"columns": ["ts"]}, "timestamp": {"column": "ts"}}, "also the timestamp"),
    ({"features": {"columns": ["a"], "groups": {"g": ["b"]}}}, r"groups name \['b'\]"),
    ({"entity": {"column": "m", "per_file": True}}, "either column or per_file"),
    ({"bogus": 1}, "Extra inputs are not permitted"),
    ({"timestamp": {"unit": "s", "format": "%Y"}}, "either format .* or unit"),
    ({"timestamp": {"unit": "s", "origin": "soon"}}, "origin 'soon' is not an ISO 8601"),
    ({"timestamp": {"timezone": "Europe/Berln"}},
     "timestamp.timezone 'Europe/Berln' is not a time zone name"),
])
def test_declarations_that_cannot_work_are_refused_when_loaded(
    declared: dict[str, Any], message: str,
) -> None:
    with pytest.raises(ValidationError, match=message):
        DatasetSpec.model_validate({"source": {"path": "x.csv"}, **declared})


def test_offsets_that_change_at_a_daylight_saving_switch_and_mixed_forms(tmp_path: Path) -> None:
    """Written with their offsets, as the ambiguous-time error asks, local times across the
    switch read as the instants they name; a value without an offset among them is local
    time in the declared zone."""
    (tmp_path / "x.csv").write_text("time,v\n2024-10-27 01:30+02:00,1\n2024-10-27 02:30+02:00,2\n"
                                    "2024-10-27 02:30+01:00,3\n2024-10-27 04:30,4\n")
    spec = _spec(tmp_path / "x.csv", timestamp={"column": "time", "timezone": "Europe/Berlin"})
    rows, _ = read_rows(spec, tmp_path / "s", "x")
    assert rows["timestamp"].dt.strftime("%H:%M").tolist() == ["23:30", "00:30", "01:30", "03:30"]
    (tmp_path / "y.csv").write_text("time,v\n2024-10-27 00:30,1\n2024-10-27 01:30+00:00,2\n"
                                    "2024-10-27 yesterday,3\n")
    with pytest.raises(SourceError, match=r"y.csv: line 4: column 'time' holds "
                                          r"'2024-10-27 yesterday', not a timestamp"):
        read_rows(_spec(tmp_path / "y.csv", timestamp={"column": "time"}), tmp_path / "s", "y")


def test_day_first_dates_read_alike_in_every_chunk_or_are_refused_when_undecidable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The format is decided once per file: a later chunk starting at 01/04 is 1 April, as
    the first chunk's 13/03 showed. A file whose first chunk fits both readings is refused."""
    monkeypatch.setattr(files_module, "CHUNK_ROWS", 50)
    times = pd.date_range("2024-03-13", periods=24 * 30, freq="1h")
    pd.DataFrame({"ts": times.strftime("%d/%m/%Y %H:%M"), "v": 1.0}).to_csv(
        tmp_path / "x.csv", index=False)
    rows, report = read_rows(_spec(tmp_path / "x.csv", timestamp={"column": "ts"}),
                             tmp_path / "s", "x")
    assert (rows["timestamp"].dt.tz_localize(None) == times).all()
    assert report.rows_out_of_order == 0
    early = pd.date_range("2024-03-01", periods=48, freq="1h")
    pd.DataFrame({"ts": early.strftime("%d/%m/%Y %H:%M"), "v": 1.0}).to_csv(
        tmp_path / "y.csv", index=False)
    with pytest.raises(SourceError, match=r"y.csv: timestamps such as '01/03/2024 00:00' read "
                                          r"alike day-first and month-first .* declare "
                                          r"timestamp.format, '%d/%m/%Y %H:%M' or"):
        read_rows(_spec(tmp_path / "y.csv", timestamp={"column": "ts"}), tmp_path / "s", "y")
    declared = _spec(tmp_path / "y.csv", timestamp={"column": "ts", "format": "%d/%m/%Y %H:%M"})
    assert read_rows(declared, tmp_path / "s", "y")[0]["timestamp"].iloc[-1].day == 2


@pytest.mark.parametrize("offset", ["+00:00", "+02:00", ""])
def test_iso_timestamps_with_any_number_of_decimals_are_read(tmp_path: Path,
                                                            offset: str) -> None:
    """``isoformat()`` writes decimals only where a time has a fraction: the format guessed
    from the first value (with decimals) must not refuse a later one without, or the other
    way round. A value in no ISO form is still refused by line."""
    times = pd.date_range("2024-08-01", periods=6, freq="1min") + pd.to_timedelta(
        [0.726, 0.5, 0, 0.25, 0, 0.1], unit="s")
    written = [t.isoformat() + offset for t in times]
    (tmp_path / "x.csv").write_text("ts,v\n" + "".join(f"{w},1\n" for w in written))
    (tmp_path / "y.csv").write_text("ts,v\n" + "".join(f"{w},1\n" for w in written[2:]))
    for name in ("x.csv", "y.csv"):  # first value with decimals, then without
        rows, _ = read_rows(_spec(tmp_path / name, timestamp={"column": "ts"}),
                            tmp_path / name.replace(".", "_"), "x")
        want = times if name == "x.csv" else times[2:]
        shift = pd.Timedelta(hours=2) if offset == "+02:00" else pd.Timedelta(0)
        assert (rows["timestamp"].dt.tz_localize(None).to_numpy()
                == (want - shift).to_numpy()).all(), name
    (tmp_path / "z.csv").write_text(f"ts,v\n{written[0]},1\n08/01/2024 00:03{offset},1\n")
    with pytest.raises(SourceError, match=r"z.csv: line 3: column 'ts' holds '08/01/2024"):
        read_rows(_spec(tmp_path / "z.csv", timestamp={"column": "ts"}), tmp_path / "z", "z")


def test_entity_ids_stay_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """007 is entity 007 in a CSV as in Parquet, in every chunk, and label windows naming it
    apply to it."""
    monkeypatch.setattr(files_module, "CHUNK_ROWS", 2)
    frame = pd.DataFrame({"time": ["2024-03-01 00:00", "2024-03-01 00:01", "2024-03-01 00:02",
                                   "2024-03-01 00:03"],
                          "machine": ["007", "007", "007", "B7"], "v": [1.0, 2.0, 3.0, 4.0]})
    frame.to_csv(tmp_path / "m.csv", index=False)
    frame.to_parquet(tmp_path / "m.parquet")
    (tmp_path / "w.csv").write_text("start,end,entity\n2024-03-01 00:01,2024-03-01 00:01,007\n")
    for name in ("m.csv", "m.parquet"):
        spec = _spec(tmp_path / name, timestamp={"column": "time"},
                     entity={"column": "machine"},
                     labels={"kind": "windows", "windows": str(tmp_path / "w.csv")})
        rows, report = read_rows(spec, tmp_path / name.replace(".", "_"), "m")
        assert sorted(rows["host_id"].unique()) == ["007", "B7"], name
        assert rows["label"].tolist() == [0, 1, 0, 0] and report.windows_applied == 1


def test_a_file_that_is_not_utf8_is_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_bytes("time,Temperatur °C\n2024-03-01 00:00,1\n".encode("latin-1"))
    with pytest.raises(SourceError, match=r"x.csv: not UTF-8 text .* save the file as UTF-8"):
        read_rows(_spec(tmp_path / "x.csv", timestamp={"column": "time"}), tmp_path / "s", "x")


@pytest.mark.parametrize(("declared", "written", "value"),
                         [("ms", "s", 1709251200), ("us", "ms", 1709251200000),
                          ("ns", "s", 1709251200)])
def test_epoch_numbers_declared_in_a_finer_unit_are_refused_not_read_as_1970(
    tmp_path: Path, declared: str, written: str, value: int,
) -> None:
    """Epoch seconds declared as ms read as 20 January 1970 without any error before."""
    (tmp_path / "x.csv").write_text(f"ts,v\n{value},1\n{value + 60},1\n")
    spec = _spec(tmp_path / "x.csv", timestamp={"column": "ts", "unit": declared})
    with pytest.raises(SourceError, match=rf"x.csv: line 2: column 'ts' holds {value}, which "
                                          rf"as {declared} after 1970-01-01 is 1970-.* UTC; as "
                                          rf"{written} it is 2024-03-01 00:00:00: declare "
                                          rf"timestamp.unit: {written}"):
        read_rows(spec, tmp_path / "s", "x")


def test_a_sample_index_is_read_from_the_epoch_or_its_own_origin(tmp_path: Path) -> None:
    """Small numbers (a sample index) land in 1970 in any unit: nothing coarser fits better."""
    (tmp_path / "x.csv").write_text("ts,v\n0,1\n1,1\n2,1\n")
    rows = read_rows(_spec(tmp_path / "x.csv", timestamp={"column": "ts", "unit": "ms"}),
                     tmp_path / "s", "x")[0]
    assert str(rows["timestamp"].iloc[2]) == "1970-01-01 00:00:00.002000+00:00"
    (tmp_path / "y.csv").write_text("ts,v\n1709251200,1\n1709251260,1\n")
    own = _spec(tmp_path / "y.csv", timestamp={"column": "ts", "unit": "ms",
                                               "origin": "2024-01-01"})
    assert str(read_rows(own, tmp_path / "s2", "y")[0]["timestamp"].iloc[0]).startswith(
        "2024-01-20")


def test_a_sep_line_before_the_header_is_read_and_lines_keep_their_numbers(
    tmp_path: Path,
) -> None:
    """``sep=;`` on line 1 (a spreadsheet's directive): the header is line 2, so a bad value
    on the file's fourth line is named as line 4, in the data and in a label windows file."""
    (tmp_path / "x.csv").write_text("sep=;\nts;v\n2024-03-01 00:00;1,5\n2024-03-01 00:01;2,5\n")
    spec = _spec(tmp_path / "x.csv", timestamp={"column": "ts"})
    rows = read_rows(spec, tmp_path / "s", "x")[0]
    assert rows["v"].tolist() == [1.5, 2.5]
    (tmp_path / "y.csv").write_text("sep=;\nts;v\n2024-03-01 00:00;1\n2024-03-01 00:01;x1\n")
    with pytest.raises(SourceError, match=r"y.csv: line 4: column 'v' holds 'x1'"):
        read_rows(_spec(tmp_path / "y.csv", timestamp={"column": "ts"}), tmp_path / "s2", "y")
    (tmp_path / "w.csv").write_text('"sep=,"\nstart,end\n2024-03-01 00:01,2024-03-01 00:00\n')
    windows = _spec(tmp_path / "x.csv", timestamp={"column": "ts"},
                    labels={"kind": "windows", "windows": str(tmp_path / "w.csv")})
    with pytest.raises(SourceError, match=r"w.csv: line 3: end is before start"):
        read_rows(windows, tmp_path / "s3", "x")


def test_a_directory_source_leaves_hidden_files_and_folders_out(tmp_path: Path) -> None:
    """A notebook's ``.ipynb_checkpoints`` copy of a day (and macOS's ``._`` files) were read
    as data: its rows repeated the real file's, named by a path ``ls`` does not show."""
    from ds_assets.telemetry.declaration import SourceSpec
    from ds_assets.telemetry.files import declared_files

    _series(tmp_path / "day1.csv", n=3, v=1.0)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    _series(tmp_path / ".ipynb_checkpoints" / "day1-checkpoint.csv", n=3, v=1.0)
    (tmp_path / "._day1.csv").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "sub").mkdir()
    _series(tmp_path / "sub" / "day2.csv", n=3, v=1.0)
    assert declared_files(SourceSpec(path=str(tmp_path))) == [tmp_path / "day1.csv",
                                                              tmp_path / "sub" / "day2.csv"]


def test_exclude_beside_an_explicit_column_list_is_refused_not_ignored() -> None:
    """``exclude`` trims the columns taken when no list is given; beside a list naming the
    same column it did nothing, and the model kept the feature."""
    with pytest.raises(ValidationError, match=r"features.exclude names \['temp'\], which "
                                              r"features.columns lists: remove it"):
        _spec("x.csv", timestamp={"column": "ts"},
              features={"columns": ["cpu", "temp"], "exclude": ["temp"]})


def test_the_unit_is_questioned_on_the_files_first_value_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Elapsed milliseconds from the default origin grow past 6.3e8 (1990 read as seconds):
    a later chunk starting there was refused, so where chunks began decided the read."""
    (tmp_path / "x.csv").write_text("ts,v\n0,1\n1000,1\n700000000,1\n700001000,1\n")
    monkeypatch.setattr(files_module, "CHUNK_ROWS", 2)
    rows = read_rows(_spec(tmp_path / "x.csv", timestamp={"column": "ts", "unit": "ms"}),
                     tmp_path / "s", "x")[0]
    assert str(rows["timestamp"].iloc[-1]) == "1970-01-09 02:26:41+00:00"
