"""Promotion sensor: a new champion re-scores the recent days (sensor-triggered backfill)."""


import json
import os
from typing import Any

import dagster as dg

from ds_assets.assets.telemetry import partitions_failing_checks
from ds_assets.dataset import Dataset
from ds_assets.sensors.backfill import partition_backfill
from ds_assets.sensors.records import latest_metadata, materialized_partitions, sensor_status

CHAMPION_ASSET = "champion"
SCORED_ASSET = "scored_telemetry"
RESCORE_JOB = "rescore_telemetry"


def build_promotion_sensor(
    ds: Dataset,
    n_partitions: int = 7,
    minimum_interval_seconds: int = 60,
    name: str = "champion_rescore_sensor",
) -> dg.SensorDefinition:
    """When the champion version changes, re-score (and re-alert, re-drift) the last N days.

    Only days whose latest scoring used another model, and whose raw data passes its blocking
    checks, are requested, one run each with run key
    ``rescore:v<version>:s<champion storage id>:<day>`` through :func:`partition_backfill`: the
    storage id makes each promotion's keys unique, so a rollback (v1 -> v2 -> v1) re-scores
    again instead of being dropped by the daemon as a duplicate of the first v1 keys. Assets,
    job and the sensor's name are the dataset's (``ds``).
    """
    if n_partitions < 1:
        raise ValueError(f"n_partitions={n_partitions} must be >= 1")
    champion_key, scored_key = ds.key(CHAMPION_ASSET), ds.key(SCORED_ASSET)
    rescore_job = ds.scoped(RESCORE_JOB)

    @dg.sensor(
        name=ds.scoped(name),
        job_name=rescore_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=sensor_status(),
        description=f"Re-score the last {n_partitions} days after a champion promotion.",
    )
    def promotion_sensor(
        context: dg.SensorEvaluationContext,
    ) -> dg.SensorResult | dg.SkipReason:
        state = json.loads(context.cursor) if context.cursor else {}
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=champion_key,
                                  after_storage_id=state.get("storage_id")),
            limit=100,  # newest first: every change since the last tick, not only the last
        ).records
        if not records or records[0].asset_materialization is None:
            return dg.SkipReason("no new champion materialization")

        def version_of(record: Any) -> str:
            meta = record.asset_materialization.metadata if record.asset_materialization else {}
            return str(meta["champion_version"].value) if "champion_version" in meta else ""

        version = version_of(records[0])
        cursor = json.dumps({"storage_id": records[0].storage_id, "version": version})
        # unchanged only when no other version served in between: v1 -> v2 -> v1 between two
        # ticks (a rollback while the sensor was stopped) left days scored by v2 behind
        if not version or {version_of(r) for r in records} == {state.get("version")}:
            return dg.SensorResult(skip_reason=f"champion still v{version or '-'}",
                                   cursor=cursor)
        recent = materialized_partitions(context.instance, scored_key)[-n_partitions:]
        scored_by = latest_metadata(context.instance, scored_key, recent)
        stale = [k for k in recent if str(scored_by.get(k, {}).get("model_version")) != version]
        # a day re-ingested since it was scored whose data then failed validation would only
        # fail in scored_telemetry: leave it out (its old scores stay, marked by their version)
        failing = partitions_failing_checks(context.instance, stale, ds)
        if failing:
            context.log.warning(
                f"champion v{version}: not re-scoring {sorted(failing)}, their raw data failed "
                f"blocking checks {failing}; this sensor does not come back to them: fix the "
                "source, then run daily_pipeline for each (ingest, checks, score with the "
                "champion, drift, alerts)")
            stale = [k for k in stale if k not in failing]
        if not stale:
            left_out = f" that passed its checks (left out: {sorted(failing)})" if failing else ""
            return dg.SensorResult(
                skip_reason=f"champion v{version}: no recent day scored by another model"
                            + left_out,
                cursor=cursor)
        context.log.info(f"champion v{version}: re-scoring {stale}")
        requests = partition_backfill(
            rescore_job, stale, f"rescore:v{version}:s{records[0].storage_id}",
            tags={"datasentinel/trigger": "promotion", "datasentinel/champion": version},
        )
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return promotion_sensor


def promotion_sensor_from_env(ds: Dataset) -> dg.SensorDefinition:
    return build_promotion_sensor(ds, n_partitions=int(os.environ.get("DS_RESCORE_DAYS", "7")))
