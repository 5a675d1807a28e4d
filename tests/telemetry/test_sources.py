from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ds_assets.telemetry.sources import (
    LABELED_CSV_FEATURES,
    SourceError,
    read_labeled_file,
    resolve_path,
)

DAY = "2026-11-02"


def _csv(path: Path, rows: int = 6, **overrides: object) -> Path:
    data: dict[str, object] = {f: [float(i) for i in range(rows)] for f in LABELED_CSV_FEATURES}
    data["label"] = [0] * (rows - 1) + [1]
    data.update(overrides)
    pd.DataFrame(data).to_csv(path, index=False)
    return path


def test_labeled_csv_becomes_wide_rows(tmp_path: Path) -> None:
    frame = read_labeled_file(_csv(tmp_path / "pump.csv"), DAY, interval_seconds=60)
    assert list(frame.columns[:4]) == ["timestamp", "host_id", "region", "project_id"]
    assert frame["host_id"].unique().tolist() == ["pump"]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["timestamp"].iloc[1] - frame["timestamp"].iloc[0] == pd.Timedelta("60s")
    assert frame["timestamp"].iloc[0] == pd.Timestamp(DAY, tz="UTC")
    assert frame["label"].tolist() == [0, 0, 0, 0, 0, 1]
    assert frame["anomaly_type"].tolist()[-2:] == ["none", "labeled"]
    assert frame["f1"].dtype == "float32"


def test_date_placeholder(tmp_path: Path) -> None:
    assert resolve_path(str(tmp_path / "{date}.csv"), DAY) == tmp_path / f"{DAY}.csv"


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    pd.DataFrame({"f1": [1.0], "label": [0]}).to_csv(path, index=False)
    with pytest.raises(SourceError, match=r"x.csv: missing column\(s\) \['f2'"):
        read_labeled_file(path, DAY)


def test_non_numeric_feature_is_named(tmp_path: Path) -> None:
    path = _csv(tmp_path / "x.csv", rows=3, f4=["1.0", "oops", "2"])
    with pytest.raises(SourceError, match=r"column 'f4' must be numeric, row 1 .* holds 'oops'"):
        read_labeled_file(path, DAY)


@pytest.mark.parametrize(("value", "shown"), [("inf", "inf"), ("-Infinity", "-inf"),
                                             ("1e39", r"1e\+39")])
def test_a_value_beyond_float32_is_named(tmp_path: Path, value: str, shown: str) -> None:
    path = _csv(tmp_path / "x.csv", rows=3, f4=["1.0", value, "2"])
    with pytest.raises(SourceError, match=rf"column 'f4' must be finite, row 1 .* holds "
                                          rf"'{shown}'"):
        read_labeled_file(path, DAY)


@pytest.mark.parametrize("token", ["n/a", "NA", "null", "nan", "-"])
def test_a_token_that_is_not_a_number_is_named_as_written(tmp_path: Path, token: str) -> None:
    path = _csv(tmp_path / "x.csv", rows=4, f5=["1", "2", token, "3"])
    with pytest.raises(SourceError, match=rf"column 'f5' must be numeric, row 2 \(line 4 of a "
                                          rf"CSV with a header\) holds '{token}'"):
        read_labeled_file(path, DAY)


def test_an_empty_cell_is_missing_for_the_not_null_check(tmp_path: Path) -> None:
    path = _csv(tmp_path / "x.csv", rows=3, f5=["1", "", "3"])
    assert read_labeled_file(path, DAY)["f5"].isna().tolist() == [False, True, False]


def test_an_empty_id_is_missing_not_the_host_nan(tmp_path: Path) -> None:
    """astype(str) made an empty host_id the host "nan", which every blocking check passed."""
    from ds_assets.dataset import Dataset
    from ds_assets.telemetry.validation import validate_telemetry

    path = _csv(tmp_path / "x.csv", rows=12, host_id=["web-1"] * 10 + ["", ""],
                region=["eu"] * 11 + [""])
    frame = read_labeled_file(path, DAY)
    assert frame["host_id"].isna().sum() == 2 and "nan" not in set(frame["host_id"].dropna())
    assert frame["region"].isna().sum() == 1
    ds = Dataset(name="default", model_name="m", partitions_start=DAY)
    outcomes = validate_telemetry(frame, ds.validation_features(frame), min_rows=1)
    assert not outcomes["features_not_null"].passed


def test_fractional_label_is_named_not_truncated(tmp_path: Path) -> None:
    path = _csv(tmp_path / "x.csv", rows=3, label=[0, 0.5, 1])
    with pytest.raises(SourceError, match=r"column 'label' must be 0 or 1, row 1 holds 0.5\b"):
        read_labeled_file(path, DAY)
    # whole numbers outside {0, 1} load, so the blocking label-domain check reports them
    frame = read_labeled_file(_csv(tmp_path / "y.csv", rows=3, label=[0, 2, 1.0]), DAY)
    assert frame["label"].tolist() == [0, 2, 1]


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join([*LABELED_CSV_FEATURES, "label"]) + "\n")
    with pytest.raises(SourceError, match=f"no data rows for partition {DAY}"):
        read_labeled_file(empty, DAY)
    with pytest.raises(SourceError, match="does not exist"):
        read_labeled_file(tmp_path / "nope.csv", DAY)


def test_rows_outside_the_day_are_an_empty_partition(tmp_path: Path) -> None:
    path = _csv(tmp_path / "x.csv", rows=2, timestamp=["2026-10-01T00:00Z", "2026-10-01T00:01Z"])
    with pytest.raises(SourceError, match=f"no rows fall inside partition {DAY}"):
        read_labeled_file(path, DAY)


def test_rows_come_out_in_time_order_per_host(tmp_path: Path) -> None:
    """A file's rows may come in any order; the day comes out as the generator lays it out
    (by host, then time), so windows, smoothing and alerts read each host's rows in order."""
    times = pd.date_range(DAY, periods=4, freq="1min", tz="UTC").astype(str).tolist()
    path = _csv(tmp_path / "mixed.csv", rows=4, timestamp=[times[2], times[0], times[3], times[1]],
                host_id=["b", "a", "a", "b"])
    frame = read_labeled_file(path, DAY)
    assert frame["host_id"].tolist() == ["a", "a", "b", "b"]
    assert frame["timestamp"].astype(str).str[11:16].tolist() == ["00:00", "00:03", "00:01",
                                                                    "00:02"]
    assert frame["f1"].tolist() == [1.0, 2.0, 3.0, 0.0]  # each row keeps its own values


def test_an_unknown_placeholder_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"only the placeholder \{date\} is expanded"):
        resolve_path(str(tmp_path / "{host}-{date}.csv"), DAY)


def test_an_unlabeled_file_needs_its_features_not_a_label(tmp_path: Path) -> None:
    path = tmp_path / "prod.csv"
    pd.DataFrame({f: [1.0, 2.0] for f in LABELED_CSV_FEATURES}).to_csv(path, index=False)
    frame = read_labeled_file(path, DAY, labeled=False)
    assert len(frame) == 2 and "label" not in frame.columns and "anomaly_type" not in frame
    with pytest.raises(SourceError, match=r"missing column\(s\) \['label'\]"):
        read_labeled_file(path, DAY)  # the labeled source still requires it
    pd.DataFrame({"f1": [1.0]}).to_csv(path, index=False)
    with pytest.raises(SourceError, match=r"missing column\(s\) \['f2'"):
        read_labeled_file(path, DAY, labeled=False)
