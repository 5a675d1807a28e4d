"""Grafana dashboards as code (docker/grafana): the checked-in JSON is what the program generates,
its panels query the provisioned datasource, and every panel's PromQL returns data from a real
Prometheus scraping a live ds-scorer through deploy/prometheus/rules.yml and a real Pushgateway
holding a day of pipeline metrics (the Pipeline row)."""

from __future__ import annotations

import importlib.util
import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from ds_assets.resources.pipeline_metrics import JOB, METRICS, PREFIX, PipelineMetrics
from ds_assets.telemetry.validation import CHECK_NAMES
from ds_serving.bundle import CHAMPION_FILE
from ds_serving.client import ScorerClient
from tests.support.prometheus import (
    RULES,
    firing_alerts,
    prometheus,
    pushgateway,
    query,
    scorer,
    wait,
)

__all__ = ["prometheus", "pushgateway", "scorer"]  # fixtures, used by name

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "docker" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "ds-scorer.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
COMPOSE = ROOT / "docker" / "docker-compose.yaml"
# what Grafana puts in place of its variables before a query reaches Prometheus; $job and
# $dataset are the dashboard's own variables (their current values), the others Grafana's built-ins
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$job": "ds-scorer",
             "$dataset": "default"}
METRIC = re.compile(r"\b(ds_scorer[a-z0-9_:]*|ds_pipeline_[a-z0-9_]+|ALERTS)\b")
PIPELINE_ROW = "Pipeline"


def _program() -> ModuleType:
    pytest.importorskip("grafana_foundation_sdk", reason="pip install -e '.[dev]'")
    spec = importlib.util.spec_from_file_location("build_dashboards",
                                                  GRAFANA / "build_dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _pipeline_panels() -> list[dict[str, Any]]:
    """The panels below the Pipeline row (it is the last row)."""
    panels = _dashboard()["panels"]
    [start] = [i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == PIPELINE_ROW]
    assert all(p["type"] != "row" for p in panels[start + 1:]), "the Pipeline row is not last"
    return list(panels[start + 1:])


def _panels() -> list[dict[str, Any]]:
    """The dashboard's panels, rows left out (their panels too, when collapsed)."""
    panels: list[dict[str, Any]] = []
    for panel in _dashboard()["panels"]:
        if panel["type"] == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def _expr(target: dict[str, Any]) -> str:
    expr = str(target["expr"])
    for name, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def _recorded() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def _alerts() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    return {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_the_checked_in_dashboard_is_what_the_program_generates() -> None:
    program = _program()
    assert DASHBOARD.read_text() == program.render(), (
        "docker/grafana/dashboards/ds-scorer.json is stale: "
        "run python docker/grafana/build_dashboards.py")
    assert program.main(["--check"]) == 0


def test_every_panel_has_a_promql_target_and_a_place_on_the_grid() -> None:
    dashboard = _dashboard()
    panels = _panels()
    assert len(panels) >= 8
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in panels}
    for wanted in ("Request rate by method and code", "Server-side error ratio",
                   "Handling time p50 / p99", "Rows scored per second", "Anomaly rate per model",
                   "Model loaded", "Model reload failures", "Open alerts"):
        assert wanted in titles
    pipeline = {p["title"] for p in _pipeline_panels()}
    assert pipeline == {"Rows ingested per day", "Blocking checks failed per day",
                        "Flag rate per day", "Alert episodes per day", "Drift per day",
                        "Champion version", "Training duration"}
    for panel in panels:
        targets = panel.get("targets") or []
        assert targets, panel["title"]
        assert all(str(t.get("expr", "")).strip() for t in targets), panel["title"]
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]


def test_queries_name_metrics_the_scorer_exports_or_the_rules_record() -> None:
    source = (ROOT / "ds_serving" / "metrics.py").read_text()
    exported = {f"ds_scorer_{name}" for name in re.findall(r'f"\{PREFIX\}_(\w+)"', source)}
    assert "ds_scorer_requests" in exported  # the pattern still reads metrics.py
    recorded = _recorded()
    pushed = {PREFIX + name for name in METRICS}
    pipeline = {p["id"] for p in _pipeline_panels()}
    for panel in _panels():
        for target in panel["targets"]:
            names = set(METRIC.findall(target["expr"]))
            assert names, target["expr"]
            if panel["id"] in pipeline:  # the gauges the assets push, per dataset, as their job
                assert names <= pushed, (panel["title"], names - pushed)
                assert f'job="{JOB}"' in target["expr"], panel["title"]
                assert 'dataset=~"$dataset"' in target["expr"], panel["title"]
                continue
            for name in names:
                base = re.sub(r"_(total|bucket|count|sum|info)$", "", name)
                assert name in recorded or base in exported or name == "ALERTS", (
                    f"{panel['title']}: {name} is neither exported nor recorded")
    used = {n for p in _pipeline_panels() for t in p["targets"] for n in METRIC.findall(t["expr"])}
    assert pushed - used == {PREFIX + "checks_run"}  # every pipeline metric is on the dashboard
    # the firing-alerts panel selects every alert of the rules
    [selector] = [m for p in _panels() for t in p["targets"]
                  for m in re.findall(r'alertname=~"([^"]+)"', t["expr"])]
    assert _alerts() and all(re.fullmatch(selector, name) for name in _alerts())


