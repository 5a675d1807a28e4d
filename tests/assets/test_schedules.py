"""Schedules produce the right partitions/windows; automatic runs stop at failed blocking checks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from ds_assets.dataset import Dataset
from ds_assets.definitions import build_definitions
from ds_assets.sensors.schedules import DAILY_ASSETS, weekly_retrain_request
from ds_assets.settings import Settings
from tests.conftest import TINY_SOURCE


def _at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def test_daily_schedule_runs_the_day_that_just_ended(settings: Settings) -> None:
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("daily_pipeline_schedule")
    assert schedule.cron_schedule == "30 0 * * *"
    assert schedule.job_name == "daily_pipeline"
    for now, expected in ((_at(2026, 11, 10, 0, 30), "2026-11-09"),
                          (_at(2026, 12, 1, 0, 30), "2026-11-30"),
                          (_at(2027, 1, 1, 0, 30), "2026-12-31")):
        with dg.instance_for_test() as instance:
            result = schedule.evaluate_tick(
                dg.build_schedule_context(instance=instance, scheduled_execution_time=now,
                                          repository_def=defs.get_repository_def())
            )
        assert [r.partition_key for r in result.run_requests or []] == [expected]


def test_the_daily_schedule_of_a_dataset_whose_days_have_ended_skips(settings: Settings) -> None:
    """After a historical dataset's declared end, the schedule requested its last day again (a
    run that needs the dataset's source); now it says why it does not."""
    from ds_assets.definitions import build_dataset_definitions

    closed = Dataset(name="old", model_name="old-ae", partitions_start="2020-03-01",
                     partitions_end="2020-03-11")
    defs = build_dataset_definitions(closed, settings)
    schedule = defs.resolve_schedule_def(closed.scoped("daily_pipeline_schedule"))
    with dg.instance_for_test() as instance:
        def tick(at: dt.datetime) -> Any:
            return schedule.evaluate_tick(dg.build_schedule_context(
                instance=instance, scheduled_execution_time=at,
                repository_def=defs.get_repository_def()))

        (last,) = tick(_at(2020, 3, 11, 0, 30)).run_requests or []
        assert last.partition_key == "2020-03-10"
        after = tick(_at(2026, 12, 9, 0, 30))
        assert not after.run_requests
        assert "2026-12-08 is outside dataset 'old'" in (after.skip_message or "")
        assert not tick(_at(2020, 3, 1, 0, 30)).run_requests  # before its first day


def test_daily_job_runs_the_whole_day_chain(settings: Settings) -> None:
    job = build_definitions(settings).resolve_job_def("daily_pipeline")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert keys == set(DAILY_ASSETS)
    checks = {k.name for k in job.asset_layer.asset_graph.asset_check_keys}
    assert "label_domain" in checks  # the blocking checks run inside the same run


def test_weekly_retrain_trains_on_the_seven_days_before_monday(
    settings: Settings, dataset: Dataset
) -> None:
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("weekly_retrain_schedule")
    assert schedule.cron_schedule == "0 2 * * 1"
    monday = _at(2026, 11, 9, 2, 0)
    with dg.instance_for_test() as instance:
        result = schedule.evaluate_tick(
            dg.build_schedule_context(instance=instance, scheduled_execution_time=monday)
        )
    (request,) = result.run_requests or []
    assert request.run_config["ops"]["training_set"]["config"] == {
        "n_partitions": 7, "end_partition": "2026-11-08"}
    assert request.run_key == "weekly-retrain:2026-11-08"
    assert weekly_retrain_request(dataset, monday, 3).run_config["ops"]["training_set"]["config"][
        "n_partitions"] == 3


def _requested(
    defs: dg.Definitions, instance: dg.DagsterInstance, day: str, cursor: object = None
) -> tuple[set[str], object]:
    """One evaluation of the automation conditions, as the default automation sensor does."""
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=cursor  # type: ignore[arg-type]
    )
    keys = {
        key
        for key in ("scored_telemetry", "drift_report", "alerts")
        if day in result.get_requested_partitions(dg.AssetKey(key))
    }
    return keys, result.cursor


