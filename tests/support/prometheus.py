"""A live ds-scorer and a real Prometheus scraping it through deploy/prometheus/rules.yml, for the
tests that need both (tests/deploy/test_prometheus_live.py, test_grafana.py), and a Pushgateway
that Prometheus also scrapes when the test asks for it. Import the fixtures into the test module:
``from tests.support.prometheus import prometheus, pushgateway, scorer``.

Prometheus and the Pushgateway are Debian's prometheus and prometheus-pushgateway packages:
without them the fixtures skip, unless DS_REQUIRE_PROMETHEUS is set (as in CI), where they fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ds_serving.bundle import promote, write_bundle
from tests.support.graphs import sum_graph
from tests.support.serving import free_port

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
FEATURES = ["f1", "f2"]


def require(binary: str, package: str = "prometheus") -> str:
    exe = shutil.which(binary)
    if exe is None:
        message = f"{binary} not found (apt-get install {package})"
        if os.environ.get("DS_REQUIRE_PROMETHEUS"):
            pytest.fail(f"DS_REQUIRE_PROMETHEUS is set but {message}")
        pytest.skip(message)
    return exe


def wait(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
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
    """``ds-scorer serve`` in a subprocess serving model ``live`` (score = f1 + f2, threshold 1):
    yields (models dir, gRPC port, metrics port) once the model is loaded."""
    models = tmp_path / "models"
    bundle = write_bundle(models, "live", sum_graph(2), kind="sum", features=FEATURES,
                          threshold=1.0, threshold_rule={"rule": "fixed"})
    promote(models, "live", bundle.manifest.version)
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ds_serving.cli", "--log-level", "WARNING", "serve", "--models",
         str(models), "--name", "live", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
         "--poll-interval", "0.5", "--backend", "cpu"])
    try:
        wait("the scorer's model", lambda: b"ds_scorer_model_loaded 1.0" in urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read())
        yield models, port, metrics_port
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def pushgateway() -> Iterator[str]:
    """Debian's Pushgateway on a free local port (in memory, no persistence file); yields its URL.
    A test that requests it alongside ``prometheus`` gets it scraped."""
    exe = require("prometheus-pushgateway", "prometheus-pushgateway")
    port = free_port()
    # Debian's build persists to /var/lib/prometheus/pushgateway.data by default: an empty
    # --persistence.file keeps each test's pushes to itself
    process = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}",
                                "--persistence.file="],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait("the pushgateway", lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status
             == 200)
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def prometheus(
    request: pytest.FixtureRequest, tmp_path: Path, scorer: tuple[Path, int, int]
) -> Iterator[str]:
    """Prometheus scraping ``scorer`` every second as job ds-scorer with the rules of
    deploy/prometheus/rules.yml evaluated every second (``for`` dropped), and, when the test
    also requests ``pushgateway``, the Pushgateway as job pushgateway with ``honor_labels`` (the
    pushed job and grouping labels kept, as docker/prometheus/prometheus.yml does); yields its
    URL."""
    exe = require("prometheus")
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:  # the same expressions, evaluated fast
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule.pop("for", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    jobs: list[dict[str, Any]] = [{"job_name": "ds-scorer", "static_configs": [
        {"targets": [f"127.0.0.1:{scorer[2]}"]}]}]
    if "pushgateway" in request.fixturenames:
        gateway = urllib.parse.urlsplit(request.getfixturevalue("pushgateway")).netloc
        jobs.append({"job_name": "pushgateway", "honor_labels": True,
                     "static_configs": [{"targets": [gateway]}]})
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(tmp_path / "rules.yml")], "scrape_configs": jobs}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [exe, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait("prometheus", lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status
             == 200)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """An instant query through /api/v1/query; asserts it parsed and ran (status success). A
    refused query (400, 422: bad PromQL) fails at once with Prometheus's error, instead of
    passing for an unreachable server (OSError) that ``wait`` retries."""
    q = urllib.parse.urlencode({"query": expr})
    try:
        raw = urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5).read()
    except urllib.error.HTTPError as exc:
        if exc.code not in (400, 422):
            raise
        body = exc.read().decode(errors="replace")
        raise AssertionError(f"{expr!r}: {exc.code} {body}") from None
    answer = json.loads(raw)
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def firing_alerts(url: str) -> set[str]:
    answer = json.loads(urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=5).read())
    return {a["labels"]["alertname"] for a in answer["data"]["alerts"] if a["state"] == "firing"}
