"""Drift sensor: persistent drift in the daily drift reports requests one retrain per episode."""


import json
import os

import dagster as dg

from ds_assets.drift import plan_retrain
from ds_assets.sensors.records import (
    latest_metadata,
    materialized_partitions,
    newest_storage_id,
    previous_days,
    sensor_status,
)

DRIFT_ASSET = "drift_report"
TRAINING_JOB = "train_detector"


def build_drift_sensor(
    k: int = 3,
    training_window: int = 7,
    minimum_interval_seconds: int = 300,
    name: str = "drift_retrain_sensor",
) -> dg.SensorDefinition:
    """Retrain when ``k`` consecutive daily drift reports (same reference model) say drifted.

    The cursor keeps the newest drift_report storage id seen (nothing new -> no work) and the
    episode already requested; the run key is the episode too, so the daemon drops a duplicate
    even if the cursor is lost. The retrain window ends at the last drifted day and spans
    ``training_window`` days, so it includes the drifted data.
    """
    if k < 1 or training_window < 1:
        raise ValueError(f"k={k} and training_window={training_window} must both be >= 1")

    @dg.sensor(
        name=name,
        job_name=TRAINING_JOB,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=sensor_status(),
        description=f"Retrain after {k} consecutive drifted days (one request per episode).",
    )
    def drift_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        state = json.loads(context.cursor) if context.cursor else {}
        newest = newest_storage_id(context.instance, DRIFT_ASSET)
        if newest is None:
            return dg.SkipReason("no drift_report materialized yet")
        if newest == state.get("storage_id"):
            return dg.SkipReason("no new drift reports since the last tick")
        partitions = materialized_partitions(context.instance, DRIFT_ASSET)
        keys = previous_days(partitions[-1], max(k, training_window) + 1)
        meta = latest_metadata(context.instance, DRIFT_ASSET, keys)
        version = str(meta[keys[-1]].get("reference_version", ""))
        statuses = {
            key: bool(m.get("drifted")) and str(m.get("reference_version", "")) == version
            for key, m in meta.items()
        }
        plan = plan_retrain(statuses, keys, version, k, state.get("episode"))
        cursor = json.dumps({"storage_id": newest,
                             "episode": plan.episode if plan.request else state.get("episode")})
        context.log.info(plan.reason)
        if not plan.request:
            return dg.SensorResult(skip_reason=plan.reason, cursor=cursor)
        request = dg.RunRequest(
            run_key=f"drift-retrain:{plan.episode}",
            run_config={"ops": {"training_set": {"config": {
                "n_partitions": training_window, "end_partition": plan.drifted_run[-1]}}}},
            tags={
                "datasentinel/trigger": "drift",
                "datasentinel/drift_episode": plan.episode or "",
                "datasentinel/drifted_partitions": ",".join(plan.drifted_run),
            },
        )
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    return drift_sensor


def drift_sensor_from_env() -> dg.SensorDefinition:
    """k and the training window from DS_DRIFT_K / DS_RETRAIN_WINDOW_DAYS."""
    return build_drift_sensor(
        k=int(os.environ.get("DS_DRIFT_K", "3")),
        training_window=int(os.environ.get("DS_RETRAIN_WINDOW_DAYS", "7")),
    )