def test_automatic_scoring_waits_for_passing_blocking_checks(
    settings: Settings, tmp_path: Path
) -> None:
    """Eager automation picks up a newly ingested day only when its blocking checks passed."""
    defs = build_definitions(settings)
    day = Dataset.default(settings).partitions_def.get_last_partition_key()
    assert day is not None
    broken = tmp_path / "broken.csv"
    frame = pd.DataFrame({f"f{i}": [float(i + r % 5) for r in range(40)] for i in range(1, 9)})
    frame["label"] = [0] * 39 + [3]  # a label outside {0, 1}: label_domain fails
    frame.to_csv(broken, index=False)
    for source, expected in (({"source": "labeled_csv", "path": str(broken)}, set()),
                             (TINY_SOURCE, {"scored_telemetry", "drift_report", "alerts"})):
        with dg.instance_for_test() as instance:
            before, cursor = _requested(defs, instance, day)
            assert before == set()  # nothing ingested yet
            result = defs.resolve_job_def("ingest_telemetry").execute_in_process(
                instance=instance, partition_key=day, raise_on_error=False,
                run_config={"ops": {"raw_telemetry": {"config": source}}},
            )
            assert result.asset_materializations_for_node("raw_telemetry")
            assert _requested(defs, instance, day, cursor)[0] == expected, source


def test_daily_pipeline_stops_at_a_failed_blocking_check(
    settings: Settings, tmp_path: Path
) -> None:
    """The scheduled run's own blocking checks: bad raw data is kept for inspection, and
    nothing downstream (scores, drift report, alerts) runs on it."""
    defs = build_definitions(settings)
    broken = tmp_path / "broken.csv"
    frame = pd.DataFrame({f"f{i}": [float(i + r % 5) for r in range(40)] for i in range(1, 9)})
    frame["label"] = [0] * 39 + [3]  # a label outside {0, 1}: label_domain fails
    frame.to_csv(broken, index=False)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("daily_pipeline").execute_in_process(
            instance=instance, partition_key="2026-11-03", raise_on_error=False,
            run_config={"ops": {"raw_telemetry": {"config": {
                "source": "labeled_csv", "path": str(broken)}}}},
        )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["label_domain"] is False and checks["schema_and_dtypes"] is True
    assert result.asset_materializations_for_node("raw_telemetry")
    for asset in ("scored_telemetry", "drift_report", "alerts"):
        assert not result.asset_materializations_for_node(asset), asset
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started.isdisjoint({"scored_telemetry", "drift_report", "alerts"}), started
    assert not (settings.data_dir / "assets" / "scored_telemetry").exists()


def test_the_weekly_retrain_of_a_dataset_whose_days_have_ended_skips() -> None:
    """A historical dataset (SKAB's days end in 2020) retrained the same days into a new model
    version every Monday; once a week has passed since its last day, the tick says why not."""
    from ds_assets.sensors.schedules import build_weekly_retrain_schedule

    closed = Dataset(name="old", model_name="old-ae", partitions_start="2020-03-01",
                     partitions_end="2020-03-11")
    schedule = build_weekly_retrain_schedule(closed)
    with dg.instance_for_test() as instance:
        def tick(at: dt.datetime) -> Any:
            return schedule.evaluate_tick(
                dg.build_schedule_context(instance=instance, scheduled_execution_time=at))

        late = tick(_at(2026, 12, 14, 2, 0))
        assert not late.run_requests
        assert "declares its days up to 2020-03-11" in (late.skip_message or "")
        # the Monday after its last days still trains on them
        (request,) = tick(_at(2020, 3, 16, 2, 0)).run_requests or []
        ops = request.run_config["ops"]
        assert ops[closed.op_name("training_set")]["config"]["end_partition"] == "2020-03-15"
