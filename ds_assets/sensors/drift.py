"""Drift sensor: persistent drift in the daily drift reports requests one retrain per episode."""


import json
import os
from collections.abc import Sequence
from typing import Any

import dagster as dg

from ds_assets.dataset import Dataset
from ds_assets.monitoring.episodes import DriftEpisode, consecutive_drift, plan_retrain
from ds_assets.sensors.records import (
    latest_metadata,
    materialized_partitions,
    newest_storage_id,
    previous_days,
    sensor_status,
)

DRIFT_ASSET = "drift_report"
TRAINING_JOB = "train_detector"


def drift_statuses(
    instance: dg.DagsterInstance, drift_key: dg.AssetKey, partitions: Sequence[str],
    look_back: int,
) -> tuple[list[str], dict[str, bool], str]:
    """Drift status of the days up to the newest drift report, reaching back past the start of
    its drifted run (to a non-drifted or missing day, or the first report), not just
    ``look_back`` days, so a long episode keeps its first day (and its run key).

    A day counts as drifted only if judged against the same reference version as the newest.
    """
    last, first_report = partitions[-1], partitions[0]
    n = look_back
    meta: dict[str, dict[str, Any]] = {}
    while True:
        keys = previous_days(last, n)
        meta.update(latest_metadata(instance, drift_key, [d for d in keys if d not in meta]))
        version = str(meta.get(last, {}).get("reference_version", ""))
        statuses = {
            key: bool(m.get("drifted")) and str(m.get("reference_version", "")) == version
            for key, m in meta.items()
        }
        run = consecutive_drift(statuses, keys)
        if len(run) < len(keys) or keys[0] <= first_report:
            return keys, statuses, version
        n *= 2


def requested_episode(
    instance: dg.DagsterInstance,
    training_job: str,
    reference_version: str,
    run: Sequence[str],
    limit: int = 100,
) -> str | None:
    """The episode of an earlier drift-triggered retrain run (its tags) that the drifted days
    ``run`` overlap, against the same reference model: the same episode, even when the cursor
    that remembers it was lost and the run has since grown backwards (re-scored days), which
    gives it another first day and so another run key."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name=training_job, tags={"datasentinel/trigger": "drift"}),
        limit=limit,
    )
    for record in records:
        tags = record.dagster_run.tags
        episode = tags.get("datasentinel/drift_episode", "")
        days = [d for d in tags.get("datasentinel/drifted_partitions", "").split(",") if d]
        version = episode.rpartition(":")[0]
        if version == reference_version and days and days[0] <= run[-1] and days[-1] >= run[0]:
            return episode
    return None


def build_drift_sensor(
    ds: Dataset,
    k: int = 3,
    training_window: int = 7,
    minimum_interval_seconds: int = 300,
    name: str = "drift_retrain_sensor",
) -> dg.SensorDefinition:
    """Retrain when ``k`` consecutive daily drift reports (same reference model) say drifted.

    The cursor keeps the newest drift_report storage id seen (nothing new -> no work) and the
    episode already requested (reference version and its drifted days): a drifted run that
    overlaps it is the same episode however long it lasts or if re-scored days grow it
    backwards. The status scan reaches back to the run's first day, and the run key is
    ``drift-retrain:<version>:<first day>``, so the daemon drops a duplicate even if the cursor
    is lost; and a run already launched for an overlapping episode (its tags) stops a second
    request when the cursor is lost and the run has grown backwards since. The retrain window
    ends at the last drifted day and spans ``training_window`` days (the dataset's declared
    ``training.n_partitions`` when it has one), so it includes the drifted data. Assets, job
    and the sensor's name are the dataset's (``ds``).
    """
    training_window = ds.retrain_window(training_window)  # a declared window wins
    if k < 1 or training_window < 1:
        raise ValueError(f"k={k} and training_window={training_window} must both be >= 1")
    drift_key, training_job = ds.key(DRIFT_ASSET), ds.scoped(TRAINING_JOB)

    @dg.sensor(
        name=ds.scoped(name),
        job_name=training_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=sensor_status(),
        description=f"Retrain after {k} consecutive drifted days (one request per episode).",
    )
    def drift_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        state = json.loads(context.cursor) if context.cursor else {}
        newest = newest_storage_id(context.instance, drift_key)
        if newest is None:
            return dg.SkipReason("no drift_report materialized yet")
        if newest == state.get("storage_id"):
            return dg.SkipReason("no new drift reports since the last tick")
        partitions = materialized_partitions(context.instance, drift_key)
        keys, statuses, version = drift_statuses(
            context.instance, drift_key, partitions, max(k, training_window) + 1)
        plan = plan_retrain(statuses, keys, version, k,
                            DriftEpisode.from_cursor(state.get("episode")))
        cursor = json.dumps({"storage_id": newest,
                             "episode": plan.requested.to_dict() if plan.requested else None})
        if plan.request:
            earlier = requested_episode(context.instance, training_job, version,
                                        plan.drifted_run)
            if earlier is not None:
                # remembered under the launched run's episode key, its span covering this run
                remembered = DriftEpisode(version, earlier.rpartition(":")[2],
                                          plan.drifted_run[-1])
                cursor = json.dumps({"storage_id": newest, "episode": remembered.to_dict()})
                reason = (f"retrain already requested for episode {earlier} (a run of "
                          f"{training_job} carries it; the sensor's cursor did not)")
                context.log.info(reason)
                return dg.SensorResult(skip_reason=reason, cursor=cursor)
        context.log.info(plan.reason)
        if not plan.request:
            return dg.SensorResult(skip_reason=plan.reason, cursor=cursor)
        request = dg.RunRequest(
            run_key=f"drift-retrain:{plan.episode}",
            run_config={"ops": {ds.op_name("training_set"): {"config": {
                "n_partitions": training_window, "end_partition": plan.drifted_run[-1]}}}},
            tags={
                "datasentinel/trigger": "drift",
                "datasentinel/drift_episode": plan.episode or "",
                "datasentinel/drifted_partitions": ",".join(plan.drifted_run),
            },
        )
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    return drift_sensor


def drift_sensor_from_env(ds: Dataset) -> dg.SensorDefinition:
    """k and the training window from DS_DRIFT_K / DS_RETRAIN_WINDOW_DAYS."""
    return build_drift_sensor(
        ds,
        k=int(os.environ.get("DS_DRIFT_K", "3")),
        training_window=int(os.environ.get("DS_RETRAIN_WINDOW_DAYS", "7")),
    )
