"""MLflow tracking through dagster-mlflow, with the MLflow run closed when the resource closes.

dagster-mlflow's resource leaves the MLflow run active at process level; when several Dagster
runs execute in one process (tests, the demo), the next run would log into the previous one.
Ending it at teardown keeps one MLflow run per Dagster run; a later step of the same Dagster run
resumes it by its ``dagster_run_id`` tag.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from dagster_mlflow.resources import MlFlow

# dagster-mlflow's own schema (``dagster_mlflow.resources.CONFIG_SCHEMA``), written out: that
# module imports mlflow (1.8 s), and the code location that every run worker, code server and
# CLI loads needs only the schema; mlflow is imported where a step opens the resource. A test
# keeps the two schemas equal.
TRACKING_SCHEMA = {
    "experiment_name": dg.Field(dg.StringSource, is_required=True,
                                description="MlFlow experiment name."),
    "mlflow_tracking_uri": dg.Field(dg.Noneable(dg.StringSource), default_value=None,
                                    is_required=False, description="MlFlow tracking server uri."),
    "parent_run_id": dg.Field(dg.Noneable(str), default_value=None, is_required=False,
                              description="Mlflow run ID of parent run if this is a nested run."),
    "mlflow_run_id": dg.Field(dg.Noneable(str), default_value=None, is_required=False,
                              description="Mlflow run ID to use for this run."),
    "env": dg.Field(dg.Permissive(), description="Environment variables for mlflow setup."),
    "env_to_tag": dg.Field(dg.Noneable(list), default_value=None, is_required=False,
                           description="List of environment variables to log as tags in mlflow."),
    "extra_tags": dg.Field(dg.Permissive(),
                           description="Any extra key-value tags to log to mlflow."),
    "artifact_location": dg.Field(
        dg.StringSource,
        is_required=False,
        description="Where a new experiment stores artifacts (default: MLflow's ./mlruns).",
    ),
}


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> None:
    """Create the experiment with an explicit artifact root so nothing lands in the cwd."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    if client.get_experiment_by_name(name) is None:
        location = Path(artifact_location).resolve().as_uri() if artifact_location else None
        client.create_experiment(name, artifact_location=location)


def _run_had_step_failure(context: dg.InitResourceContext) -> bool:
    if context.instance is None or not context.run_id:
        return False
    failures = context.instance.all_logs(
        context.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
    )
    return bool(failures)


@dg.resource(config_schema=TRACKING_SCHEMA, description="dagster-mlflow, one run per Dagster run")
def mlflow_tracking(context: dg.InitResourceContext) -> Iterator[MlFlow]:
    import mlflow
    from dagster_mlflow.resources import MlFlow
    from mlflow.entities import RunStatus

    config = context.resource_config
    uri = config.get("mlflow_tracking_uri")
    if uri:
        ensure_experiment(uri, config["experiment_name"], config.get("artifact_location"))
    tracker = MlFlow(context)
    try:
        yield tracker
    finally:
        # Dagster tears resources down without re-raising a step's error here, so ask the
        # instance whether any step of this run failed.
        failed = sys.exc_info()[1] is not None or _run_had_step_failure(context)
        status = RunStatus.FAILED if failed else RunStatus.FINISHED
        if mlflow.active_run() is not None:
            mlflow.end_run(status=RunStatus.to_string(status))
