"""Raw telemetry per day and the blocking data-quality checks that gate everything downstream."""


from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pandas as pd

from ds_assets.dataset import Dataset
from ds_assets.reporting.analytics import (
    anomaly_breakdown,
    feature_summary,
    histogram_table,
    hourly_png,
    hourly_series,
    markdown_table,
    png_markdown,
    telemetry_overview,
    top_k_markdown,
)
from ds_assets.resources.pipeline_metrics import PIPELINE_METRICS_KEY, pipeline_metrics
from ds_assets.resources.registry import ModelRegistry
from ds_assets.telemetry.files import read_rows
from ds_assets.telemetry.generator import DriftConfig, GeneratorConfig, generate_day
from ds_assets.telemetry.schema import ANOMALY_TYPE, LABEL, feature_columns
from ds_assets.telemetry.sources import read_labeled_file, resolve_path
from ds_assets.telemetry.validation import CHECK_NAMES, validate_telemetry
from ds_assets.training.bundling import learned_ranges
from ds_serving.atomic import atomic_write_with


class TelemetrySourceConfig(dg.Config):
    """Where a day of telemetry comes from: the synthetic generator, a labeled file
    (``f1..f8,label``), or an unlabeled file (``csv``: ``f1..f8``, production telemetry that is
    scored, drift-reported and alerted but not trained on)."""

    source: Literal["synthetic", "labeled_csv", "csv"] = "synthetic"
    n_hosts: int = 20
    interval_seconds: int = 60
    seed: int = 42
    anomaly_rate: float = 0.01
    path: str = ""
    host_id: str = ""
    # Synthetic distribution drift from drift_start on (empty = none); see generator.DriftConfig.
    drift_start: str = ""
    drift_features: list[str] = ["latency_ms", "cpu_util"]
    drift_mean_shift: float = 0.0
    drift_scale: float = 1.0
    drift_seasonal_amplitude: float = 0.0
    drift_seasonal_period_hours: float = 6.0
    # synthetic only: False drops the label and anomaly_type columns, as production telemetry
    # arrives (the generator still places anomalies: unlabeled contamination)
    labels: bool = True

    def drift(self) -> DriftConfig | None:
        if not self.drift_start:
            return None
        return DriftConfig(
            start=self.drift_start,
            features=tuple(self.drift_features),
            mean_shift=self.drift_mean_shift,
            scale=self.drift_scale,
            seasonal_amplitude=self.drift_seasonal_amplitude,
            seasonal_period_hours=self.drift_seasonal_period_hours,
        )


def load_telemetry(config: TelemetrySourceConfig, day: str) -> pd.DataFrame:
    if config.source == "synthetic":
        generator = GeneratorConfig(
            n_hosts=config.n_hosts,
            interval_seconds=config.interval_seconds,
            seed=config.seed,
            anomaly_rate=config.anomaly_rate,
            drift=config.drift(),
        )
        frame = generate_day(day, generator)
        return frame if config.labels else frame.drop(columns=[LABEL, ANOMALY_TYPE])
    if not config.path:
        raise ValueError(
            f"source {config.source!r} needs config 'path' (a CSV/Parquet file; '{{date}}' in "
            "it expands to the partition key)"
        )
    return read_labeled_file(
        resolve_path(config.path, day),
        day,
        interval_seconds=config.interval_seconds,
        host_id=config.host_id or None,
        labeled=config.source == "labeled_csv",
    )


def raw_telemetry_settings(ds: Dataset) -> dict[str, Any]:
    """``@dg.asset`` settings of a dataset's raw_telemetry, whatever its source."""
    return {"key": ds.key("raw_telemetry"), "partitions_def": ds.partitions_def,
            "kinds": {"pandas", "parquet"}, "code_version": "1",
            "group_name": ds.scoped("telemetry"),
            "required_resource_keys": {PIPELINE_METRICS_KEY, ds.registry_key}}


def build_raw_telemetry_asset(ds: Dataset) -> dg.AssetsDefinition:
    if ds.spec is not None:
        return build_declared_telemetry_asset(ds)

    @dg.asset(**raw_telemetry_settings(ds))
    def raw_telemetry(
        context: dg.AssetExecutionContext, config: TelemetrySourceConfig
    ) -> pd.DataFrame:
        """One day of wide telemetry rows (timestamp, entity ids, features, label, anomaly_type).

        Re-ingesting a day that already holds data never replaces it with data that fails the
        blocking checks: the new rows are validated first and, if refused, kept beside it for
        inspection while the stored version stays the one downstream reads."""
        frame = load_telemetry(config, context.partition_key)
        return ingested(context, ds, frame, {"source": config.source})

    return raw_telemetry


