"""The DataSentinel Dagster code location: one graph slice per dataset, merged.

``build_dataset_definitions`` builds one dataset's assets, checks, jobs, schedules, sensors and
``registry`` resource (named through ``ds_assets.dataset.Dataset``); ``build_definitions``
merges them for all datasets, sharing the IO manager and MLflow resources. ``defs`` holds the
default dataset only, with today's names.
"""

# ruff: noqa: E402  (the notices are quieted before the imports that raise them)
from __future__ import annotations

from ds_assets.notices import quiet_notices

quiet_notices()

import multiprocessing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from ds_assets.assets.alerts import build_alerts_asset
from ds_assets.assets.detector import (
    build_detector_asset,
    build_model_bundle_asset,
    build_onnx_model_asset,
    build_onnx_parity_check,
    build_tensorrt_engine_asset,
    build_training_set_asset,
)
from ds_assets.assets.drift import build_drift_report_asset
from ds_assets.assets.evaluation import build_champion_asset, build_evaluation_report_asset
from ds_assets.assets.robustness import build_robustness_report_asset
from ds_assets.assets.rollback import build_rollback_job
from ds_assets.assets.scoring import build_scored_telemetry_asset
from ds_assets.assets.shadow import (
    build_shadow_report_asset,
    build_shadow_verdict_asset,
    build_shadow_verdict_job,
)
from ds_assets.assets.telemetry import build_raw_telemetry_asset, build_raw_telemetry_checks
from ds_assets.dataset import Dataset
from ds_assets.resources.io_manager import LocalArtifactIOManager
from ds_assets.resources.mlflow import mlflow_tracking
from ds_assets.resources.pipeline_metrics import PIPELINE_METRICS_KEY, PipelineMetrics
from ds_assets.resources.registry import ModelRegistry
from ds_assets.sensors.drift import drift_sensor_from_env
from ds_assets.sensors.promotion import promotion_sensor_from_env
from ds_assets.sensors.schedules import (
    build_daily_pipeline_job,
    build_daily_schedule,
    build_rescore_job,
    build_weekly_retrain_schedule,
    daily_automation_sensor,
)
from ds_assets.sensors.shadow import build_shadow_sensor
from ds_assets.settings import Settings

if TYPE_CHECKING:  # what define_asset_job returns (not exported by dagster)
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )


def build_assets(ds: Dataset) -> list[dg.AssetsDefinition]:
    """The dataset's assets, in graph order."""
    return [
        build_raw_telemetry_asset(ds),
        build_training_set_asset(ds),
        build_detector_asset(ds),
        build_onnx_model_asset(ds),
        build_model_bundle_asset(ds),
        build_tensorrt_engine_asset(ds),
        build_evaluation_report_asset(ds),
        build_champion_asset(ds),
        build_scored_telemetry_asset(ds),
        build_drift_report_asset(ds),
        build_alerts_asset(ds),
        build_robustness_report_asset(ds),
        build_shadow_report_asset(ds),
        build_shadow_verdict_asset(ds),
    ]


def build_checks(ds: Dataset) -> list[dg.AssetChecksDefinition]:
    return [build_raw_telemetry_checks(ds), build_onnx_parity_check(ds)]


