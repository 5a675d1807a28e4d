"""Drift and promotion sensors evaluated as the daemon does (build_sensor_context + evaluate_tick)
against an instance holding real materialization records: episodes, cursors, de-duplication."""

from __future__ import annotations

import json
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from ds_assets.definitions import build_definitions
from ds_assets.sensors.backfill import partition_backfill
from ds_assets.sensors.drift import build_drift_sensor
from ds_assets.sensors.promotion import RESCORE_JOB, build_promotion_sensor
from ds_assets.sensors.records import previous_days
from ds_assets.settings import Settings
from ds_serving.bundle import load_champion
from tests.conftest import DAYS as CONF_DAYS
from tests.conftest import TINY_SOURCE

DAYS = previous_days("2026-11-12", 12)  # 2026-11-01 .. 2026-11-12


def _report(instance: dg.DagsterInstance, asset: str, day: str | None, **meta: Any) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset, partition=day, metadata=meta)
    )


def _drift(instance: dg.DagsterInstance, day: str, drifted: bool, version: str = "1") -> None:
    _report(instance, "drift_report", day, drifted=drifted, reference_version=version,
            drift_score=2.0 if drifted else 0.3)


def _tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    cursor: str | None,
    defs: dg.Definitions | None = None,
) -> tuple[list[dg.RunRequest], str | None, str | None]:
    """One daemon tick; ``defs`` resolves the partitioned jobs that requests target."""
    result = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    )
    return list(result.run_requests or []), result.skip_message, result.cursor


@pytest.fixture
def instance() -> Any:
    with dg.instance_for_test() as inst:
        yield inst


def test_drift_sensor_requests_once_per_episode(instance: dg.DagsterInstance) -> None:
    sensor = build_drift_sensor(k=3, training_window=7)
    requests, skip, cursor = _tick(sensor, instance, None)
    assert not requests and skip == "no drift_report materialized yet"

    for day in DAYS[:4]:
        _drift(instance, day, False)
    _drift(instance, DAYS[4], True)
    _drift(instance, DAYS[5], True)
    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert not requests and "2 of the 3" in (skip or "")

    requests, skip, cursor = _tick(sensor, instance, cursor)  # nothing new: no work at all
    assert not requests and skip == "no new drift reports since the last tick"

    _drift(instance, DAYS[6], True)
    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert len(requests) == 1
    request = requests[0]
    assert request.run_key == f"drift-retrain:1:{DAYS[4]}"
    assert request.run_config["ops"]["training_set"]["config"] == {
        "n_partitions": 7, "end_partition": DAYS[6]}
    assert request.tags["datasentinel/drifted_partitions"] == ",".join(DAYS[4:7])
    assert json.loads(cursor or "{}")["episode"] == f"1:{DAYS[4]}"

    # the same episode going on, or re-evaluated, never requests again
    _drift(instance, DAYS[7], True)
    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert not requests and "already requested" in (skip or "")
    # a lost cursor yields the same run key, which the daemon drops as a duplicate
    again, _, _ = _tick(sensor, instance, None)
    assert [r.run_key for r in again] == [request.run_key]

    # the episode ends; a later one is a new request
    _drift(instance, DAYS[8], False)
    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert not requests and skip == "latest partition shows no drift"
    for day in DAYS[9:12]:
        _drift(instance, day, True)
    requests, _, cursor = _tick(sensor, instance, cursor)
    assert [r.run_key for r in requests] == [f"drift-retrain:1:{DAYS[9]}"]


def test_drift_against_a_new_champion_starts_a_new_episode(
    instance: dg.DagsterInstance,
) -> None:
    sensor = build_drift_sensor(k=3)
    _drift(instance, DAYS[0], True, "1")
    _drift(instance, DAYS[1], True, "1")
    _drift(instance, DAYS[2], True, "2")  # judged against the retrained model
    requests, skip, _ = _tick(sensor, instance, None)
    assert not requests and "1 of the 3" in (skip or "")
    # re-scored days (reports against v2) count again
    _drift(instance, DAYS[0], True, "2")
    _drift(instance, DAYS[1], True, "2")
    requests, _, _ = _tick(sensor, instance, None)
    assert [r.run_key for r in requests] == [f"drift-retrain:2:{DAYS[0]}"]


def test_a_missing_day_breaks_the_run_and_k_is_configurable(
    instance: dg.DagsterInstance,
) -> None:
    for day in (DAYS[0], DAYS[1], DAYS[3]):  # DAYS[2] never reported
        _drift(instance, day, True)
    requests, skip, _ = _tick(build_drift_sensor(k=2), instance, None)
    assert not requests and "1 of the 2" in (skip or "")
    requests, _, _ = _tick(build_drift_sensor(k=1, training_window=3), instance, None)
    assert requests[0].run_config["ops"]["training_set"]["config"] == {
        "n_partitions": 3, "end_partition": DAYS[3]}
    with pytest.raises(ValueError, match="k=0"):
        build_drift_sensor(k=0)


