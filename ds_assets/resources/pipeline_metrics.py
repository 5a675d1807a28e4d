"""Pipeline metrics pushed to a Prometheus Pushgateway: per dataset and day, what the assets saw.

Batch runs end before Prometheus could scrape them, so the assets push their numbers (rows
ingested, checks failed, anomalies flagged, alert episodes, drift, champion version, training
time) to a Pushgateway that Prometheus scrapes. Off unless ``pushgateway_url`` is set
(``DS_PUSHGATEWAY_URL``): disabled, ``push`` makes no network call at all. A failed push is a
warning, never a failed run: metrics must not stop the pipeline they describe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import dagster as dg
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

PIPELINE_METRICS_KEY = "pipeline_metrics"
JOB = "datasentinel_pipeline"
PREFIX = "ds_pipeline_"

# short name (``push`` values) -> help; exposed as ``ds_pipeline_<name>``
METRICS: dict[str, str] = {
    "rows_ingested": "Rows of the day's raw_telemetry materialization.",
    "checks_failed": "Blocking data-quality checks of raw_telemetry that failed for the day.",
    "checks_run": "Blocking data-quality checks of raw_telemetry run for the day.",
    "rows_scored": "Rows of the day's scored_telemetry.",
    "anomalies_flagged": "Rows of the day flagged anomalous by the scoring champion.",
    "alert_episodes": "Alert episodes (events) of the day under the bundle's alerting policy.",
    "drift_score": "Drift score of the day against the scoring model's training reference.",
    "drifted": "1 if the day's drift report judged the data drifted, else 0.",
    "champion_version": "Version of the serving champion after the promotion decision "
                        "(NaN if not numeric).",
    "training_seconds": "Wall time of the latest detector training, in seconds.",
}


class PipelineMetrics(dg.ConfigurableResource):
    """Pushes gauges ``ds_pipeline_<name>`` to the Pushgateway at ``pushgateway_url`` (empty:
    disabled), as job ``datasentinel_pipeline`` with the grouping key {dataset, step, and the
    caller's labels (``day`` for per-day assets)}; each push replaces its group's previous
    values, so a re-run day shows its latest numbers."""

    pushgateway_url: str = ""
    timeout_seconds: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.pushgateway_url.strip())

    def push(
        self,
        dataset: str,
        group: str,
        values: Mapping[str, float],
        labels: Mapping[str, str] | None = None,
    ) -> bool:
        """Push ``values`` (short names of ``METRICS``) for ``dataset`` under step ``group``;
        True when pushed. Disabled: nothing happens. A failure logs a warning naming the URL."""
        unknown = sorted(set(values) - set(METRICS))
        if unknown:  # a wiring mistake, caught by the tests, not a runtime condition
            raise ValueError(f"unknown pipeline metric(s) {unknown}; known: {sorted(METRICS)}")
        if not self.enabled:
            return False
        key = {"dataset": dataset, "step": group, **(labels or {})}
        registry = CollectorRegistry()
        for name, value in values.items():
            Gauge(PREFIX + name, METRICS[name], registry=registry).set(value)
        url = self.pushgateway_url.strip()
        try:
            push_to_gateway(url, job=JOB, registry=registry, grouping_key=key,
                            timeout=self.timeout_seconds)
        except Exception as exc:  # any failure (refused, timeout, HTTP error, bad URL) is a warning
            dg.get_dagster_logger().warning(
                f"pipeline metrics: push of {sorted(values)} for {key} to the Pushgateway at "
                f"{url} failed: {type(exc).__name__}: {exc}; the run goes on without them")
            return False
        return True


def pipeline_metrics(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext | dg.OpExecutionContext,
) -> PipelineMetrics:
    """The shared pipeline-metrics resource of a run (declare ``PIPELINE_METRICS_KEY`` in the
    asset's ``required_resource_keys``)."""
    resource = getattr(context.resources, PIPELINE_METRICS_KEY)
    if not isinstance(resource, PipelineMetrics):
        raise TypeError(f"resource {PIPELINE_METRICS_KEY!r} is a {type(resource).__name__}, "
                        "not a PipelineMetrics")
    return resource


def with_pipeline_metrics(asset_settings: dict[str, Any]) -> dict[str, Any]:
    """``@dg.asset`` settings (e.g. ``daily_champion_asset``'s) that also require the
    pipeline-metrics resource."""
    keys = set(asset_settings.get("required_resource_keys", set()))
    return {**asset_settings, "required_resource_keys": keys | {PIPELINE_METRICS_KEY}}


def push_champion(
    context: dg.AssetExecutionContext | dg.OpExecutionContext, dataset: str,
    serving: str | None,
) -> None:
    """The serving champion's version after any change of it: the gate, a shadow verdict or a
    rollback (each a ``champion`` materialization; the gauge followed only the gate's)."""
    pipeline_metrics(context).push(dataset, "champion",
                                   {"champion_version": version_number(serving)})


def version_number(version: str | None) -> float:
    """A model version as a gauge value: its number, NaN when there is none or it is not one."""
    try:
        number = float(version) if version else math.nan
    except ValueError:
        return math.nan
    return number if math.isfinite(number) else math.nan
