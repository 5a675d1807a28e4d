"""Daily alert events from scored rows, with the scorer's hysteresis and cooldown."""


import dagster as dg
import pandas as pd

from ds_assets.assets.automation import DAILY_AUTOMATION
from ds_assets.assets.drift import scoring_version
from ds_assets.assets.partitions import daily_partitions
from ds_assets.monitoring.alerts import alert_events, alert_summary, policy_with_overrides
from ds_assets.reporting.analytics import markdown_table
from ds_assets.resources.registry import ModelRegistry
from ds_serving.bundle import load_bundle


class AlertsConfig(dg.Config):
    """Overrides of the scoring model's alerting policy (unset = the bundle's manifest)."""

    k: int | None = None
    n: int | None = None
    m: int | None = None
    cooldown_seconds: float | None = None
    top_k_features: int = 3


@dg.asset(
    partitions_def=daily_partitions,
    kinds={"pandas", "parquet"},
    code_version="1",
    group_name="monitoring",
    automation_condition=DAILY_AUTOMATION,
)
def alerts(
    context: dg.AssetExecutionContext,
    config: AlertsConfig,
    registry: ModelRegistry,
    scored_telemetry: pd.DataFrame,
) -> pd.DataFrame:
    """Alert events: entity, start, end, peak score, top features, anomaly type."""
    version = scoring_version(scored_telemetry, registry.champion_version())
    manifest = load_bundle(registry.bundle_path(version)).manifest
    policy = policy_with_overrides(
        manifest.alerting, k=config.k, n=config.n, m=config.m, cooldown=config.cooldown_seconds
    )
    events = alert_events(scored_telemetry, policy, top_k=config.top_k_features)
    summary = alert_summary(events, policy)
    shown = events.sort_values("peak_score", ascending=False).head(20)
    context.add_output_metadata(
        {
            "alerts": summary["alerts"],
            "entities_alerting": summary["entities_alerting"],
            "still_open": summary["still_open"],
            "false_alarms": summary["false_alarms"],
            "by_anomaly_type": dg.MetadataValue.json(summary["by_anomaly_type"]),
            "policy": dg.MetadataValue.json(summary["policy"]),
            "model_version": version,
            "top_alerts": dg.MetadataValue.md(
                markdown_table(shown.astype({"start": str, "end": str})) if len(shown)
                else "no alerts"
            ),
        }
    )
    return events
