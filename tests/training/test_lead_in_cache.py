"""Rows kept from a scored day stand for it only while they are what reading it would give."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ds_assets.training import lead_in_cache
from ds_assets.training.dataset_scoring import EntityTails, LeadIn

FEATURES = ["f1", "f2"]


def _day(path: Path, seed: int = 0, rows: int = 120, hosts: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "timestamp": np.repeat(pd.date_range("2026-12-01", periods=rows // hosts, freq="min"),
                               hosts),
        "host_id": [f"h{i % hosts}" for i in range(rows)],
        **{f: rng.normal(size=rows).astype(np.float32) for f in FEATURES},
    })
    frame.to_parquet(path, index=False)
    return frame


def _kept(source: Path, rows: int, features: list[str] = FEATURES) -> Path:
    """Keep ``rows`` of each entity of ``source`` as scoring would (one batch per row group)."""
    stamp = lead_in_cache.file_stamp(source)
    tails = EntityTails(rows, features)
    for batch in pq.ParquetFile(source).iter_batches(batch_size=50):
        codes = pd.factorize(batch.column("host_id").to_pandas())[0]
        tails.add(batch, codes)
    path = lead_in_cache.keep(tails, source, stamp)
    assert path is not None
    return path


def test_kept_rows_stand_for_the_day_they_were_kept_from(tmp_path: Path) -> None:
    """Beside the day, hidden from anything listing partitions, and the same rows a lead-in
    would read from the day itself, for as many rows as were kept or fewer."""
    day = tmp_path / "raw" / "2026-12-01.parquet"
    day.parent.mkdir()
    _day(day)
    path = _kept(day, rows=5)
    assert path == day.parent / ".lead_in" / day.name
    assert sorted(p.name for p in day.parent.glob("*.parquet")) == [day.name]
    for rows in (5, 3):
        kept = lead_in_cache.kept_for(day, rows, FEATURES)
        assert kept is not None and kept.equals(pq.read_table(path))
        from_day = pa.Table.from_batches(list(LeadIn(day, rows).batches(_scorer_of(), 64)))
        for source in (kept, path):  # the rows read, or the kept file itself
            from_kept = pa.Table.from_batches(list(LeadIn(source, rows).batches(_scorer_of(),
                                                                                64)))
            pd.testing.assert_frame_equal(from_kept.to_pandas(), from_day.to_pandas(),
                                          check_dtype=False)


def test_kept_rows_are_checked_on_what_was_read(tmp_path: Path) -> None:
    """Another run that keeps the same day again (a re-score by another model: fewer rows,
    other columns) replaces the file between the look-up and the lead-in: the lead-in still
    gets the rows that were checked, not the new file's."""
    day = tmp_path / "2026-12-01.parquet"
    _day(day)
    _kept(day, rows=5)
    kept = lead_in_cache.kept_for(day, 5, FEATURES)
    assert kept is not None
    _kept(day, rows=2, features=FEATURES[:1])  # replaced meanwhile
    from_kept = pa.Table.from_batches(list(LeadIn(kept, 5).batches(_scorer_of(), 64)))
    from_day = pa.Table.from_batches(list(LeadIn(day, 5).batches(_scorer_of(), 64)))
    pd.testing.assert_frame_equal(from_kept.to_pandas(), from_day.to_pandas(), check_dtype=False)
    assert lead_in_cache.kept_for(day, 5, FEATURES) is None  # the new file cannot stand for it


def test_kept_rows_do_not_stand_for_another_version_of_the_day(tmp_path: Path) -> None:
    """Re-written (new values, or the same bytes again), touched, or asked for more rows
    or another column than were kept: a miss, and the day is read instead."""
    day = tmp_path / "2026-12-01.parquet"
    _day(day)
    _kept(day, rows=5)
    assert lead_in_cache.kept_for(day, 6, FEATURES) is None  # more rows than kept
    assert lead_in_cache.kept_for(day, 5, [*FEATURES, "f3"]) is None  # a column not kept
    _day(day, seed=1)  # re-ingested with other values
    assert lead_in_cache.kept_for(day, 5, FEATURES) is None
    _kept(day, rows=5)
    assert lead_in_cache.kept_for(day, 5, FEATURES) is not None
    stat = day.stat()
    os.utime(day, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # modified in place
    assert lead_in_cache.kept_for(day, 5, FEATURES) is None


@pytest.mark.parametrize("damage", ["not parquet", "no stamp", "ids dropped"])
def test_unreadable_or_unstamped_kept_rows_are_a_miss(tmp_path: Path, damage: str) -> None:
    day = tmp_path / "2026-12-01.parquet"
    frame = _day(day)
    path = _kept(day, rows=5)
    if damage == "not parquet":
        path.write_bytes(b"PAR1 broken")
    elif damage == "no stamp":
        pq.write_table(pq.read_table(path).replace_schema_metadata({}), path)
    else:  # the day has host ids and the kept rows none: their rows cannot be matched
        meta = pq.read_schema(path).metadata
        pq.write_table(pa.Table.from_pandas(frame.drop(columns=["host_id"]).tail(5),
                                            preserve_index=False).replace_schema_metadata(meta),
                       path)
    assert lead_in_cache.kept_for(day, 5, FEATURES) is None


def test_a_day_without_rows_keeps_nothing(tmp_path: Path) -> None:
    day = tmp_path / "2026-12-01.parquet"
    _day(day)
    assert lead_in_cache.keep(EntityTails(3, FEATURES), day,
                              lead_in_cache.file_stamp(day)) is None
    assert lead_in_cache.kept_for(day, 3, FEATURES) is None
    with pytest.raises(ValueError, match="rows must be >= 1"):
        EntityTails(0, FEATURES)


def _scorer_of() -> object:
    """What ``LeadIn.batches`` reads of a scorer: its features and label."""
    class _Features:
        features = FEATURES
        label = "test model"
    return _Features()
