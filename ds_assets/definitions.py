"""The DataSentinel Dagster code location."""

from __future__ import annotations

from typing import Any

import dagster as dg

from ds_assets.assets.alerts import alerts
from ds_assets.assets.detector import (
    detector,
    model_bundle,
    onnx_model,
    onnx_parity,
    tensorrt_engine,
    training_set,
)
from ds_assets.assets.drift import drift_report
from ds_assets.assets.evaluation import champion, evaluation_report
from ds_assets.assets.partitions import daily_partitions
from ds_assets.assets.robustness import robustness_report
from ds_assets.assets.scoring import scored_telemetry
from ds_assets.assets.telemetry import raw_telemetry, raw_telemetry_expectations
from ds_assets.resources.io_manager import LocalArtifactIOManager
from ds_assets.resources.mlflow import mlflow_tracking
from ds_assets.resources.registry import ModelRegistry
from ds_assets.sensors.drift import drift_sensor_from_env
from ds_assets.sensors.promotion import promotion_sensor_from_env
from ds_assets.sensors.schedules import (
    build_daily_schedule,
    build_weekly_retrain_schedule,
    daily_automation_sensor,
    daily_pipeline_job,
    rescore_job,
)
from ds_assets.settings import Settings

ASSETS = [
    raw_telemetry,
    training_set,
    detector,
    onnx_model,
    model_bundle,
    tensorrt_engine,
    evaluation_report,
    champion,
    scored_telemetry,
    drift_report,
    alerts,
    robustness_report,
]
CHECKS = [raw_telemetry_expectations, onnx_parity]

ingest_job = dg.define_asset_job(
    "ingest_telemetry",
    selection=dg.AssetSelection.assets(raw_telemetry),
    partitions_def=daily_partitions,
    description="Generate or read one day of telemetry and run its blocking checks.",
)
training_job = dg.define_asset_job(
    "train_detector",
    selection=dg.AssetSelection.assets(training_set).downstream()
    - dg.AssetSelection.assets(scored_telemetry).downstream(),
    description="Training set -> detector -> ONNX -> bundle (+ TensorRT on a GPU) -> evaluation "
    "-> champion.",
)
scoring_job = dg.define_asset_job(
    "score_telemetry",
    selection=dg.AssetSelection.assets(scored_telemetry),
    partitions_def=daily_partitions,
    description="Score one day of telemetry with the serving champion.",
)


def build_resources(settings: Settings) -> dict[str, Any]:
    return {
        "io_manager": LocalArtifactIOManager(base_dir=str(settings.data_dir / "assets")),
        "registry": ModelRegistry(
            models_dir=str(settings.models_dir), model_name=settings.model_name,
            mlflow_tracking_uri=settings.mlflow_tracking_uri,
        ),
        "mlflow": mlflow_tracking.configured(
            {
                "experiment_name": settings.mlflow_experiment,
                "mlflow_tracking_uri": settings.mlflow_tracking_uri,
                "artifact_location": str(settings.mlflow_artifacts),
            }
        ),
    }


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=[ingest_job, training_job, scoring_job, daily_pipeline_job, rescore_job],
        schedules=[build_daily_schedule(), build_weekly_retrain_schedule()],
        sensors=[drift_sensor_from_env(), promotion_sensor_from_env(), daily_automation_sensor()],
        resources=build_resources(settings or Settings.from_env()),
    )


defs = build_definitions()