def build_jobs(
    ds: Dataset, gpu_run_tags: dict[str, str] | None = None
) -> list[UnresolvedAssetJobDefinition]:
    """The dataset's ingest, training and scoring jobs (the daily pipeline and re-score jobs,
    which the automation launches, are built in ``ds_assets.sensors.schedules``).
    ``gpu_run_tags`` go on every training run (schedule, drift sensor, UI) so that, on
    Kubernetes, its pod lands on a GPU node (``Settings.gpu_run_tags``)."""
    ingest_job = dg.define_asset_job(
        ds.scoped("ingest_telemetry"),
        selection=dg.AssetSelection.assets(ds.key("raw_telemetry")),
        partitions_def=ds.partitions_def,
        description="Generate or read one day of telemetry and run its blocking checks.",
        executor_def=INGEST_EXECUTOR,
    )
    training_job = dg.define_asset_job(
        ds.scoped("train_detector"),
        selection=dg.AssetSelection.assets(ds.key("training_set")).downstream()
        - dg.AssetSelection.assets(ds.key("scored_telemetry")).downstream(),
        description="Training set -> detector -> ONNX -> bundle (+ TensorRT on a GPU) -> "
        "evaluation -> champion.",
        run_tags=gpu_run_tags or None,
    )
    scoring_job = dg.define_asset_job(
        ds.scoped("score_telemetry"),
        selection=dg.AssetSelection.assets(ds.key("scored_telemetry")),
        partitions_def=ds.partitions_def,
        description="Score one day of telemetry with the serving champion.",
        executor_def=SCORING_EXECUTOR,
    )
    return [ingest_job, training_job, scoring_job]


def build_shared_resources(settings: Settings) -> dict[str, Any]:
    """Resources every dataset uses alike: files live under their (prefixed) asset keys; the
    pipeline metrics carry the dataset as a label (pushed only with ``DS_PUSHGATEWAY_URL``)."""
    return {
        "io_manager": LocalArtifactIOManager(base_dir=str(settings.data_dir / "assets")),
        "mlflow": mlflow_tracking.configured(
            {
                "experiment_name": settings.mlflow_experiment,
                "mlflow_tracking_uri": settings.mlflow_tracking_uri,
                "artifact_location": str(settings.mlflow_artifacts),
            }
        ),
        PIPELINE_METRICS_KEY: PipelineMetrics(pushgateway_url=settings.pushgateway_url),
    }


def build_registry(settings: Settings, ds: Dataset) -> ModelRegistry:
    return ModelRegistry(
        models_dir=str(settings.models_dir), model_name=ds.model_name,
        mlflow_tracking_uri=settings.mlflow_tracking_uri,
    )


def build_resources(
    settings: Settings, datasets: Sequence[Dataset] | None = None
) -> dict[str, Any]:
    """Shared resources plus each dataset's registry (default: the default dataset's)."""
    chosen = list(datasets) if datasets is not None else [Dataset.default(settings)]
    return {**build_shared_resources(settings),
            **{ds.registry_key: build_registry(settings, ds) for ds in chosen}}


def build_dataset_definitions(
    ds: Dataset, settings: Settings, shared_resources: dict[str, Any] | None = None
) -> dg.Definitions:
    """One dataset's slice: assets, checks, jobs, schedules, sensors and its registry.
    ``shared_resources`` (the same objects for every slice) lets slices merge."""
    daily_pipeline = build_daily_pipeline_job(ds, SCORING_EXECUTOR)
    shared = build_shared_resources(settings) if shared_resources is None else shared_resources
    return dg.Definitions(
        assets=build_assets(ds),
        asset_checks=build_checks(ds),
        jobs=[*build_jobs(ds, settings.gpu_run_tags()), daily_pipeline,
              build_rescore_job(ds, SCORING_EXECUTOR),
              build_rollback_job(ds), build_shadow_verdict_job(ds)],
        schedules=[build_daily_schedule(ds, daily_pipeline), build_weekly_retrain_schedule(ds)],
        sensors=[drift_sensor_from_env(ds), promotion_sensor_from_env(ds),
                 daily_automation_sensor(ds), build_shadow_sensor(ds)],
        resources={**shared, ds.registry_key: build_registry(settings, ds)},
    )


def check_distinct(datasets: Sequence[Dataset]) -> None:
    """Datasets side by side must differ in name, key prefix and model name."""
    if not datasets:
        raise ValueError("no datasets to build definitions for")
    for field in ("name", "key_prefix", "model_name"):
        values = [getattr(ds, field) for ds in datasets]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"datasets share {field} {repeated}; each needs its own")


