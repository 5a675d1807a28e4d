"""Reading materialization records from the instance, for sensors."""


import datetime as dt
import os
from collections.abc import Iterable
from typing import Any

import dagster as dg

from ds_assets.training.shadow import Candidate


def newest_storage_id(instance: dg.DagsterInstance, asset: dg.AssetKey) -> int | None:
    """Storage id of the newest materialization of ``asset`` (None if never materialized)."""
    records = instance.fetch_materializations(asset, limit=1).records
    return records[0].storage_id if records else None


def latest_metadata(
    instance: dg.DagsterInstance, asset: dg.AssetKey, partition_keys: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Metadata values of the latest materialization of each partition that has one."""
    out: dict[str, dict[str, Any]] = {}
    for key in partition_keys:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[key]), limit=1
        ).records
        if records and records[0].asset_materialization is not None:
            meta = records[0].asset_materialization.metadata
            out[key] = {name: value.value for name, value in meta.items()}
    return out


def materialized_partitions(instance: dg.DagsterInstance, asset: dg.AssetKey) -> list[str]:
    return sorted(instance.get_materialized_partitions(asset))


def candidate_shadow_days(instance: dg.DagsterInstance, report: dg.AssetKey,
                          candidate: Candidate) -> list[str]:
    """A candidate's shadow days: the first ``candidate.days`` days after its training window
    whose shadow report compared it. A day reported before the candidate opened (its retrain
    finished after the next day's pipeline) does not count, and is not waited for: the sensor
    and the verdict pick the same days."""
    later = [d for d in materialized_partitions(instance, report) if d > candidate.after]
    mine = [d for d, meta in latest_metadata(instance, report, later).items()
            if str(meta.get("candidate_version", "")) == candidate.version]
    return sorted(mine)[: candidate.days]


def previous_days(last: str, n: int) -> list[str]:
    """``n`` consecutive daily partition keys ending at ``last``, oldest first."""
    end = dt.date.fromisoformat(last)
    return [(end - dt.timedelta(days=i)).isoformat() for i in range(n - 1, -1, -1)]


def automation_on() -> bool:
    """DS_AUTOMATION=on starts schedules and sensors as running (production), else stopped."""
    return os.environ.get("DS_AUTOMATION", "").strip().lower() in ("on", "1", "true")


def sensor_status() -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if automation_on() else dg.DefaultSensorStatus.STOPPED


def schedule_status() -> dg.DefaultScheduleStatus:
    return (dg.DefaultScheduleStatus.RUNNING if automation_on()
            else dg.DefaultScheduleStatus.STOPPED)
