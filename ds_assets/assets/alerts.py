"""Daily alert events from scored rows, with the scorer's hysteresis and cooldown."""


import dagster as dg
import pandas as pd

from ds_assets.assets.automation import daily_champion_asset
from ds_assets.assets.drift import scoring_version
from ds_assets.dataset import Dataset
from ds_assets.monitoring.alerts import alert_events, alert_summary
from ds_assets.reporting.analytics import markdown_table
from ds_assets.resources.pipeline_metrics import pipeline_metrics, with_pipeline_metrics
from ds_serving.bundle import load_bundle


class AlertsConfig(dg.Config):
    """Alerts follow the scoring bundle's policy, as the live scorer does. A what-if run (an
    alerting policy the bundle does not have) sets ``what_if`` and the fields it changes; its
    metadata then names the changes."""

    what_if: bool = False
    k: int | None = None
    n: int | None = None
    m: int | None = None
    cooldown_seconds: float | None = None
    top_k_features: int = 3

    def changes(self) -> dict[str, float | int]:
        given = {"alert_k": self.k, "alert_n": self.n, "alert_m": self.m,
                 "alert_cooldown": self.cooldown_seconds}
        return {key: value for key, value in given.items() if value is not None}


def build_alerts_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(**with_pipeline_metrics(daily_champion_asset(ds, "alerts", "monitoring",
                                                           "scored_telemetry")),
              kinds={"pandas", "parquet"})
    def alerts(
        context: dg.AssetExecutionContext,
        config: AlertsConfig,
        scored_telemetry: pd.DataFrame,
    ) -> pd.DataFrame:
        """Alert events: entity, start, end, peak score, top features, anomaly type."""
        registry = ds.registry(context)
        version = scoring_version(scored_telemetry, registry.champion_version())
        manifest = load_bundle(registry.bundle_path(version)).manifest
        changes = config.changes()
        if changes and not config.what_if:
            raise dg.Failure(
                f"alerts: {sorted(changes)} would replace the alerting policy of bundle "
                f"v{version}, so these alerts would differ from the live scorer's; set what_if: "
                "true to run that as a what-if (recorded in metadata), or leave them unset"
            )
        policy = manifest.policy.what_if(**changes)
        events = alert_events(scored_telemetry, policy.alerting, top_k=config.top_k_features)
        summary = alert_summary(events, policy.alerting)
        shown = events.sort_values("peak_score", ascending=False).head(20)
        context.add_output_metadata(
            {
                "alerts": summary["alerts"],
                "entities_alerting": summary["entities_alerting"],
                "still_open": summary["still_open"],
                "false_alarms": summary["false_alarms"],
                "by_anomaly_type": dg.MetadataValue.json(summary["by_anomaly_type"]),
                "policy": dg.MetadataValue.json(summary["policy"]),
                "policy_source": (f"what-if on bundle v{version}: {policy.overrides}"
                                  if policy.is_what_if else f"bundle v{version}"),
                "model_version": version,
                "top_alerts": dg.MetadataValue.md(
                    markdown_table(shown.astype({"start": str, "end": str})) if len(shown)
                    else "no alerts"
                ),
            }
        )
        pipeline_metrics(context).push(ds.name, "alerts", {"alert_episodes": summary["alerts"]},
                                       {"day": context.partition_key})
        return events

    return alerts
