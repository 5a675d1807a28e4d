"""The automation condition shared by the per-day monitoring assets."""


import dagster as dg

# Run when upstream data of the latest day lands, but never past a failed blocking check
# (great-expectations on raw_telemetry). A new champion does not trigger it: the promotion
# sensor re-scores recent days explicitly (ds_assets.sensors.promotion).
DAILY_AUTOMATION = (
    dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets("champion"))
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
)
