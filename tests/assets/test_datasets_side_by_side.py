"""Two datasets in one code location: the default one (today's names) and a prefixed one, each
with its own keys, partitions, jobs, schedules, sensors and model registry."""

from __future__ import annotations

import dagster as dg
import pytest

from ds_assets.assets.telemetry import partitions_failing_checks
from ds_assets.dataset import Dataset
from ds_assets.definitions import build_definitions
from ds_assets.settings import Settings
from ds_assets.telemetry.validation import CHECK_NAMES

ASSETS = {
    "raw_telemetry", "training_set", "detector", "onnx_model", "model_bundle", "tensorrt_engine",
    "evaluation_report", "champion", "scored_telemetry", "drift_report", "alerts",
    "robustness_report", "shadow_report", "shadow_verdict",
}
JOBS = {"ingest_telemetry", "train_detector", "score_telemetry", "daily_pipeline",
        "rescore_telemetry", "rollback_champion", "judge_candidate"}
SCHEDULES = {"daily_pipeline_schedule", "weekly_retrain_schedule"}
SENSORS = {"drift_retrain_sensor", "champion_rescore_sensor", "daily_monitoring_automation",
           "shadow_verdict_sensor"}
PUMPS_DAY = "2026-10-15"  # before the default dataset's first partition


@pytest.fixture
def pumps() -> Dataset:
    return Dataset(name="pumps", model_name="pumps-ae", partitions_start="2026-10-01",
                   key_prefix="pumps")


@pytest.fixture
def defs(settings: Settings, dataset: Dataset, pumps: Dataset) -> dg.Definitions:
    return build_definitions(settings, [dataset, pumps])


def test_both_datasets_have_their_own_assets_and_checks(
    defs: dg.Definitions, dataset: Dataset, pumps: Dataset
) -> None:
    dg.Definitions.validate_loadable(defs)
    defs.get_repository_def()
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    default_keys = {dataset.key(a).to_user_string() for a in ASSETS}
    pumps_keys = {pumps.key(a).to_user_string() for a in ASSETS}
    assert default_keys == ASSETS  # the default dataset keeps today's keys
    assert pumps_keys == {f"pumps/{a}" for a in ASSETS}
    assert keys == default_keys | pumps_keys and not default_keys & pumps_keys

    checks = {k.to_user_string() for k in defs.resolve_asset_graph().asset_check_keys}
    for prefix in ("", "pumps/"):
        assert {f"{prefix}raw_telemetry:{name}" for name in CHECK_NAMES} <= checks
        assert f"{prefix}onnx_model:onnx_parity" in checks


def test_each_dataset_has_its_own_partitions(
    defs: dg.Definitions, settings: Settings, dataset: Dataset, pumps: Dataset
) -> None:
    graph = defs.resolve_asset_graph()
    for ds, start in ((dataset, settings.partitions_start), (pumps, "2026-10-01")):
        for name in ("raw_telemetry", "scored_telemetry", "drift_report", "alerts"):
            partitions = graph.get(ds.key(name)).partitions_def
            assert isinstance(partitions, dg.DailyPartitionsDefinition)
            assert partitions.start.date().isoformat() == start
        for job in ("ingest_telemetry", "score_telemetry", "daily_pipeline",
                    "rescore_telemetry"):
            partitions = defs.resolve_job_def(ds.scoped(job)).partitions_def
            assert isinstance(partitions, dg.DailyPartitionsDefinition)
            assert partitions.start.date().isoformat() == start


