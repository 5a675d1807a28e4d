"""bench.families: every family fitted and scored on the same rows, ratios against the first."""

from __future__ import annotations

import json
from pathlib import Path

from bench.families import main, run


def test_each_family_is_timed_on_the_same_rows_against_the_baseline() -> None:
    result = run(["pca", "window_knn"], repeats=2, threads=1, hosts=2)
    assert result["baseline"] == "pca" and result["rows"] > 0
    knn = result["families"]["window_knn"]
    assert len(knn["score_seconds"]) == 2 and knn["window"] == 48 and knn["rows_per_second"] > 0
    assert result["families"]["pca"]["scoring_speed_vs_pca"] == 1.0


def test_main_writes_the_result(tmp_path: Path) -> None:
    out = tmp_path / "f.json"
    assert main(["--families", "pca", "--repeats", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["families"]["pca"]["window"] is None
