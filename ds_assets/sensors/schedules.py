"""Jobs the automation launches, and the schedules: the daily pipeline and the weekly retrain."""


import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # what scheduling an unresolved asset job returns (not exported by dagster)
    from dagster._core.definitions.partitions.partitioned_schedule import (
        UnresolvedPartitionedAssetScheduleDefinition,
    )

from ds_assets.assets.partitions import daily_partitions
from ds_assets.sensors.records import schedule_status, sensor_status

DAILY_ASSETS = ("raw_telemetry", "scored_telemetry", "drift_report", "alerts")
RESCORE_ASSETS = ("scored_telemetry", "drift_report", "alerts")

# ingest -> blocking checks -> score -> drift -> alerts, one day per run. The checks run in the
# same run, so a failed blocking check stops everything downstream of raw_telemetry.
daily_pipeline_job = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.assets(*DAILY_ASSETS),
    partitions_def=daily_partitions,
    description="One day: ingest, validate (blocking), score, drift report, alerts.",
)
rescore_job = dg.define_asset_job(
    "rescore_telemetry",
    selection=dg.AssetSelection.assets(*RESCORE_ASSETS),
    partitions_def=daily_partitions,
    description="Re-score one day with the current champion, and redo its drift report and alerts.",
)


def build_daily_schedule() -> (
    "UnresolvedPartitionedAssetScheduleDefinition | dg.ScheduleDefinition"
):
    """At 00:30 UTC, run the partition of the day that just ended. Built when the definitions
    are (like the sensors), so DS_AUTOMATION is read then, not at import."""
    return dg.build_schedule_from_partitioned_job(
        daily_pipeline_job, hour_of_day=0, minute_of_hour=30, name="daily_pipeline_schedule",
        default_status=schedule_status(),
    )


def weekly_retrain_request(scheduled: dt.datetime, window_days: int = 7) -> dg.RunRequest:
    """Train on the ``window_days`` days that ended before the tick (plain, for tests)."""
    last = (scheduled.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    return dg.RunRequest(
        run_key=f"weekly-retrain:{last}",
        run_config={"ops": {"training_set": {"config": {
            "n_partitions": window_days, "end_partition": last}}}},
        tags={"datasentinel/trigger": "schedule", "datasentinel/window_end": last},
    )


def build_weekly_retrain_schedule() -> dg.ScheduleDefinition:
    @dg.schedule(
        name="weekly_retrain_schedule",
        cron_schedule="0 2 * * 1",  # Monday 02:00 UTC, after Sunday's daily pipeline
        job_name="train_detector",
        execution_timezone="UTC",
        default_status=schedule_status(),
        description="Retrain on the last 7 days every Monday.",
    )
    def weekly_retrain_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return weekly_retrain_request(context.scheduled_execution_time)

    return weekly_retrain_schedule


def daily_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates the daily assets' automation conditions (score, drift, alerts once a day's
    raw data passed its checks). Declared here, not left to Dagster's implicit default sensor,
    so that DS_AUTOMATION switches it on with the schedules and sensors."""
    return dg.AutomationConditionSensorDefinition(
        "daily_monitoring_automation",
        target=dg.AssetSelection.assets(*RESCORE_ASSETS),
        default_status=sensor_status(),
        description="Score, drift-report and alert a day once its raw data passed its checks.",
    )
