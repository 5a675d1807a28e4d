"""bench.ingest on a small file: both sides run and the document holds the ratio."""

from __future__ import annotations

import json
from pathlib import Path

from bench.ingest import main


def test_the_ingest_benchmark_measures_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    assert main(["--rows", "20000", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["rows"] == 20000
    assert document["declared"]["days"] == 1 and document["declared"]["day_rows"] == 20000
    assert document["pandas_whole_file"]["rows"] == 20000
    assert document["peak_rss_ratio"] == round(
        document["declared"]["peak_rss_mib"] / document["pandas_whole_file"]["peak_rss_mib"], 3)