def test_jobs_schedules_sensors_and_registries_are_per_dataset(
    defs: dg.Definitions, dataset: Dataset, pumps: Dataset
) -> None:
    jobs = {j.name: j for j in defs.resolve_all_job_defs()}
    schedules = {s.name: s for s in defs.schedules or []}
    sensors = {s.name: s for s in defs.sensors or []}
    assert len(schedules) == len(defs.schedules or []) and len(sensors) == len(defs.sensors or [])
    for names, found in ((JOBS, jobs), (SCHEDULES, schedules), (SENSORS, sensors)):
        assert names <= set(found)  # the default dataset keeps today's names
        assert {f"pumps__{n}" for n in names} <= set(found)
        for name in names:
            assert found[name] is not found[f"pumps__{name}"]

    training = {k.to_user_string() for k in
                jobs["pumps__train_detector"].asset_layer.executable_asset_keys}
    assert training == {f"pumps/{a}" for a in ("training_set", "detector", "onnx_model",
                                               "model_bundle", "tensorrt_engine",
                                               "evaluation_report", "champion",
                                               "robustness_report")}
    assert schedules["pumps__daily_pipeline_schedule"].job_name == "pumps__daily_pipeline"
    assert schedules["pumps__weekly_retrain_schedule"].job_name == "pumps__train_detector"
    assert sensors["pumps__drift_retrain_sensor"].job_name == "pumps__train_detector"
    assert sensors["pumps__champion_rescore_sensor"].job_name == "pumps__rescore_telemetry"
    assert sensors["pumps__shadow_verdict_sensor"].job_name == "pumps__judge_candidate"

    resources = defs.resources or {}
    assert resources[dataset.registry_key].model_name == "test-ae"
    assert resources[pumps.registry_key].model_name == "pumps-ae"
    assert pumps.registry_key == "pumps__registry"


def test_a_pumps_day_is_ingested_and_checked_under_its_own_key(
    defs: dg.Definitions, settings: Settings, pumps: Dataset
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("pumps__ingest_telemetry").execute_in_process(
        instance=instance,
        partition_key=PUMPS_DAY,
        run_config={"ops": {"pumps__raw_telemetry": {"config": {
            "n_hosts": 2, "interval_seconds": 900}}}},
    )
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == set(CHECK_NAMES)
    assert all(e.passed and e.asset_key == pumps.key("raw_telemetry") for e in evaluations)

    assets = settings.data_dir / "assets"
    assert (assets / "pumps" / "raw_telemetry" / f"{PUMPS_DAY}.parquet").is_file()
    assert not (assets / "raw_telemetry").exists()
    assert instance.get_materialized_partitions(pumps.key("raw_telemetry")) == {PUMPS_DAY}
    assert not instance.get_materialized_partitions(dg.AssetKey("raw_telemetry"))
    assert partitions_failing_checks(instance, [PUMPS_DAY], pumps) == {}


def test_sensors_read_and_request_their_own_dataset(
    defs: dg.Definitions, pumps: Dataset
) -> None:
    days = ["2026-10-10", "2026-10-11", "2026-10-12"]
    with dg.instance_for_test() as instance:
        for day in days:
            instance.report_runless_asset_event(dg.AssetMaterialization(
                pumps.key("drift_report"), partition=day,
                metadata={"drifted": True, "reference_version": "1"}))
        default_tick = defs.resolve_sensor_def("drift_retrain_sensor").evaluate_tick(
            dg.build_sensor_context(instance=instance, definitions=defs))
        assert not default_tick.run_requests
        assert default_tick.skip_message == "no drift_report materialized yet"
        tick = defs.resolve_sensor_def("pumps__drift_retrain_sensor").evaluate_tick(
            dg.build_sensor_context(instance=instance, definitions=defs))
        (request,) = tick.run_requests or []
        assert request.run_key == f"drift-retrain:1:{days[0]}"
        assert request.run_config["ops"]["pumps__training_set"]["config"] == {
            "n_partitions": 7, "end_partition": days[-1]}


def test_datasets_side_by_side_must_differ(
    settings: Settings, dataset: Dataset, pumps: Dataset
) -> None:
    twin = Dataset(name="twin", model_name="twin-ae", partitions_start="2026-10-01",
                   key_prefix="pumps")
    with pytest.raises(ValueError, match=r"share key_prefix \['pumps'\]"):
        build_definitions(settings, [dataset, pumps, twin])
    same_model = Dataset(name="fans", model_name=dataset.model_name,
                         partitions_start="2026-10-01", key_prefix="fans")
    with pytest.raises(ValueError, match="share model_name"):
        build_definitions(settings, [dataset, same_model])
    with pytest.raises(ValueError, match="letters, digits"):
        Dataset(name="pumps", model_name="pumps-ae", partitions_start="2026-10-01",
                key_prefix="pumps/a")
