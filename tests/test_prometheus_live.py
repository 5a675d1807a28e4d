"""A real Prometheus scraping a live ds-scorer: the recording rules produce their series and an
alert fires when the champion pointer goes bad. Needs Debian's prometheus package (skips without
it, unless DS_REQUIRE_PROMETHEUS is set, as in CI)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from ds_serving.bundle import CHAMPION_FILE, promote, write_bundle
from ds_serving.client import ScorerClient
from tests.support.graphs import sum_graph

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules.yml"
FEATURES = ["f1", "f2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require(binary: str) -> str:
    exe = shutil.which(binary)
    if exe is None:
        message = f"{binary} not found (apt-get install prometheus)"
        if os.environ.get("DS_REQUIRE_PROMETHEUS"):
            pytest.fail(f"DS_REQUIRE_PROMETHEUS is set but {message}")
        pytest.skip(message)
    return exe


def _wait(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture
def scorer(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    models = tmp_path / "models"
    bundle = write_bundle(models, "live", sum_graph(2), kind="sum", features=FEATURES,
                          threshold=1.0, threshold_rule={"rule": "fixed"})
    promote(models, "live", bundle.manifest.version)
    port, metrics_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ds_serving.cli", "--log-level", "WARNING", "serve", "--models",
         str(models), "--name", "live", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
         "--poll-interval", "0.5", "--backend", "cpu"])
    try:
        _wait("the scorer's model", lambda: b"ds_scorer_model_loaded 1.0" in urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read())
        yield models, port, metrics_port
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def prometheus(tmp_path: Path, scorer: tuple[Path, int, int]) -> Iterator[str]:
    exe = _require("prometheus")
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:  # the same expressions, evaluated fast
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule.pop("for", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(tmp_path / "rules.yml")],
              "scrape_configs": [{"job_name": "ds-scorer", "static_configs": [
                  {"targets": [f"127.0.0.1:{scorer[2]}"]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    process = subprocess.Popen(
        [exe, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait("prometheus", lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status
              == 200)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr})
    answer = json.loads(urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5).read())
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def _firing(url: str) -> set[str]:
    answer = json.loads(urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=5).read())
    return {a["labels"]["alertname"] for a in answer["data"]["alerts"] if a["state"] == "firing"}


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
    rows = _wait("rows/s", lambda: _query(prometheus, "ds_scorer:rows_scored:rate5m > 0"))
    assert rows[0]["metric"]["job"] == "ds-scorer"
    ok = _wait("request rate", lambda: _query(
        prometheus, 'ds_scorer:requests:rate5m{method="Score",code="OK"} > 0'))
    assert float(ok[0]["value"][1]) > 0
    rate = _wait("anomaly rate", lambda: _query(prometheus, "ds_scorer:anomaly_rate:ratio_rate5m"))
    assert rate[0]["metric"]["name"] == "live" and 0.05 < float(rate[0]["value"][1]) < 0.5
    assert _wait("p99", lambda: _query(
        prometheus, 'ds_scorer:request_duration_seconds:p99_5m{method="Score"}'))
    assert "DSScorerReloadFailing" not in _firing(prometheus)

    # the champion pointer now names a version that does not exist: refused, alerted
    (models / "live" / CHAMPION_FILE).write_text(json.dumps({"name": "live", "version": "99"}))
    firing = _wait("DSScorerReloadFailing", lambda: "DSScorerReloadFailing" in _firing(prometheus)
                   and _firing(prometheus))
    assert "DSScorerDown" not in firing and "DSScorerModelNotLoaded" not in firing
