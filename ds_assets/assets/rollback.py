"""Rollback: serve an earlier bundle version again, with the reason recorded.

A job, not an asset: it re-points the champion (``champion.json`` first, then the MLflow alias)
and records a materialization of the dataset's ``champion`` asset, so the promotion sensor
re-scores the recent days as for any new champion and the UI shows who serves and why.
"""

import dagster as dg

from ds_assets.dataset import Dataset
from ds_assets.resources.pipeline_metrics import PIPELINE_METRICS_KEY, push_champion
from ds_assets.training.promotion import rollback_decision

ROLLBACK_JOB = "rollback_champion"
ROLLBACK_OP = "repoint_champion"  # op names must differ from job names in one repository


class RollbackConfig(dg.Config):
    """The version to serve again (a directory under the model's bundles) and why."""

    version: str
    reason: str


def build_rollback_job(ds: Dataset) -> dg.JobDefinition:
    @dg.op(name=ds.scoped(ROLLBACK_OP),
           required_resource_keys={ds.registry_key, PIPELINE_METRICS_KEY},
           tags={"kind": "rollback"}, out=dg.Out(dg.Nothing))
    def rollback_champion(context: dg.OpExecutionContext, config: RollbackConfig) -> None:
        """Re-point the champion to ``config.version`` for ``config.reason``."""
        registry = getattr(context.resources, ds.registry_key)
        decision = rollback_decision(registry.models_dir, registry.model_name, config.version,
                                     config.reason)
        aliased = registry.promote(decision, None)
        serving = registry.champion_version()
        context.log.info(f"{registry.model_name}: {decision.reason}")
        context.log_event(dg.AssetMaterialization(
            asset_key=ds.key("champion"),
            description=decision.reason,
            metadata={
                "promoted": True,
                "rollback": True,
                "reason": decision.reason,
                "champion_version": serving or "",
                "previous_champion_version": decision.champion_version or "",
                "mlflow_champion_version": aliased or "",
                "decision": dg.MetadataValue.json(decision.to_dict()),
            }))
        push_champion(context, ds.name, serving)

    @dg.job(name=ds.scoped(ROLLBACK_JOB),
            description="Serve an earlier model version again (config: version, reason); the "
                        "promotion sensor then re-scores the recent days.")
    def rollback_job() -> None:
        rollback_champion()

    return rollback_job
