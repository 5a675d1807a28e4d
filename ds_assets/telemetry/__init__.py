"""Telemetry in: the synthetic generator, file sources, the column schema and the blocking
data checks. Plain Python (no Dagster): the assets in ``ds_assets.assets`` wire these up."""
