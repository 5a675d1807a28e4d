"""Daily dataset scoring with the serving champion, through the same core as the gRPC scorer."""


import os
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg

from ds_assets.assets.automation import daily_champion_asset
from ds_assets.assets.telemetry import partitions_failing_checks
from ds_assets.dataset import Dataset
from ds_assets.reporting.analytics import (
    ERRORS_BY,
    ScoredSummary,
    hourly_png,
    markdown_table,
    png_markdown,
)
from ds_assets.resources.io_manager import StoredTable
from ds_assets.resources.pipeline_metrics import pipeline_metrics, with_pipeline_metrics
from ds_assets.training.dataset_scoring import TABLE_BATCH_ROWS, dataset_scorer, score_table
from ds_assets.training.datasets import DatasetError
from ds_serving.scoring import ScoringInputError


class ScoringConfig(dg.Config):
    chunk_rows: int = 65_536  # rows per onnxruntime run
    batch_rows: int = TABLE_BATCH_ROWS  # rows read, scored and written at a time


def build_scored_telemetry_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(**with_pipeline_metrics(daily_champion_asset(ds, "scored_telemetry", "scoring",
                                                           "raw_telemetry")),
              deps=[ds.key("champion")], kinds={"onnx", "parquet"})
    def scored_telemetry(
        context: dg.AssetExecutionContext,
        config: ScoringConfig,
        raw_telemetry: StoredTable,
    ) -> StoredTable:
        """Score, flag and top contributing feature for every row of the day, streamed from the
        raw partition's file a record batch at a time into the scored one (memory set by the
        batch, not the day).

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
        summary = ScoredSummary()
        fd, name = tempfile.mkstemp(prefix=f"scored-{day}-", suffix=".parquet")
        os.close(fd)
        out = Path(name)
        try:  # flagged by the bundle's scoring policy, as the live scorer flags
            score_table(dataset_scorer(bundle, "auto"), raw_telemetry.path, out,
                        batch_rows=config.batch_rows, chunk_rows=config.chunk_rows,
                        each=summary.add_table)
        except (DatasetError, ScoringInputError) as exc:
            out.unlink(missing_ok=True)
            raise DatasetError(f"scoring raw_telemetry {day}: {exc}") from exc
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        context.add_output_metadata(scoring_metadata(summary, bundle.manifest.version))
        pipeline_metrics(context).push(
            ds.name, "scoring", {"rows_scored": summary.rows,
                                 "anomalies_flagged": summary.flagged},
            {"day": day})
        return StoredTable(out)

    return scored_telemetry


def scoring_metadata(summary: ScoredSummary, version: str) -> dict[str, Any]:
    """Flag rate, top-k groups, hourly score/flag series and the champion's error table."""
    hourly = summary.hourly()
    meta: dict[str, Any] = {
        "model_version": version,
        "rows": summary.rows,
        "flagged_rows": summary.flagged,
        "flag_rate": summary.flag_rate,
        "top_flagged": dg.MetadataValue.md(summary.top_k_markdown()),
        "hourly": dg.MetadataValue.md(
            png_markdown(hourly_png(hourly), "hourly score and flag rate") + "\n\n"
            + markdown_table(hourly)
        ),
    }
    for by in ERRORS_BY:
        table = summary.errors(by)
        if len(table):
            meta[f"errors_by_{by}"] = dg.MetadataValue.md(markdown_table(table))
    return meta
