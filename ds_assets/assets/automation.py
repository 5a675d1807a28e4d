"""The automation condition shared by the per-day monitoring assets of a dataset."""


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
