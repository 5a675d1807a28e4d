"""MLflow tracking through dagster-mlflow, with the MLflow run closed when the resource closes.

dagster-mlflow's resource leaves the MLflow run active at process level; when several Dagster
runs execute in one process (tests, the demo), the next run would log into the previous one.
Ending it at teardown keeps one MLflow run per Dagster run; a later step of the same Dagster run
resumes it by its ``dagster_run_id`` tag.
"""


import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
from dagster_mlflow.resources import CONFIG_SCHEMA, MlFlow
from mlflow.entities import RunStatus

TRACKING_SCHEMA = {
    **CONFIG_SCHEMA,
    "artifact_location": dg.Field(
        dg.StringSource,
        is_required=False,
        description="Where a new experiment stores artifacts (default: MLflow's ./mlruns).",
    ),
}


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> None:
    """Create the experiment with an explicit artifact root so nothing lands in the cwd."""
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