def test_panels_query_the_provisioned_datasource() -> None:
    [source] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["type"] == "prometheus"
    uid = source["uid"]
    dashboard = _dashboard()
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid
    # the datasource reaches the compose service, and Grafana reads the provisioned files
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    url = urllib.parse.urlsplit(source["url"])
    assert url.hostname in compose and url.hostname == "prometheus"
    assert f"{url.port}:{url.port}" in compose["prometheus"]["ports"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["grafana"]["volumes"]
                  if v.startswith("./"))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    [provider] = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert (ROOT / "docker" / "grafana" / "dashboards").is_dir()


def _send_load(port: int) -> None:
    """About 6 s of Score calls from eight hosts, about 1 row in 6 flagged (f1 + f2 > 1), and a
    host whose rows are all anomalous, so entity alerts open."""
    rng = np.random.default_rng(0)
    hosts = np.array([f"h{i % 8}" for i in range(64)])
    client = ScorerClient(f"127.0.0.1:{port}", timeout=10)
    try:
        end = time.monotonic() + 6
        while time.monotonic() < end:
            client.score(rng.normal(0, 0.6, (64, 2)).astype(np.float32), entities=hosts)
            client.score(np.full((4, 2), 2.0, np.float32), entities=["hot"] * 4)
            time.sleep(0.02)
    finally:
        client.close()


def _push_pipeline_days(url: str) -> None:
    """What the assets push for two partition days of dataset ``default`` (the second drifted)
    and one of ``pumps``, through the pipeline's own resource: ingest, checks, scoring, alerts,
    drift per day; training and champion per dataset."""
    metrics = PipelineMetrics(pushgateway_url=url)
    days = [("default", "2026-06-01", 11520, 173, 4, 0.08, 0.0),
            ("default", "2026-06-02", 11520, 402, 9, 0.31, 1.0),
            ("pumps", "2026-06-02", 2880, 31, 1, 0.05, 0.0)]
    for dataset, day, rows, flagged, episodes, drift, drifted in days:
        for step, values in (
            ("ingest", {"rows_ingested": rows}),
            ("checks", {"checks_failed": 0, "checks_run": len(CHECK_NAMES)}),
            ("scoring", {"rows_scored": rows, "anomalies_flagged": flagged}),
            ("alerts", {"alert_episodes": episodes}),
            ("drift", {"drift_score": drift, "drifted": drifted}),
        ):
            assert metrics.push(dataset, step, values, {"day": day}), (dataset, day, step)
    for dataset, seconds, version in (("default", 41.7, 3.0), ("pumps", 12.4, 1.0)):
        assert metrics.push(dataset, "training", {"training_seconds": seconds})
        assert metrics.push(dataset, "champion", {"champion_version": version})


def test_every_panel_query_returns_data_from_a_live_prometheus(
    scorer: tuple[Path, int, int], prometheus: str, pushgateway: str
) -> None:
    models, port, metrics_port = scorer
    _push_pipeline_days(pushgateway)  # scraped while the load runs
    _send_load(port)
    # the failure panels need a failure: the champion pointer names a version that does not
    # exist, so the reload is refused (the old model keeps serving) and DSScorerReloadFailing fires
    (models / "live" / CHAMPION_FILE).write_text(json.dumps({"name": "live", "version": "99"}))
    wait("DSScorerReloadFailing", lambda: "DSScorerReloadFailing" in firing_alerts(prometheus))
    exposition = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                        timeout=5).read().decode()
    pushed = urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5).read().decode()

    for variable in _dashboard()["templating"]["list"]:  # label_values(metric, label)
        metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]).groups()
        values = json.loads(urllib.request.urlopen(
            f"{prometheus}/api/v1/label/{label}/values?"
            + urllib.parse.urlencode({"match[]": metric}), timeout=5).read())
        assert variable["current"]["value"] in values["data"]
        if variable["includeAll"]:  # All: every value the variable offers matches its regex
            assert all(re.fullmatch(variable["allValue"], v) for v in values["data"])

    recorded = _recorded()
    pipeline = {p["id"] for p in _pipeline_panels()}
    for panel in _panels():
        for target in panel["targets"]:
            expr = _expr(target)
            what = f"{panel['title']} [{target['refId']}]: {expr}"
            query(prometheus, expr)  # parses and runs: a refused query fails here at once
            result = wait(what, lambda expr=expr: query(prometheus, expr), timeout=30)
            assert result, what
            for name in set(METRIC.findall(expr)) - recorded - {"ALERTS"}:
                source = pushed if name.startswith(PREFIX) else exposition
                assert f"# TYPE {name} " in source, (what, name)
            if panel["id"] in pipeline:  # $dataset: one dataset, or All (".*") for every one
                assert {r["metric"]["dataset"] for r in result} == {"default"}, what
                every = query(prometheus, expr.replace('dataset=~"default"', 'dataset=~".*"'))
                assert {r["metric"]["dataset"] for r in every} == {"default", "pumps"}, what
