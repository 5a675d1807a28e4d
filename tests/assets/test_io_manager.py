from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ds_assets.resources.io_manager import (
    LocalArtifactIOManager,
    MissingArtifactError,
    OnnxGraph,
    PartitionFrames,
    StoredTable,
    not_a_partition,
)
from ds_serving import atomic


def _frame(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2026-11-01", periods=n, freq="min", tz="UTC"),
            "x": range(n),
        }
    )


def test_partitioned_round_trip_keeps_timezone(tmp_path: Path) -> None:
    manager = LocalArtifactIOManager(base_dir=str(tmp_path))
    out = dg.build_output_context(asset_key=dg.AssetKey("raw"), partition_key="2026-11-01")
    manager.handle_output(out, _frame())
    path = tmp_path / "raw" / "2026-11-01.parquet"
    assert path.is_file()
    back = manager.load_input(
        dg.build_input_context(asset_key=dg.AssetKey("raw"), partition_key="2026-11-01")
    )
    pd.testing.assert_frame_equal(back, _frame())


def test_json_and_onnx_values(tmp_path: Path) -> None:
    manager = LocalArtifactIOManager(base_dir=str(tmp_path))
    manager.handle_output(dg.build_output_context(asset_key=dg.AssetKey("report")), {"f1": 0.5})
    manager.handle_output(dg.build_output_context(asset_key=dg.AssetKey("g")), OnnxGraph(b"\x01"))
    assert manager.load_input(dg.build_input_context(asset_key=dg.AssetKey("report"))) == {
        "f1": 0.5
    }
    assert manager.load_input(dg.build_input_context(asset_key=dg.AssetKey("g"))) == OnnxGraph(
        b"\x01"
    )


def test_numpy_numbers_in_a_json_output_come_back_as_numbers(tmp_path: Path) -> None:
    """``default=str`` wrote numpy scalars as text: a count came back as "3"."""
    import numpy as np

    manager = LocalArtifactIOManager(base_dir=str(tmp_path))
    value = {"rows": np.int64(3), "threshold": np.float32(0.5), "flag": np.bool_(True),
             "series": np.array([1, 2]), "when": pd.Timestamp("2026-11-01", tz="UTC")}
    manager.handle_output(dg.build_output_context(asset_key=dg.AssetKey("r")), value)
    back = manager.load_input(dg.build_input_context(asset_key=dg.AssetKey("r")))
    assert back == {"rows": 3, "threshold": 0.5, "flag": True, "series": [1, 2],
                    "when": "2026-11-01 00:00:00+00:00"}


def test_missing_asset_error_names_it(tmp_path: Path) -> None:
    manager = LocalArtifactIOManager(base_dir=str(tmp_path))
    context = dg.build_input_context(asset_key=dg.AssetKey("raw"), partition_key="2026-11-09")
    with pytest.raises(MissingArtifactError, match=r"partition 2026-11-09 of asset 'raw'"):
        manager.load_input(context)


def test_unsupported_type_is_rejected(tmp_path: Path) -> None:
    manager = LocalArtifactIOManager(base_dir=str(tmp_path))
    with pytest.raises(TypeError, match="cannot store a set"):
        manager.handle_output(dg.build_output_context(asset_key=dg.AssetKey("s")), {1, 2})


def test_crash_during_write_keeps_the_old_partition(tmp_path: Path, monkeypatch) -> None:
    manager = LocalArtifactIOManager(base_dir=str(tmp_path))
    context = dg.build_output_context(asset_key=dg.AssetKey("raw"), partition_key="2026-11-01")
    manager.handle_output(context, _frame(5))
    path = tmp_path / "raw" / "2026-11-01.parquet"
    before = path.read_bytes()

    def half_write(self: pd.DataFrame, target: Path, **kwargs: object) -> None:
        Path(target).write_bytes(b"PAR1 half written")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_write)
    with pytest.raises(OSError, match="disk full"):
        manager.handle_output(context, _frame(50))
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["2026-11-01.parquet"]


