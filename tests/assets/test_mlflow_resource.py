"""The MLflow resource records a Dagster run's outcome on its MLflow run."""

from pathlib import Path

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from ds_assets.resources.mlflow import mlflow_tracking


def _job(fail: bool) -> dg.JobDefinition:
    @dg.op(required_resource_keys={"mlflow"})
    def train(context: dg.OpExecutionContext) -> None:
        context.resources.mlflow.log_param("fail", fail)
        if fail:
            raise RuntimeError("training blew up")

    @dg.job(resource_defs={"mlflow": mlflow_tracking})
    def job() -> None:
        train()

    return job


@pytest.mark.parametrize(("fail", "status"), [(False, "FINISHED"), (True, "FAILED")])
def test_mlflow_run_status_follows_the_dagster_run(
    fail: bool, status: str, mlflow_uri: str, tmp_path: Path
) -> None:
    experiment = f"status-{tmp_path.name}"
    result = _job(fail).execute_in_process(
        run_config={"resources": {"mlflow": {"config": {
            "experiment_name": experiment,
            "mlflow_tracking_uri": mlflow_uri,
            "artifact_location": str(tmp_path / "artifacts"),
        }}}},
        raise_on_error=False,
    )
    assert result.success is not fail
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == status


def test_the_schema_is_dagster_mlflows_plus_the_artifact_location() -> None:
    """The schema is written out so that the code location does not import mlflow; a
    dagster-mlflow release that changes its own must change this one too."""
    from dagster._config import resolve_to_config_type
    from dagster_mlflow.resources import CONFIG_SCHEMA

    from ds_assets.resources.mlflow import TRACKING_SCHEMA

    def described(schema: dict[str, dg.Field]) -> dict[str, tuple[object, ...]]:
        return {name: (resolve_to_config_type(f.config_type).given_name
                       or resolve_to_config_type(f.config_type).key,
                       f.is_required, f.default_provided and f.default_value, f.description)
                for name, f in schema.items()}

    ours = described(TRACKING_SCHEMA)
    assert ours.pop("artifact_location")[1] is False
    assert ours == described(CONFIG_SCHEMA)
