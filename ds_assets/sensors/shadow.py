"""Shadow sensor: once a candidate has its shadow days reported, request its verdict."""


import dagster as dg

from ds_assets.assets.shadow import SHADOW_REPORT, VERDICT_JOB
from ds_assets.dataset import Dataset
from ds_assets.sensors.records import candidate_shadow_days, sensor_status
from ds_assets.training.shadow import pending_candidate


def build_shadow_sensor(ds: Dataset, minimum_interval_seconds: int = 60,
                        name: str = "shadow_verdict_sensor") -> dg.SensorDefinition:
    """Request ``shadow_verdict`` once ``shadow_report`` holds the candidate's shadow days (one
    request per candidate: run key ``shadow:<version>:<opened at>``)."""
    report_key = ds.key(SHADOW_REPORT)

    @dg.sensor(
        name=ds.scoped(name),
        job_name=ds.scoped(VERDICT_JOB),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=sensor_status(),
        required_resource_keys={ds.registry_key},
        description="Judge a candidate in shadow once its shadow days are reported.",
    )
    def shadow_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        registry = getattr(context.resources, ds.registry_key)
        candidate = pending_candidate(registry.models_dir, registry.model_name)
        if candidate is None:
            return dg.SkipReason("no candidate in shadow")
        reported = candidate_shadow_days(context.instance, report_key, candidate)
        if len(reported) < candidate.days:
            return dg.SkipReason(
                f"candidate v{candidate.version}: {len(reported)} of {candidate.days} shadow "
                f"day(s) reported after {candidate.after}")
        return dg.RunRequest(
            run_key=f"shadow:{candidate.version}:{candidate.opened_at}",
            tags={"datasentinel/trigger": "shadow", "datasentinel/candidate": candidate.version,
                  "datasentinel/shadow_days": ",".join(sorted(reported))})

    return shadow_sensor
