"""Sensors and schedules: Dagster wiring around the decisions in ds_assets.monitoring.episodes."""