def build_declared_telemetry_asset(ds: Dataset) -> dg.AssetsDefinition:
    spec = ds.spec
    assert spec is not None

    @dg.asset(**raw_telemetry_settings(ds))
    def raw_telemetry(context: dg.AssetExecutionContext) -> pd.DataFrame:
        """One day of the declared files' rows in the platform's layout (timestamp, entity,
        features, labels from the declared column or windows). Files are staged once as
        Parquet; what reading found (order, duplicates, gaps) goes to metadata, never filled."""
        frame, report = read_rows(spec, Path(ds.staging_dir), ds.name, context.partition_key)
        return ingested(context, ds, frame, {
            "source": "declared", "read": dg.MetadataValue.json(report.as_metadata())})

    return raw_telemetry


def ingested(context: dg.AssetExecutionContext, ds: Dataset, frame: pd.DataFrame,
             extra: dict[str, Any]) -> pd.DataFrame:
    """What every ingest does with a day's rows: refuse to replace a good stored day with
    failing rows, describe the rows, count them."""
    current = stored_partition(context.instance, context.asset_key, context.partition_key)
    if current is not None:
        # the blocking checks' own settings: this run's check config and the ranges it holds
        # features to (learned ones too), else new rows passing here fail there, too late
        ops: dict[str, Any] = dict(context.run.run_config.get("ops") or {})  # type: ignore[call-overload]
        check = (ops.get(ds.scoped("raw_telemetry_expectations")) or {}).get("config") or {}
        ranges, _ = check_ranges(ds, getattr(context.resources, ds.registry_key))
        refuse_if_failing(ds, frame, current, context.partition_key, context.run_id,
                          ranges=ranges, min_rows=TelemetryChecksConfig(**check).min_rows)
    context.add_output_metadata(
        {
            **telemetry_overview(frame),
            **extra,
            "features": dg.MetadataValue.md(feature_summary(frame)),
            "anomaly_types": dg.MetadataValue.md(anomaly_breakdown(frame)),
            **telemetry_analytics(frame),
        }
    )
    pipeline_metrics(context).push(ds.name, "ingest", {"rows_ingested": len(frame)},
                                   {"day": context.partition_key})
    return frame


def stored_partition(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str
) -> Path | None:
    """The file of the partition's latest materialization, if it is still on disk."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1)
    if not result.records:
        return None
    materialization = result.records[0].asset_materialization
    entry = materialization.metadata.get("path") if materialization else None
    path = Path(str(entry.value)) if entry is not None else None
    return path if path is not None and path.is_file() else None


def refuse_if_failing(ds: Dataset, frame: pd.DataFrame, current: Path, day: str, run_id: str,
                      *, ranges: dict[str, tuple[float, float]], min_rows: int) -> None:
    """Validate a new version of a stored day before it can replace it, as the blocking checks
    will (``ranges``, ``min_rows``): on failure the new rows go to ``_refused/`` beside the day
    and the run fails naming the checks and the path, unless the stored day fails them too (a
    re-run before its source is fixed: the day stays left out, not refused as if good)."""
    outcomes = validate_telemetry(frame, ds.validation_features(frame), ranges=ranges,
                                  min_rows=min_rows)
    failed = {o.name: o.failures for o in outcomes.values() if not o.passed}
    if not failed:
        return
    stored = pd.read_parquet(current)
    if not all(o.passed for o in validate_telemetry(
            stored, ds.validation_features(stored), ranges=ranges, min_rows=min_rows).values()):
        return  # no good version to keep: the new rows replace it, and the checks judge them
    refused = current.parent / "_refused" / f"{day}.{run_id}.parquet"
    atomic_write_with(refused, lambda tmp: frame.to_parquet(tmp, index=False))
    reasons = "; ".join(f"{name}: {'; '.join(why)[:300]}" for name, why in failed.items())
    raise dg.Failure(
        description=(
            f"raw_telemetry {day}: the new rows fail blocking check(s) {sorted(failed)}, so "
            f"the stored day ({current}) is kept and downstream keeps using it; the refused "
            f"rows are at {refused}. {reasons}"
        ),
        metadata={"refused_path": dg.MetadataValue.path(str(refused)),
                  "kept_path": dg.MetadataValue.path(str(current)),
                  "failed_checks": sorted(failed)},
    )


def telemetry_analytics(frame: pd.DataFrame, metric: str = "cpu_util") -> dict[str, Any]:
    """Top-k groups, an hourly series of a metric and of the labeled anomaly rate, histograms."""
    meta: dict[str, Any] = {}
    features = feature_columns(frame)
    if "label" in frame.columns and "host_id" in frame.columns:
        meta["top_anomalous"] = dg.MetadataValue.md(top_k_markdown(frame, "label"))
    if "label" in frame.columns and metric in frame.columns:
        hourly = hourly_series(frame, metric, "label")
        meta["hourly"] = dg.MetadataValue.md(
            png_markdown(hourly_png(hourly), f"hourly {metric} and anomaly rate") + "\n\n"
            + markdown_table(hourly)
        )
    meta["histograms"] = dg.MetadataValue.md("\n\n".join(
        f"**{f}**\n\n{markdown_table(histogram_table(frame[f]))}" for f in features
    ))
    return meta


class TelemetryChecksConfig(dg.Config):
    min_rows: int = 10


def check_ranges(ds: Dataset, registry: ModelRegistry
                 ) -> tuple[dict[str, tuple[float, float]], str]:
    """The ranges the range check holds features to, and where they come from: declared ones,
    plus (``features.learn_ranges``) the champion's training ranges widened for the others."""
    ranges = ds.feature_ranges()
    factor = ds.spec.features.learn_ranges if ds.spec is not None else None
    if not factor:
        return ranges, "declared" if ranges else "finite values only"
    version = registry.champion_version()
    if version is None:
        return ranges, "declared; none learned yet (no champion)"
    learned = learned_ranges(registry.champion().manifest.extra, factor)
    return {**learned, **ranges}, (f"declared, and learned from champion v{version}'s training "
                                   f"rows widened by {factor:g} spans")


