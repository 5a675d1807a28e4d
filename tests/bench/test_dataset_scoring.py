"""bench.dataset_scoring's two measured paths run on the same rows and bundle."""

from __future__ import annotations

from pathlib import Path

from bench.dataset_scoring import bundle_dir, child, frame


def test_ceiling_and_score_frame_both_score_the_rows(tmp_path: Path) -> None:
    rows = frame(1_000)
    assert rows.groupby("host_id")["timestamp"].is_monotonic_increasing.all()
    assert str(rows["timestamp"].dt.tz) == "UTC"
    model = bundle_dir(tmp_path)
    for what in ("ceiling", "score_frame"):
        got = child(5_000, model, what)
        assert got["seconds"] > 0 and got["rows_per_s"] > 0 and got["peak_rss_mib"] > 0
