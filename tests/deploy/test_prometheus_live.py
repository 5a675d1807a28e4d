"""A real Prometheus scraping a live ds-scorer: the recording rules produce their series and an
alert fires when the champion pointer goes bad. Needs Debian's prometheus package (skips without
it, unless DS_REQUIRE_PROMETHEUS is set, as in CI)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ds_serving.bundle import CHAMPION_FILE
from ds_serving.client import ScorerClient
from tests.support.prometheus import firing_alerts, prometheus, query, scorer, wait

__all__ = ["prometheus", "scorer"]  # fixtures, used by name


def test_rules_record_a_live_scorer_and_a_bad_champion_pointer_alerts(
    scorer: tuple[Path, int, int], prometheus: str
) -> None:
    models, port, _ = scorer
    rng = np.random.default_rng(0)
    client = ScorerClient(f"127.0.0.1:{port}", timeout=10)
    try:
        end = time.monotonic() + 6
        while time.monotonic() < end:  # short load: about 1 row in 6 flagged (sum > 1)
            client.score(rng.normal(0, 0.6, (64, 2)).astype(np.float32))
            time.sleep(0.02)
    finally:
        client.close()
    rows = wait("rows/s", lambda: query(prometheus, "ds_scorer:rows_scored:rate5m > 0"))
    assert rows[0]["metric"]["job"] == "ds-scorer"
    ok = wait("request rate", lambda: query(
        prometheus, 'ds_scorer:requests:rate5m{method="Score",code="OK"} > 0'))
    assert float(ok[0]["value"][1]) > 0
    rate = wait("anomaly rate", lambda: query(prometheus, "ds_scorer:anomaly_rate:ratio_rate5m"))
    assert rate[0]["metric"]["name"] == "live" and 0.05 < float(rate[0]["value"][1]) < 0.5
    assert wait("p99", lambda: query(
        prometheus, 'ds_scorer:request_duration_seconds:p99_5m{method="Score"}'))
    assert "DSScorerReloadFailing" not in firing_alerts(prometheus)

    # the champion pointer now names a version that does not exist: refused, alerted
    (models / "live" / CHAMPION_FILE).write_text(json.dumps({"name": "live", "version": "99"}))
    firing = wait("DSScorerReloadFailing", lambda: "DSScorerReloadFailing"
                  in firing_alerts(prometheus) and firing_alerts(prometheus))
    assert "DSScorerDown" not in firing and "DSScorerModelNotLoaded" not in firing