def test_atomic_write_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.json"
    atomic.atomic_write_text(target, "one")
    atomic.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("three")
        raise RuntimeError("crash")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_write_gives_normal_file_permissions(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        atomic.atomic_write_text(tmp_path / "report.html", "<html/>")
        assert atomic.current_umask() == umask
        assert os.umask(umask) == umask  # reading it left it as it was
    finally:
        os.umask(old)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == mode  # not mkstemp's 0600


def test_partition_frames_load_lazily(tmp_path: Path) -> None:
    (tmp_path / "p1.parquet").write_bytes(b"garbage: never read unless accessed")
    _frame(3).to_parquet(tmp_path / "p2.parquet")
    frames = PartitionFrames({"p2": tmp_path / "p2.parquet", "p1": tmp_path / "p1.parquet"})
    assert list(frames) == ["p1", "p2"] and len(frames) == 2
    assert len(frames["p2"]) == 3


def test_unpartitioned_consumer_of_a_single_partition_gets_a_mapping(tmp_path: Path) -> None:
    """A fresh deployment whose partitions definition holds one day so far."""
    manager = LocalArtifactIOManager(base_dir=str(tmp_path))
    out = dg.build_output_context(asset_key=dg.AssetKey("raw"), partition_key="2026-11-01")
    manager.handle_output(out, _frame())
    context = dg.build_input_context(
        asset_key=dg.AssetKey("raw"),
        asset_partitions_def=dg.StaticPartitionsDefinition(["2026-11-01"]),
        asset_partition_key_range=dg.PartitionKeyRange("2026-11-01", "2026-11-01"),
    )
    frames = manager.load_input(context)
    assert isinstance(frames, PartitionFrames) and list(frames) == ["2026-11-01"]
    pd.testing.assert_frame_equal(frames["2026-11-01"], _frame())


def test_a_stored_table_is_moved_into_place_and_handed_back_by_path(tmp_path: Path) -> None:
    manager = LocalArtifactIOManager(base_dir=str(tmp_path / "store"))
    written = tmp_path / "elsewhere" / "scored.parquet"
    written.parent.mkdir()
    _frame().to_parquet(written, index=False)
    out = dg.build_output_context(asset_key=dg.AssetKey("scored"), partition_key="2026-11-01")
    manager.handle_output(out, StoredTable(written))
    path = tmp_path / "store" / "scored" / "2026-11-01.parquet"
    assert path.is_file() and not written.exists()  # moved, not copied
    as_path = manager.load_input(dg.build_input_context(
        asset_key=dg.AssetKey("scored"), partition_key="2026-11-01",
        dagster_type=dg.PythonObjectDagsterType(StoredTable)))
    assert as_path == StoredTable(path)
    as_frame = manager.load_input(
        dg.build_input_context(asset_key=dg.AssetKey("scored"), partition_key="2026-11-01"))
    pd.testing.assert_frame_equal(as_frame, _frame())


def test_a_stored_table_that_is_not_complete_never_replaces_the_stored_partition(
    tmp_path: Path,
) -> None:
    """The file was renamed into place first and read after: a truncated one overwrote the
    good partition and then failed the run."""
    manager = LocalArtifactIOManager(base_dir=str(tmp_path / "store"))
    out = dg.build_output_context(asset_key=dg.AssetKey("scored"), partition_key="2026-11-01")
    good = tmp_path / "good.parquet"
    _frame().to_parquet(good, index=False)
    manager.handle_output(out, StoredTable(good))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[:40] if good.exists() else b"PAR1" + b"x" * 36)
    with pytest.raises(ValueError, match=r"bad.parquet: not a complete Parquet file .* the "
                                         r"stored 2026-11-01.parquet is kept"):
        manager.handle_output(out, StoredTable(bad))
    stored = pd.read_parquet(tmp_path / "store" / "scored" / "2026-11-01.parquet")
    pd.testing.assert_frame_equal(stored, _frame())


def test_partition_columns_come_from_the_schema_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """training_set asks each stored day whether it has labels: reading every day in full to
    answer cost the whole history, not the window."""
    path = tmp_path / "d.parquet"
    _frame().to_parquet(path, index=False)
    frames = PartitionFrames({"2026-11-01": path})
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: pytest.fail("rows were read"))
    assert frames.columns("2026-11-01") == ["timestamp", "x"]


def test_a_day_the_partitions_do_not_hold_is_named(tmp_path: Path) -> None:
    """A run launched by hand for today (daily partitions end with the last complete day) failed
    a type check on an empty mapping; it now says which day and which days exist."""
    manager = LocalArtifactIOManager(base_dir=str(tmp_path))
    days = dg.DailyPartitionsDefinition(start_date="2026-11-01")
    context = dg.build_input_context(asset_key=dg.AssetKey("raw"), partition_key="2999-01-01",
                                     asset_partitions_def=days)
    refused = (r"asset 'raw': partition '2999-01-01' is not one of its partitions "
               r"\(2026-11-01\.\.20\d\d-\d\d-\d\d\) \(they end with the last complete one\)")
    with pytest.raises(MissingArtifactError, match=refused):
        manager.load_input(context)
    out = dg.build_output_context(asset_key=dg.AssetKey("raw"), partition_key="2999-01-01",
                                  asset_partitions_def=days)
    with pytest.raises(MissingArtifactError, match=refused):  # and nothing is written
        manager.handle_output(out, _frame())
    assert not list(tmp_path.rglob("*.parquet"))
    # a dataset with a declared end: a day past it is not in the making
    closed = dg.DailyPartitionsDefinition(start_date="2026-11-01", end_date="2026-11-03")
    assert not_a_partition(closed, "2026-12-08") == (
        "'2026-12-08' is not one of its partitions (2026-11-01..2026-11-02)")
    assert not_a_partition(closed, "2026-11-02") is None
