"""bench.many_entities times every layout, host count, smoothing and tails setting it names."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.many_entities import day, main


def test_each_day_is_as_ordered_as_the_layout_says(tmp_path: Path) -> None:
    for layout in ("sorted", "interleaved"):
        day(60, 4, layout, tmp_path / "day.parquet")
        rows = pd.read_parquet(tmp_path / "day.parquet")
        assert len(rows) == 60 and rows["host_id"].nunique() == 4
        assert rows.groupby("host_id")["timestamp"].is_monotonic_increasing.all()
        runs = int((rows["host_id"] != rows["host_id"].shift()).sum())
        assert runs == (4 if layout == "sorted" else 60)


def test_every_combination_is_timed(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    assert main(["--rows", "400", "--hosts", "2", "20", "--repeats", "1", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert len(results) == 2 * 2 * 2 * 2  # layouts x hosts x smoothing x keeping tails
    assert all(r["median_s"] > 0 for r in results)
