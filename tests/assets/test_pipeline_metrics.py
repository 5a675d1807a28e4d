"""Pipeline metrics: off by default (no network at all), pushed per dataset and day to a real
Pushgateway when configured, and a push that fails is a warning, never a failed run.

The live test runs Debian's ``prometheus-pushgateway``: without it the test skips, unless
DS_REQUIRE_PROMETHEUS is set (as in CI), where it fails."""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.request
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ds_assets.dataset import Dataset
from ds_assets.definitions import build_definitions
from ds_assets.resources import pipeline_metrics as module
from ds_assets.resources.pipeline_metrics import (
    JOB,
    METRICS,
    PIPELINE_METRICS_KEY,
    PREFIX,
    PipelineMetrics,
    version_number,
)
from ds_assets.settings import Settings
from ds_assets.telemetry.validation import CHECK_NAMES
from tests.conftest import DAYS
from tests.support.prometheus import pushgateway
from tests.support.serving import free_port

__all__ = ["pushgateway"]  # a fixture, used by name

DAY = DAYS[0]
TINY_DAY: dict[str, Any] = {"n_hosts": 2, "interval_seconds": 900, "anomaly_rate": 0.05}
ROWS = 2 * 96  # two hosts, one row every 15 minutes
PUMPS = Dataset(name="pumps", model_name="pumps-ae", partitions_start="2026-10-01",
                key_prefix="pumps")
PUMPS_DAY = "2026-10-15"


