"""Daily dataset scoring with the serving champion, through the same core as the gRPC scorer."""


from typing import Any

import dagster as dg
import pandas as pd

from ds_assets.assets.automation import daily_champion_asset
from ds_assets.assets.telemetry import partitions_failing_checks
from ds_assets.dataset import Dataset
from ds_assets.reporting.analytics import (
    error_distribution,
    hourly_png,
    hourly_series,
    markdown_table,
    png_markdown,
    top_k_markdown,
)
from ds_assets.resources.pipeline_metrics import pipeline_metrics, with_pipeline_metrics
from ds_assets.training.datasets import DatasetError, dataset_scorer, score_frame
from ds_serving.scoring import ScoringInputError


class ScoringConfig(dg.Config):
    chunk_rows: int = 65_536


def build_scored_telemetry_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(**with_pipeline_metrics(daily_champion_asset(ds, "scored_telemetry", "scoring",
                                                           "raw_telemetry")),
              deps=[ds.key("champion")], kinds={"onnx", "parquet"})
    def scored_telemetry(
        context: dg.AssetExecutionContext,
        config: ScoringConfig,
        raw_telemetry: pd.DataFrame,
    ) -> pd.DataFrame:
        """Score, flag and top contributing feature for every row of the day.

        A day whose current raw data failed a blocking check is refused: in its own run the check
        stops scoring already, but a later run (re-scoring after a promotion, the scoring job) reads
        the raw partition from disk and would score data that failed validation."""
        registry = ds.registry(context)
        day = context.partition_key
        failing = partitions_failing_checks(context.instance, [day], ds).get(day)
        if failing:
            raise dg.Failure(
                f"raw_telemetry {day} failed its blocking check(s) {failing}: not scoring data "
                "that failed validation; fix the source and re-materialize the day "
                "(ingest_telemetry job), then score it"
            )
        bundle = registry.champion()
        try:  # flagged by the bundle's scoring policy, as the live scorer flags
            scored = score_frame(dataset_scorer(bundle, "auto"), raw_telemetry,
                                 config.chunk_rows)
        except (DatasetError, ScoringInputError) as exc:
            raise DatasetError(f"scoring raw_telemetry {day}: {exc}") from exc
        context.add_output_metadata(scoring_metadata(scored, bundle.manifest.version))
        pipeline_metrics(context).push(
            ds.name, "scoring", {"rows_scored": len(scored),
                                 "anomalies_flagged": int(scored["is_anomaly"].sum())},
            {"day": day})
        return scored

    return scored_telemetry


def scoring_metadata(scored: pd.DataFrame, version: str) -> dict[str, Any]:
    """Flag rate, top-k groups, hourly score/flag series and the champion's error table."""
    flagged = int(scored["is_anomaly"].sum())
    hourly = hourly_series(scored, "score", "is_anomaly")
    meta: dict[str, Any] = {
        "model_version": version,
        "rows": len(scored),
        "flagged_rows": flagged,
        "flag_rate": round(flagged / max(len(scored), 1), 6),
        "top_flagged": dg.MetadataValue.md(top_k_markdown(scored, "is_anomaly")),
        "hourly": dg.MetadataValue.md(
            png_markdown(hourly_png(hourly), "hourly score and flag rate") + "\n\n"
            + markdown_table(hourly)
        ),
    }
    for by in ("anomaly_type", "region", "project_id"):
        table = error_distribution(scored, by)
        if len(table):
            meta[f"errors_by_{by}"] = dg.MetadataValue.md(markdown_table(table))
    return meta
