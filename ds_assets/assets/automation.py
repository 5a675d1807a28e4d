"""The automation condition and asset settings shared by the per-day assets that follow the
champion (scoring, drift, alerts) of a dataset."""

from typing import Any

import dagster as dg

from ds_assets.dataset import Dataset


def daily_automation(ds: Dataset) -> dg.AutomationCondition:
    """Run when upstream data of the latest day lands, but never past a failed blocking check
    (great-expectations on raw_telemetry). A new champion does not trigger it: the promotion
    sensor re-scores recent days explicitly (ds_assets.sensors.promotion)."""
    return (
        dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets(ds.key("champion")))
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    )


def daily_champion_asset(ds: Dataset, name: str, group: str, *ins: str) -> dict[str, Any]:
    """``@dg.asset`` settings of a per-day asset computed with the champion: its key, the
    dataset's partitions, inputs, group, the automation condition and the registry resource."""
    return {
        "key": ds.key(name),
        "partitions_def": ds.partitions_def,
        "ins": ds.ins(*ins),
        "group_name": ds.scoped(group),
        "automation_condition": daily_automation(ds),
        "required_resource_keys": {ds.registry_key},
        "code_version": "1",
    }