def _ingest(defs: dg.Definitions, instance: dg.DagsterInstance, ds: Dataset,
            day: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(ds.scoped("ingest_telemetry")).execute_in_process(
        instance=instance, partition_key=day,
        run_config={"ops": {ds.op_name("raw_telemetry"): {"config": TINY_DAY}}})


def _failures(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(e.event_specific_data.error.to_string()  # type: ignore[union-attr]
                     for e in result.all_events if e.is_step_failure)


def test_settings_read_the_pushgateway_url_and_default_to_off() -> None:
    assert Settings.from_env({}).pushgateway_url == ""
    url = "http://pushgateway:9091"
    assert Settings.from_env({"DS_PUSHGATEWAY_URL": url}).pushgateway_url == url
    assert not PipelineMetrics().enabled and not PipelineMetrics(pushgateway_url=" ").enabled
    assert PipelineMetrics(pushgateway_url=url).enabled
    with pytest.raises(ValueError, match="unknown pipeline metric"):
        PipelineMetrics().push("default", "ingest", {"rows": 1.0})
    assert version_number("3") == 3.0
    for odd in (None, "", "v3", "inf"):
        assert version_number(odd) != version_number(odd)  # NaN


def test_disabled_by_default_makes_no_network_call(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(module, "push_to_gateway", lambda *a, **kw: calls.append((a, kw)))
    defs = build_definitions(settings)
    dg.Definitions.validate_loadable(defs)
    resource = (defs.resources or {})[PIPELINE_METRICS_KEY]
    assert isinstance(resource, PipelineMetrics) and not resource.enabled

    result = _ingest(defs, dg.DagsterInstance.ephemeral(), Dataset.default(settings), DAY)
    assert result.success, _failures(result)
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert calls == []


def test_a_failed_push_is_a_warning_and_the_run_succeeds(settings: Settings) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    defs = build_definitions(dataclasses.replace(settings, pushgateway_url=url))
    assert (defs.resources or {})[PIPELINE_METRICS_KEY].enabled
    instance = dg.DagsterInstance.ephemeral()
    result = _ingest(defs, instance, Dataset.default(settings), DAY)
    assert result.success, _failures(result)
    assert all(e.passed for e in result.get_asset_check_evaluations())
    warnings = [e.user_message for e in instance.all_logs(result.run_id)
                if e.level == logging.WARNING and "pipeline metrics" in e.user_message]
    assert len(warnings) == 2, warnings  # the asset's push and the checks'
    assert all(url in w and "failed" in w for w in warnings)
    assert {"rows_ingested", "checks_failed"} <= {m for w in warnings for m in METRICS if m in w}


def _series(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The ``ds_pipeline_*`` samples the Pushgateway exposes to Prometheus: (name, labels) ->
    value."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith(PREFIX)}


def _value(series: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    key = (PREFIX + name, frozenset({"job": JOB, "instance": "", **labels}.items()))
    assert key in series, f"{key} not in {sorted(series)}"
    return series[key]


def test_metrics_reach_a_real_pushgateway_per_dataset_and_day(
    settings: Settings, pushgateway: str
) -> None:
    default = Dataset.default(settings)
    defs = build_definitions(dataclasses.replace(settings, pushgateway_url=pushgateway),
                             [default, PUMPS])
    instance = dg.DagsterInstance.ephemeral()
    assert _ingest(defs, instance, default, DAY).success
    assert _ingest(defs, instance, PUMPS, PUMPS_DAY).success
    train = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, raise_on_error=False, run_config={"ops": {
            "training_set": {"config": {"n_partitions": 1, "end_partition": DAY}},
            "detector": {"config": {"family": "dense_ae", "epochs": 1, "hidden": [8, 3],
                                    "batch_size": 64}}}})
    assert train.success, _failures(train)
    daily = defs.resolve_job_def("daily_pipeline").execute_in_process(
        instance=instance, partition_key=DAY, raise_on_error=False,
        run_config={"ops": {"raw_telemetry": {"config": TINY_DAY}}})
    assert daily.success, _failures(daily)

    series = _series(pushgateway)
    day = {"dataset": "default", "day": DAY}
    assert _value(series, "rows_ingested", **day, step="ingest") == ROWS
    assert _value(series, "checks_failed", **day, step="checks") == 0
    assert _value(series, "checks_run", **day, step="checks") == len(CHECK_NAMES)
    # the other dataset, pushed through the same resource, under its own label
    pumps = {"dataset": "pumps", "day": PUMPS_DAY}
    assert _value(series, "rows_ingested", **pumps, step="ingest") == ROWS
    assert _value(series, "checks_failed", **pumps, step="checks") == 0

    assets = settings.data_dir / "assets"
    scored = pd.read_parquet(assets / "scored_telemetry" / f"{DAY}.parquet")
    assert _value(series, "rows_scored", **day, step="scoring") == ROWS
    assert _value(series, "anomalies_flagged", **day, step="scoring") == int(
        scored["is_anomaly"].sum())
    alerts = pd.read_parquet(assets / "alerts" / f"{DAY}.parquet")
    assert _value(series, "alert_episodes", **day, step="alerts") == len(alerts)
    drift = json.loads((assets / "drift_report" / f"{DAY}.json").read_text())
    assert _value(series, "drift_score", **day, step="drift") == pytest.approx(
        drift["drift_score"])
    assert _value(series, "drifted", **day, step="drift") == float(drift["drifted"])
    # training and promotion are not per day: the dataset alone labels them
    assert _value(series, "champion_version", dataset="default", step="champion") == 1.0
    seconds = _value(series, "training_seconds", dataset="default", step="training")
    assert 0.0 < seconds < 600.0
    assert not any(dict(labels).get("dataset") == "pumps" and name.endswith("training_seconds")
                   for name, labels in series)


def test_a_rollback_moves_the_champion_gauge_too(settings: Settings, pushgateway: str) -> None:
    """Only the gate pushed the serving champion's version: after a rollback (or a shadow
    verdict, the same push) the gauge kept showing the version no longer served."""
    from ds_assets.definitions import build_dataset_definitions
    from ds_serving.bundle import promote
    from tests.support.serving import write_point_bundle

    for seed in (0, 1):
        write_point_bundle(settings.models_dir, seed=seed)
    promote(settings.models_dir, "ae", "2")
    live = dataclasses.replace(settings, model_name="ae", mlflow_tracking_uri=None,
                               pushgateway_url=pushgateway)  # type: ignore[arg-type]
    ds = Dataset(name="default", model_name="ae", partitions_start="2026-11-01")
    defs = build_dataset_definitions(ds, live)
    result = defs.resolve_job_def("rollback_champion").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        run_config={"ops": {"repoint_champion": {"config": {"version": "1",
                                                            "reason": "v2 floods alerts"}}}})
    assert result.success
    series = _series(pushgateway)
    assert _value(series, "champion_version", dataset="default", step="champion") == 1.0
