"""Grafana dashboards as code: writes docker/grafana/dashboards/ds-scorer.json.

    python docker/grafana/build_dashboards.py          # regenerate the checked-in JSON
    python docker/grafana/build_dashboards.py --check  # exit 1 when the JSON is stale

Built with Grafana's own grafana-foundation-sdk (the dev extra pins the release generated for
Grafana 11.6, the image docker-compose.yaml runs). Scorer queries use the recording rules of
deploy/prometheus/rules.yml where one exists and the raw metrics of ds_serving/metrics.py
otherwise; the Pipeline row reads the gauges the assets push to the Pushgateway
(ds_assets/resources/pipeline_metrics.py). tests/deploy/test_grafana.py runs every query against a
live Prometheus scraping a live scorer and a Pushgateway.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import barchart, stat, table, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    TableSortByFieldState,
    VizLegendOptions,
)
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    FieldColor,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    GraphDrawStyle,
    GraphThresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    TableCellDisplayMode,
    VisibilityMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardSpecialValueMapOptions,
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    FieldColorModeId,
    SpecialValueMap,
    SpecialValueMatch,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "dashboards" / "ds-scorer.json"
# the datasource provisioned by provisioning/datasources/prometheus.yaml (same uid)
DATASOURCE = DataSourceRef(type_val="prometheus", uid="ds-prometheus")
JOB = 'job=~"$job"'
# what ds_assets/resources/pipeline_metrics.py pushes: job datasentinel_pipeline (kept by the
# Pushgateway scrape's honor_labels), grouping labels dataset, step and day (per-day assets)
PIPELINE = 'job="datasentinel_pipeline", dataset=~"$dataset"'

# alert thresholds of deploy/prometheus/rules.yml, drawn as dashed lines
ERROR_RATIO_ALERT = 0.05  # DSScorerErrorRatioHigh
P99_BUDGET_SECONDS = 0.025  # DSScorerLatencyP99High
ANOMALY_RATE_ALERT = 0.05  # DSScorerAnomalyRateSurge (with 3x the 6 h rate)


def _query(expr: str, legend: str, ref_id: str = "A") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(DATASOURCE)


def _thresholds(limit: float | None) -> ThresholdsConfig:
    steps = [Threshold(value=None, color="green")]
    if limit is not None:
        steps.append(Threshold(value=limit, color="red"))
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def _graph(panel_id: int, title: str, description: str, unit: str, width: int,
           queries: list[Dataquery], limit: float | None = None,
           bars: bool = False) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .height(8)
        .span(width)
        .fill_opacity(10)
        .thresholds(_thresholds(limit))
        .thresholds_style(GraphThresholdsStyleConfig().mode(
            GraphThresholdsStyleMode.DASHED if limit is not None else GraphThresholdsStyleMode.OFF))
        .legend(VizLegendOptions().display_mode(LegendDisplayMode.TABLE)
                .placement(LegendPlacement.BOTTOM).show_legend(True).calcs(["mean", "max"]))
    )
    if bars:
        panel = panel.draw_style(GraphDrawStyle.BARS).fill_opacity(80)
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _stat(panel_id: int, title: str, description: str, query: Dataquery,
          text_mode: BigValueTextMode = BigValueTextMode.VALUE_AND_NAME) -> stat.Panel:
    return (
        stat.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .height(8)
        .span(6)
        .with_target(query)
        .text_mode(text_mode)
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.NONE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def _instant(expr: str, ref_id: str = "A") -> Dataquery:
    """An instant query in table format: one row per series, its labels as columns (the
    pipeline's gauges are per partition day, not over time)."""
    return (Dataquery().expr(expr).instant().format(PromQueryFormat.TABLE).ref_id(ref_id)
            .datasource(DATASOURCE))


def _per_day(panel_id: int, title: str, description: str, unit: str, expr: str,
             limit: float | None = None) -> barchart.Panel:
    """Bars per partition day (x, sorted), one bar per dataset: ``expr`` must keep the labels
    ``dataset`` and ``day``. With ``limit``, bars at or above it turn red."""
    panel = (
        barchart.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .height(8)
        .span(12)
        .with_target(_instant(expr))
        # Time | dataset | day | Value -> day | <one column per dataset>, days in order
        .with_transformation(DataTransformerConfig(
            id_val="sortBy", options={"sort": [{"field": "day"}]}))
        .with_transformation(DataTransformerConfig(
            id_val="groupingToMatrix",
            options={"columnField": "dataset", "rowField": "day", "valueField": "Value"}))
        .fill_opacity(80)
        .show_value(VisibilityMode.AUTO)
        .x_tick_label_rotation(-45)
        .legend(VizLegendOptions().display_mode(LegendDisplayMode.LIST)
                .placement(LegendPlacement.BOTTOM).show_legend(True))
    )
    if limit is not None:
        panel = (panel.color_scheme(FieldColor().mode(FieldColorModeId.THRESHOLDS))
                 .thresholds(_thresholds(limit)))
    return panel


def _drift_table(panel_id: int) -> table.Panel:
    return (
        table.Panel()
        .id(panel_id)
        .title("Drift per day")
        .description("drift_report per dataset and partition day: the drift score against the "
                     "scoring model's training reference, and whether the day was judged "
                     "drifted (ds_pipeline_drift_score, ds_pipeline_drifted).")
        .datasource(DATASOURCE)
        .height(8)
        .span(12)
        .with_target(_instant(f"max by (dataset, day) (ds_pipeline_drift_score{{{PIPELINE}}})",
                              "A"))
        .with_target(_instant(f"max by (dataset, day) (ds_pipeline_drifted{{{PIPELINE}}})",
                              "B"))
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True},
            "indexByName": {"dataset": 0, "day": 1, "Value #A": 2, "Value #B": 3},
            "renameByName": {"Value #A": "drift score", "Value #B": "drifted"},
        }))
        .sort_by([TableSortByFieldState().display_name("day").desc(True)])
        .decimals(3)
        .override_by_name("drifted", [
            DynamicConfigValue(id_val="decimals", value=0),
            DynamicConfigValue(id_val="mappings", value=[{"type": "value", "options": {
                "0": {"text": "no", "color": "green", "index": 0},
                "1": {"text": "drifted", "color": "red", "index": 1},
            }}]),
            DynamicConfigValue(id_val="custom.cellOptions",
                               value={"type": TableCellDisplayMode.COLOR_BACKGROUND.value}),
        ])
    )