def test_promotion_sensor_rescores_recent_days_scored_by_another_model(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    sensor = build_promotion_sensor(n_partitions=4)
    defs = build_definitions(settings)
    requests, skip, cursor = _tick(sensor, instance, None)
    assert not requests and skip == "no new champion materialization"

    for day in DAYS[:8]:
        _report(instance, "scored_telemetry", day, model_version="1")
    _report(instance, "champion", None, champion_version="1", promoted=True)
    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert not requests and "no recent day scored by another model" in (skip or "")

    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert not requests and skip == "no new champion materialization"

    _report(instance, "scored_telemetry", DAYS[7], model_version="2")  # already re-scored
    _report(instance, "champion", None, champion_version="2", promoted=True)
    requests, skip, cursor = _tick(sensor, instance, cursor, defs)
    assert [(r.partition_key, r.run_key) for r in requests] == [
        (d, f"rescore:v2:{d}") for d in DAYS[4:7]
    ]
    assert all(r.job_name == RESCORE_JOB for r in requests)
    assert {r.tags["datasentinel/champion"] for r in requests} == {"2"}

    # a challenger that lost: champion re-materialized, version unchanged -> nothing
    _report(instance, "champion", None, champion_version="2", promoted=False)
    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert not requests and skip == "champion still v2"


def test_backfill_helper_makes_one_keyed_run_per_partition() -> None:
    requests = partition_backfill("job", ["2026-11-03", "2026-11-02"], "p", {"a": "b"})
    assert [(r.partition_key, r.run_key, r.job_name) for r in requests] == [
        ("2026-11-02", "p:2026-11-02", "job"), ("2026-11-03", "p:2026-11-03", "job")]
    assert requests[0].tags == {"a": "b", "datasentinel/backfill": "p"}


DRIFT = {"drift_start": "2026-11-04", "drift_features": ["latency_ms", "cpu_util", "error_rate"],
         "drift_mean_shift": 8.0, "drift_scale": 2.0, "drift_seasonal_amplitude": 4.0}
TINY_MODEL = {"epochs": 1, "hidden": [8, 3], "batch_size": 128}


def test_drift_story_end_to_end(settings: Settings) -> None:
    """Real runs: drifted days -> drift reports -> sensor -> retrain -> promotion -> re-score."""
    defs = build_definitions(settings)
    source = {"ops": {"raw_telemetry": {"config": {**TINY_SOURCE, **DRIFT}}}}
    with dg.instance_for_test() as instance:
        for day in CONF_DAYS:
            assert defs.resolve_job_def("ingest_telemetry").execute_in_process(
                instance=instance, partition_key=day, run_config=source).success
        assert defs.resolve_job_def("train_detector").execute_in_process(
            instance=instance, run_config={"ops": {
                "training_set": {"config": {"n_partitions": 3, "end_partition": CONF_DAYS[-1]}},
                "detector": {"config": TINY_MODEL}}}).success
        drift_sensor = defs.resolve_sensor_def("drift_retrain_sensor")
        cursor = None
        for day in ("2026-11-03", "2026-11-04", "2026-11-05", "2026-11-06"):
            assert defs.resolve_job_def("daily_pipeline").execute_in_process(
                instance=instance, partition_key=day, run_config=source).success
            requests, skip, cursor = _tick(drift_sensor, instance, cursor, defs)
            report = json.loads(
                (settings.data_dir / "assets" / "drift_report" / f"{day}.json").read_text())
            assert report["drifted"] == (day >= DRIFT["drift_start"]), report["drifted_features"]
            if day < "2026-11-06":
                assert not requests, skip
        assert set(report["drifted_features"]) == set(DRIFT["drift_features"])
        (request,) = requests
        assert request.run_key == "drift-retrain:1:2026-11-04"
        alerts = pd.read_parquet(settings.data_dir / "assets" / "alerts" / "2026-11-06.parquet")
        assert len(alerts) > 0  # the old model alarms on the drifted day

        retrain = defs.resolve_job_def("train_detector").execute_in_process(
            instance=instance, tags=request.tags,
            run_config={"ops": {**request.run_config["ops"], "detector": {"config": TINY_MODEL}}})
        assert retrain.success
        bundle = load_champion(settings.models_dir, settings.model_name)
        assert bundle.manifest.lineage["partitions"][-1] == "2026-11-06"  # drifted data in

        decision = json.loads((settings.data_dir / "assets" / "champion.json").read_text())
        requests, skip, _ = _tick(defs.resolve_sensor_def("champion_rescore_sensor"), instance,
                                  None, defs)
        if not decision["decision"]["promote"]:
            assert not requests and "scored by another model" in (skip or "")
            return
        assert [r.partition_key for r in requests] == ["2026-11-03", "2026-11-04", "2026-11-05",
                                                       "2026-11-06"]
        for r in requests:
            assert defs.resolve_job_def(r.job_name or "").execute_in_process(
                instance=instance, partition_key=r.partition_key, tags=r.tags).success
            scored = pd.read_parquet(
                settings.data_dir / "assets" / "scored_telemetry" / f"{r.partition_key}.parquet")
            assert set(scored["model_version"]) == {decision["version"]}
        # nothing new since: the promotion sensor has nothing more to do
        assert not _tick(defs.resolve_sensor_def("champion_rescore_sensor"), instance, None,
                         defs)[0]
