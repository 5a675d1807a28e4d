"""Jobs the automation launches, and the schedules: the daily pipeline and the weekly retrain."""


import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # define_asset_job's result (not exported)
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

from ds_assets.dataset import Dataset
from ds_assets.sensors.records import schedule_status, sensor_status

DAILY_ASSETS = ("raw_telemetry", "scored_telemetry", "drift_report", "alerts", "shadow_report")
RESCORE_ASSETS = ("scored_telemetry", "drift_report", "alerts")


def build_daily_pipeline_job(
    ds: Dataset, executor_def: dg.ExecutorDefinition | None = None
) -> "UnresolvedAssetJobDefinition":
    """ingest -> blocking checks -> score -> drift -> alerts, one day per run. The checks run in
    the same run, so a failed blocking check stops everything downstream of raw_telemetry."""
    return dg.define_asset_job(
        ds.scoped("daily_pipeline"),
        selection=dg.AssetSelection.assets(*ds.keys(*DAILY_ASSETS)),
        partitions_def=ds.partitions_def,
        description="One day: ingest, validate (blocking), score, drift report, alerts.",
        executor_def=executor_def,
    )


def build_rescore_job(
    ds: Dataset, executor_def: dg.ExecutorDefinition | None = None
) -> "UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        ds.scoped("rescore_telemetry"),
        selection=dg.AssetSelection.assets(*ds.keys(*RESCORE_ASSETS)),
        partitions_def=ds.partitions_def,
        description="Re-score one day with the current champion, and redo its drift report and "
        "alerts.",
        executor_def=executor_def,
    )


def days_before(scheduled: dt.datetime, days: int) -> dt.date:
    """The UTC day ``days`` days before a tick's (1: the day that just ended)."""
    return scheduled.astimezone(dt.UTC).date() - dt.timedelta(days=days)


def build_daily_schedule(
    ds: Dataset, daily_pipeline_job: "UnresolvedAssetJobDefinition"
) -> dg.ScheduleDefinition:
    """At 00:30 UTC, run the partition of the day that just ended (``daily_pipeline_job``, the
    dataset's); skip, saying why, when that day is outside the dataset's declared days (after
    a historical dataset's end its last day was requested again, a run that needs its source).
    Built when the definitions are (like the sensors), so DS_AUTOMATION is read then, not at
    import."""

    @dg.schedule(
        name=ds.scoped("daily_pipeline_schedule"),
        cron_schedule="30 0 * * *",
        job=daily_pipeline_job,
        execution_timezone="UTC",
        default_status=schedule_status(),
        description="Run the daily pipeline for the day that just ended.",
    )
    def daily_pipeline_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        day = days_before(context.scheduled_execution_time, 1).isoformat()
        if day < ds.partitions_start or (ds.partitions_end and day >= ds.partitions_end):
            return dg.SkipReason(
                f"{day} is outside dataset {ds.name!r}'s declared days [{ds.partitions_start}, "
                f"{ds.partitions_end or 'open'}): no day of it ended at this tick")
        return dg.RunRequest(run_key=day, partition_key=day)  # the run key it always had

    return daily_pipeline_schedule


def weekly_retrain_request(
    ds: Dataset, scheduled: dt.datetime, window_days: int = 7
) -> dg.RunRequest:
    """Train on the ``window_days`` days that ended before the tick, or on the dataset's
    declared window (plain, for tests)."""
    last = days_before(scheduled, 1).isoformat()
    return dg.RunRequest(
        run_key=f"weekly-retrain:{last}",
        run_config={"ops": {ds.op_name("training_set"): {"config": {
            "n_partitions": ds.retrain_window(window_days), "end_partition": last}}}},
        tags={"datasentinel/trigger": "schedule", "datasentinel/window_end": last},
    )


def closed_since(ds: Dataset, scheduled: dt.datetime, days: int = 7) -> str | None:
    """Why a tick has nothing new to train on: the dataset's declared partitions ended before
    the ``days`` that ended before it (a historical dataset, such as SKAB), else None. Without
    it every Monday retrained the same old days into a new model version."""
    if ds.partitions_end is None:
        return None
    first = days_before(scheduled, days)
    if first < dt.date.fromisoformat(ds.partitions_end):
        return None
    return (f"dataset {ds.name!r} declares its days up to {ds.partitions_end} (excluded): none of "
            f"the {days} days before this tick can be new, so there is nothing to retrain on")


def build_weekly_retrain_schedule(ds: Dataset) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=ds.scoped("weekly_retrain_schedule"),
        cron_schedule="0 2 * * 1",  # Monday 02:00 UTC, after Sunday's daily pipeline
        job_name=ds.scoped("train_detector"),
        execution_timezone="UTC",
        default_status=schedule_status(),
        description=f"Retrain on the last {ds.retrain_window(7)} days every Monday.",
    )
    def weekly_retrain_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        closed = closed_since(ds, context.scheduled_execution_time)
        if closed:
            return dg.SkipReason(closed)
        return weekly_retrain_request(ds, context.scheduled_execution_time)

    return weekly_retrain_schedule


def daily_automation_sensor(ds: Dataset) -> dg.AutomationConditionSensorDefinition:
    """Evaluates the daily assets' automation conditions (score, drift, alerts, shadow report
    once a day's raw data passed its checks). Declared here, not left to Dagster's implicit
    default sensor, so that DS_AUTOMATION switches it on with the schedules and sensors."""
    return dg.AutomationConditionSensorDefinition(
        ds.scoped("daily_monitoring_automation"),
        target=dg.AssetSelection.assets(*ds.keys(*RESCORE_ASSETS, "shadow_report")),
        default_status=sensor_status(),
        description="Score, drift-report and alert a day once its raw data passed its checks.",
    )
