"""bench.dataset_scoring's measured paths run on the same rows and bundle."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.dataset_scoring import KINDS, before, bundle_dir, child, frame
from ds_assets.training.lead_in_cache import kept_path


def test_ceiling_score_frame_and_score_table_all_score_the_rows(tmp_path: Path) -> None:
    rows = frame(1_000)
    assert rows.groupby("host_id")["timestamp"].is_monotonic_increasing.all()
    assert str(rows["timestamp"].dt.tz) == "UTC"
    model = bundle_dir(tmp_path)
    table = tmp_path / "day.parquet"
    child(5_000, model, "write", table)
    assert len(pd.read_parquet(table)) == 5_000
    # the day before ends before the day begins, so it can lead in
    assert pd.read_parquet(before(table))["timestamp"].max() < rows["timestamp"].min()
    child(5_000, model, "keep", table)  # the day before scored, its last rows kept
    assert kept_path(before(table)).is_file()
    for what in KINDS:
        got = child(5_000, model, what, table)
        assert got["seconds"] > 0 and got["rows_per_s"] > 0 and got["peak_rss_mib"] > 0
    assert table.exists() and not table.with_name("scored-day.parquet").exists()
    assert not kept_path(table).exists()  # what score_table_kept kept of the day is removed