def build_definitions(
    settings: Settings | None = None, datasets: Sequence[Dataset] | None = None
) -> dg.Definitions:
    """The code location: every dataset's slice (default: the default dataset alone)."""
    settings = settings or Settings.from_env()
    chosen = list(datasets) if datasets is not None else [Dataset.default(settings)]
    check_distinct(chosen)
    shared = build_shared_resources(settings)
    return dg.Definitions.merge(
        *(build_dataset_definitions(ds, settings, shared) for ds in chosen)
    )


# Runs launched by the UI, the daemon or a run pod execute each step in its own process. With
# Python's default ``spawn`` every step process imported this code location again (torch, MLflow,
# onnxruntime, Great Expectations: ~5 s a step on 2 cores, 45 of a 70-s training run); a
# ``forkserver`` that imports it once per run forks every step from there. Dagster preloads the
# job's module only when the code pointer names one, which a ``-m ... -a defs`` location does
# not, so the module is named. Jobs run in process (``make demo``, ``ds-dataset``, the tests)
# do not use it. The rest of the multiprocess executor's run config (``max_concurrent``,
# ``tag_concurrency_limits``, ``retries``, another ``start_method``) still applies.
#
# The code location imports none of the libraries its steps compute with (4 s instead of 13 s on
# 2 cores, paid by every run worker, code server and CLI command), so the forkserver imports them
# beside it, once per run: without them each step imported its own (Great Expectations alone
# takes 6 s, in every check step). A run of the ingest job (a backfill of it loads history one
# run per day) checks with Great Expectations and needs none of the others (7 s of preloading
# here). Being the job's own, its executor stays when the code location's default changes;
# asset backfills of ``raw_telemetry`` run as Dagster's asset job, with the default.
STEP_LIBRARIES = (
    "torch",
    "ds_assets.training.networks",
    "dagster_mlflow.resources",
    "great_expectations",
    "scipy.stats",
    "sklearn.ensemble",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
)
INGEST_LIBRARIES = ("great_expectations",)
# a day's scoring, drift report and alerts (the daily pipeline, the promotion sensor's re-score
# fan-out): no torch, MLflow or scikit-learn (those train, export and evaluate models)
SCORING_LIBRARIES = ("great_expectations", "onnxruntime", "scipy.stats", "matplotlib.figure",
                     "matplotlib.backends.backend_agg")


def _forkserver_by_default(config: dict[str, Any],
                           libraries: Sequence[str] = STEP_LIBRARIES) -> dict[str, Any]:
    if "forkserver" not in multiprocessing.get_all_start_methods():  # Windows: spawn only
        return config
    preload = {"forkserver": {"preload_modules": [__name__, *libraries]}}
    return {**config, "start_method": config.get("start_method") or preload}


def step_executor(name: str, libraries: Sequence[str]) -> dg.ExecutorDefinition:
    """The multiprocess executor forking steps from a server that imported the code location
    and ``libraries`` (its run config otherwise as Dagster's)."""
    return dg.multiprocess_executor.configured(
        lambda config: _forkserver_by_default(config, libraries),
        name=name,
        config_schema=dg.multiprocess_executor.config_schema.as_field(),
    )


STEP_EXECUTOR = step_executor("multiprocess_forkserver", STEP_LIBRARIES)
INGEST_EXECUTOR = step_executor("multiprocess_forkserver_ingest", INGEST_LIBRARIES)
SCORING_EXECUTOR = step_executor("multiprocess_forkserver_scoring", SCORING_LIBRARIES)


def build_code_location(settings: Settings | None = None) -> dg.Definitions:
    """The code location: every dataset declared under ``ds_assets/defs/`` (one
    ``TelemetryDataset`` component each), with the resources they share."""
    import ds_assets.defs as declared

    settings = settings or Settings.from_env()
    tree = dg.ComponentTree(defs_module=declared,
                            project_root=Path(declared.__file__).resolve().parents[2])
    with warnings.catch_warnings():  # the loader's own beta/preview notices, once per load
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        declared_defs = tree.build_defs()
    return dg.Definitions.merge(declared_defs,
                                dg.Definitions(resources=build_shared_resources(settings),
                                               executor=STEP_EXECUTOR))


defs = build_code_location()