def raw_check_keys(ds: Dataset) -> list[dg.AssetCheckKey]:
    """The blocking checks of a dataset's raw_telemetry."""
    return [dg.AssetCheckKey(ds.key("raw_telemetry"), name) for name in CHECK_NAMES]


def build_raw_telemetry_checks(ds: Dataset) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        name=ds.scoped("raw_telemetry_expectations"),
        specs=[
            dg.AssetCheckSpec(
                key.name, asset=key.asset_key, blocking=True, partitions_def=ds.partitions_def
            )
            for key in raw_check_keys(ds)
        ],
        ins={"raw_telemetry": dg.AssetIn(ds.key("raw_telemetry"))},
        required_resource_keys={PIPELINE_METRICS_KEY, ds.registry_key},
    )
    def raw_telemetry_expectations(
        context: dg.AssetCheckExecutionContext,
        config: TelemetryChecksConfig,
        raw_telemetry: pd.DataFrame,
    ) -> Iterator[dg.AssetCheckResult]:
        """great-expectations suites; a failure stops every downstream asset in the run."""
        ranges, range_source = check_ranges(ds, getattr(context.resources, ds.registry_key))
        outcomes = validate_telemetry(
            raw_telemetry, ds.validation_features(raw_telemetry), ranges=ranges,
            min_rows=config.min_rows,
        )
        outcomes["feature_values_in_range"].metadata["ranges"] = range_source
        pipeline_metrics(context).push(
            ds.name, "checks", {"checks_failed": sum(not o.passed for o in outcomes.values()),
                                "checks_run": len(outcomes)}, {"day": context.partition_key})
        for outcome in outcomes.values():
            if not outcome.passed:
                context.log.error(f"check {outcome.name} failed: {'; '.join(outcome.failures)}")
            yield dg.AssetCheckResult(
                asset_key=ds.key("raw_telemetry"),
                check_name=outcome.name,
                passed=outcome.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    **outcome.metadata,
                    "failures": dg.MetadataValue.md(
                        "\n".join(f"- {f}" for f in outcome.failures) or "none"
                    ),
                },
            )

    return raw_telemetry_expectations


def partitions_failing_checks(
    instance: dg.DagsterInstance, partitions: Sequence[str], ds: Dataset
) -> dict[str, list[str]]:
    """Partitions whose current raw_telemetry data failed a blocking check, with the check names.

    A failed check stops downstream assets in its own run, but the raw partition stays on disk;
    assets that read a window of days later (a sensor- or schedule-requested retrain) use this
    so they never train on data that failed validation.
    """
    if not partitions:
        return {}
    keys = raw_check_keys(ds)
    infos = instance.event_log_storage.get_asset_check_partition_info(
        keys, partition_keys=list(partitions)
    )
    failing: dict[str, list[str]] = {}
    for info in infos:
        if info.partition_key is None:
            continue
        status = info.latest_execution_status.value  # the enum is not public API
        if status == "PLANNED" and _crashed_on_the_stored_day(instance, info):
            failing.setdefault(info.partition_key, []).append(info.check_key.name)
            continue
        if not info.is_current:
            continue  # the check ran on an older materialization of this partition
        if status == "FAILED":
            failing.setdefault(info.partition_key, []).append(info.check_key.name)
    return {day: sorted(names) for day, names in sorted(failing.items())}


def _crashed_on_the_stored_day(instance: dg.DagsterInstance, info: Any) -> bool:
    """The check's latest run stored this day's data and ended without a check result (the
    check raised): the stored day never passed. (A run whose new rows were refused before
    they were stored leaves the earlier, checked version in place.)"""
    run_id = info.latest_planned_run_id
    run = instance.get_run_by_id(run_id) if run_id else None
    if run is None or not run.is_finished:
        return False
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=info.check_key.asset_key,
                              asset_partitions=[info.partition_key]), limit=1).records
    return bool(latest) and latest[0].run_id == run_id