def build() -> Dashboard:
    job = (
        QueryVariable("job")
        .label("Job")
        .description("Prometheus scrape job of the scorers")
        .datasource(DATASOURCE)
        .query("label_values(ds_scorer_model_loaded, job)")
        .current(VariableOption(selected=True, text="ds-scorer", value="ds-scorer"))
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )
    dataset = (
        QueryVariable("dataset")
        .label("Dataset")
        .description("Dataset of the pipeline metrics (default: the unprefixed dataset)")
        .datasource(DATASOURCE)
        .query("label_values(ds_pipeline_rows_ingested, dataset)")
        .current(VariableOption(selected=True, text="default", value="default"))
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )
    return (
        Dashboard("DataSentinel / ds-scorer")
        .uid("ds-scorer")
        .description("The gRPC scorer: traffic, errors, latency, throughput, anomaly rate per "
                     "model, model reloads and alerts; and the pipeline, per dataset and day, "
                     "from the Pushgateway. Generated by "
                     "docker/grafana/build_dashboards.py; do not edit in the UI.")
        .tags(["datasentinel", "ds-scorer", "generated"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("utc")
        .readonly()
        .with_variable(job)
        .with_variable(dataset)
        .with_row(Row("Traffic and errors").id(100))
        .with_panel(_graph(
            1, "Request rate by method and code",
            "RPC messages handled per second (ds_scorer:requests:rate5m).", "reqps", 12,
            [_query(f"sum by (method, code) (ds_scorer:requests:rate5m{{{JOB}}})",
                    "{{method}} {{code}}")]))
        .with_panel(_graph(
            2, "Server-side error ratio",
            "Share of calls that ended in a server-side error; client refusals "
            "(INVALID_ARGUMENT, UNAUTHENTICATED, ...) and CANCELLED do not count. The dashed "
            "line is DSScorerErrorRatioHigh's 5 %.", "percentunit", 12,
            # the recorded ratio has no series while no call failed: 0 for every method instead
            [_query(f"max by (method) (ds_scorer:request_errors:ratio_rate5m{{{JOB}}})\n"
                    f"or max by (method) (ds_scorer:requests:rate5m{{{JOB}}}) * 0",
                    "{{method}}")],
            limit=ERROR_RATIO_ALERT))
        .with_row(Row("Latency and throughput").id(101))
        .with_panel(_graph(
            3, "Handling time p50 / p99",
            "Time to handle one RPC message, by method. The dashed line is the 25 ms Score p99 "
            "budget (DSScorerLatencyP99High).", "s", 12,
            [_query(f"max by (method) (ds_scorer:request_duration_seconds:p50_5m{{{JOB}}})",
                    "p50 {{method}}", "A"),
             _query(f"max by (method) (ds_scorer:request_duration_seconds:p99_5m{{{JOB}}})",
                    "p99 {{method}}", "B")],
            limit=P99_BUDGET_SECONDS))
        .with_panel(_graph(
            4, "Rows scored per second",
            "Rows scored per second over all scorers of the job (ds_scorer:rows_scored:rate5m).",
            "suffix: rows/s", 12,
            [_query(f"sum by (job) (ds_scorer:rows_scored:rate5m{{{JOB}}})", "{{job}}")]))
        .with_row(Row("Models").id(102))
        .with_panel(_graph(
            5, "Anomaly rate per model",
            "Share of rows flagged, per served model and version, over 5 minutes and 6 hours. "
            "DSScorerAnomalyRateSurge fires above 5 % and three times the 6-hour rate.",
            "percentunit", 12,
            [_query(f"ds_scorer:anomaly_rate:ratio_rate5m{{{JOB}}}",
                    "{{name}} v{{version}} (5m)", "A"),
             _query(f"ds_scorer:anomaly_rate:ratio_rate6h{{{JOB}}}",
                    "{{name}} v{{version}} (6h)", "B")],
            limit=ANOMALY_RATE_ALERT))
        .with_panel(_stat(
            6, "Model loaded",
            "1 when the scorer has a model loaded and serving; 0 means health is NOT_SERVING "
            "(DSScorerModelNotLoaded).",
            _query(f"min by (instance) (ds_scorer_model_loaded{{{JOB}}})", "{{instance}}"))
            .mappings([ValueMap(options={
                "0": ValueMappingResult(text="not loaded", color="red", index=0),
                "1": ValueMappingResult(text="loaded", color="green", index=1),
            })])
            .thresholds(ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
                [Threshold(value=None, color="red"), Threshold(value=1, color="green")])))
        .with_panel(_stat(
            7, "Served model",
            "The model each scorer serves: name, version and backend (ds_scorer_model_info).",
            _query(f"max by (instance, name, version, backend) (ds_scorer_model_info{{{JOB}}})",
                   "{{name}} v{{version}} ({{backend}})"),
            text_mode=BigValueTextMode.NAME)
            .thresholds(_thresholds(None)))
        .with_panel(_graph(
            8, "Model reload failures",
            "Refused champion reloads by reason (pointer, bundle, features, stateful_model): "
            "the previous model keeps serving (DSScorerReloadFailing).", "short", 12,
            [_query("sum by (reason) (increase(ds_scorer_reload_failures_total"
                    f"{{{JOB}}}[$__rate_interval]))", "{{reason}}")],
            bars=True))
        .with_panel(_graph(
            9, "Model reloads",
            "Model (re)load attempts by result (success, failure): a promotion shows as a success.",
            "short", 12,
            [_query("sum by (result) (increase(ds_scorer_reloads_total"
                    f"{{{JOB}}}[$__rate_interval]))", "{{result}}")],
            bars=True))
        .with_row(Row("Alerts").id(103))
        .with_panel(_graph(
            10, "Open alerts",
            "Entity alerts currently open in the scorers (hysteresis and cooldown of the "
            "model's alerting policy), and alert open/close events per second.", "short", 12,
            [_query(f"sum by (job) (ds_scorer_open_alerts{{{JOB}}})", "open", "A"),
             _query("sum by (kind) (rate(ds_scorer_alert_events_total"
                    f"{{{JOB}}}[$__rate_interval]))", "{{kind}}/s", "B")]))
        .with_panel(_graph(
            11, "Firing Prometheus alerts",
            "DSScorer* alerts of deploy/prometheus/rules.yml that are firing, by severity; "
            "runbooks in docs/operations.md.", "short", 12,
            [_query('sum by (alertname, severity) (ALERTS{alertstate="firing", '
                    'alertname=~"DSScorer.*"})', "{{alertname}} ({{severity}})")],
            bars=True))
        .with_panel(_graph(
            19, "Entities with state",
            "Entities the scorers keep state for, by store (windows: a temporal model's last "
            "rows; smoothing; alerts), and entities dropped per second at --max-entities "
            "(DSScorerEvictingEntities): an evicted entity loses its window and alert state.",
            "short", 24,
            [_query(f"sum by (store) (ds_scorer_entities{{{JOB}}})", "{{store}}", "A"),
             _query("sum by (store) (rate(ds_scorer_entity_evictions_total"
                    f"{{{JOB}}}[$__rate_interval]))", "{{store}} evicted/s", "B")]))
        .with_row(Row("Pipeline").id(104))
        .with_panel(_per_day(
            12, "Rows ingested per day",
            "Rows of each partition day's raw_telemetry, per dataset (ds_pipeline_rows_ingested, "
            "pushed by the assets to the Pushgateway; every day it holds).", "short",
            f"max by (dataset, day) (ds_pipeline_rows_ingested{{{PIPELINE}}})"))
        .with_panel(_per_day(
            13, "Blocking checks failed per day",
            "Blocking data-quality checks of raw_telemetry that failed for the day "
            "(ds_pipeline_checks_failed); any failure stops training, scoring and the daily "
            "pipeline for that day.", "short",
            f"max by (dataset, day) (ds_pipeline_checks_failed{{{PIPELINE}}})", limit=1))
        .with_panel(_per_day(
            14, "Flag rate per day",
            "Share of the day's scored rows flagged anomalous by the scoring champion "
            "(ds_pipeline_anomalies_flagged / ds_pipeline_rows_scored; days with no row "
            "scored are left out).", "percentunit",
            f"max by (dataset, day) (ds_pipeline_anomalies_flagged{{{PIPELINE}}})\n"
            f"/ max by (dataset, day) (ds_pipeline_rows_scored{{{PIPELINE}}} > 0)"))
        .with_panel(_per_day(
            15, "Alert episodes per day",
            "Alert episodes of the day under the bundle's alerting policy "
            "(ds_pipeline_alert_episodes).", "short",
            f"max by (dataset, day) (ds_pipeline_alert_episodes{{{PIPELINE}}})"))
        .with_panel(_drift_table(16))
        .with_panel(_stat(
            17, "Champion version",
            "Version of the serving champion after the latest promotion decision, per dataset "
            "(ds_pipeline_champion_version; NaN: not a numeric version).",
            _query(f"max by (dataset) (ds_pipeline_champion_version{{{PIPELINE}}})",
                   "{{dataset}}"))
            .decimals(0)
            .mappings([SpecialValueMap(options=DashboardSpecialValueMapOptions(
                match=SpecialValueMatch.NA_N,
                result=ValueMappingResult(text="not numeric", color="orange", index=0)))])
            .thresholds(_thresholds(None)))
        .with_panel(_stat(
            18, "Training duration",
            "Wall time of the latest detector training, per dataset "
            "(ds_pipeline_training_seconds).",
            _query(f"max by (dataset) (ds_pipeline_training_seconds{{{PIPELINE}}})",
                   "{{dataset}}"))
            .unit("s")
            .thresholds(_thresholds(None)))
    )


def render() -> str:
    """The dashboard JSON, as checked in (sorted keys, two-space indent, final newline)."""
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


def as_dict() -> dict[str, Any]:
    import json

    return dict(json.loads(render()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when the checked-in JSON differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
