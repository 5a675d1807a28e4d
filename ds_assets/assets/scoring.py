"""Daily dataset scoring with the serving champion, through the same core as the gRPC scorer."""


import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

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
from ds_assets.resources.io_manager import StoredTable, stored_partition
from ds_assets.resources.pipeline_metrics import pipeline_metrics, with_pipeline_metrics
from ds_assets.telemetry.schema import RESERVED
from ds_assets.training import lead_in_cache
from ds_assets.training.dataset_scoring import (
    TABLE_BATCH_ROWS,
    EntityTails,
    LeadIn,
    dataset_scorer,
    lead_in_mismatch,
    lead_in_rows,
    score_table,
)
from ds_assets.training.datasets import DatasetError
from ds_serving.scoring import Scorer, ScoringInputError


class ScoringConfig(dg.Config):
    chunk_rows: int = 65_536  # rows per onnxruntime run
    batch_rows: int = TABLE_BATCH_ROWS  # rows read, scored and written at a time
    # continue from the day before: its last rows of each entity run through the scorer first
    # (temporal windows, k-of-n, re-baselining and level adaptation carry over, as live)
    lead_in: bool = True


def day_before(context: dg.AssetExecutionContext, ds: Dataset, day: str,
               raw_telemetry: StoredTable, features: Sequence[str]) -> tuple[Path | None, str]:
    """The stored raw day before ``day`` that its scoring may continue from, or None, and why:
    the day before is context, not input, so what it cannot give the day goes without."""
    before = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
    path = stored_partition(raw_telemetry, before)
    if path is None:
        return None, f"none: raw_telemetry {before} is not stored; each entity starts afresh"
    failing = partitions_failing_checks(context.instance, [before], ds).get(before)
    if failing:
        return None, (f"none: raw_telemetry {before} failed blocking check(s) {failing}; "
                      "each entity starts afresh")
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others
        context.log.warning(f"raw_telemetry {before} cannot be read for the lead-in: {exc}")
        return None, (f"none: raw_telemetry {before} cannot be read ({exc}); each entity "
                      "starts afresh")
    why = lead_in_mismatch(names, pq.read_schema(raw_telemetry.path).names, features,
                           (f"raw_telemetry {before}", day))
    if why:
        return None, f"none: {why}; each entity starts afresh"
    return path, f"raw_telemetry {before}"


def day_lead_in(context: dg.AssetExecutionContext, ds: Dataset, day: str,
                raw_telemetry: StoredTable, scorer: Scorer, wanted: bool
                ) -> tuple[LeadIn | None, str]:
    """The day before's raw rows that ``day``'s scoring continues from, and why (or why not):
    without them each entity's first ``W - 1`` rows of a temporal model go unscored every
    day, and smoothing state starts over at midnight, where the live scorer carries both."""
    rows = lead_in_rows(scorer)
    if not wanted:
        return None, "off (lead_in: false): each entity starts afresh"
    if rows == 0:
        return None, "not needed: the model and its policy carry nothing from row to row"
    path, note = day_before(context, ds, day, raw_telemetry, scorer.features)
    if path is None:
        return None, note
    if rows is None:
        return LeadIn(path, rows), f"{note}: all rows"
    what = f"the last {rows} rows of each entity"
    kept = lead_in_cache.kept_for(path, rows, scorer.features)
    if kept is not None:  # the same rows, without reading the day again
        return (LeadIn(kept, rows, f"{path.name} (rows kept when it was scored)"),
                f"{note}: {what}, kept when that day was scored")
    return LeadIn(path, rows), f"{note}: {what}"


def keep_day_tails(context: dg.AssetExecutionContext, tails: EntityTails | None,
                   raw_telemetry: StoredTable, stamp: dict[str, Any] | None) -> str:
    """Keep the day's last rows of each entity for the next day's lead-in, and say so; a
    failure to write them costs the next day a read, never this day's scores."""
    if tails is None or stamp is None:
        return "nothing: the next day reads all of this day, or starts afresh"
    try:
        path = lead_in_cache.keep(tails, raw_telemetry.path, stamp)
    except OSError as exc:
        context.log.warning(f"the day's last rows could not be kept for the next day ({exc}); "
                            "it will read this day's file instead")
        return f"nothing ({exc}): the next day reads this day's file"
    if path is None:
        return "nothing: the day had no rows"
    table = tails.table()
    kept = 0 if table is None else table.num_rows
    return f"{kept} rows, the last {tails.rows} of each entity"


def build_scored_telemetry_asset(ds: Dataset) -> dg.AssetsDefinition:
    # code version 2: each day continues from the day before (``day_lead_in``)
    @dg.asset(**with_pipeline_metrics({**daily_champion_asset(ds, "scored_telemetry", "scoring",
                                                              "raw_telemetry"),
                                       "code_version": "2"}),
              deps=[ds.key("champion")], kinds={"onnx", "parquet"})
    def scored_telemetry(
        context: dg.AssetExecutionContext,
        config: ScoringConfig,
        raw_telemetry: StoredTable,
    ) -> StoredTable:
        """Score, flag and top contributing feature for every row of the day, streamed from the
        raw partition's file a record batch at a time into the scored one (memory set by the
        batch, not the day), continuing each entity from the stored day before, as the live
        scorer would have (``day_lead_in``; the metadata's ``lead_in`` says what it used).

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
        scorer = dataset_scorer(bundle, "auto")
        lead_in, lead_in_note = day_lead_in(context, ds, day, raw_telemetry, scorer,
                                            config.lead_in)
        rows = lead_in_rows(scorer)
        tails = EntityTails(rows, scorer.features) if config.lead_in and rows else None
        stamp = lead_in_cache.file_stamp(raw_telemetry.path) if tails is not None else None
        summary = ScoredSummary()
        fd, name = tempfile.mkstemp(prefix=f"scored-{day}-", suffix=".parquet")
        os.close(fd)
        out = Path(name)
        try:  # flagged by the bundle's scoring policy, as the live scorer flags
            score_table(scorer, raw_telemetry.path, out, batch_rows=config.batch_rows,
                        chunk_rows=config.chunk_rows, each=summary.add_table, lead_in=lead_in,
                        tails=tails)
        except (DatasetError, ScoringInputError) as exc:
            out.unlink(missing_ok=True)
            raise DatasetError(f"scoring raw_telemetry {day}: {exc}") from exc
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        kept = keep_day_tails(context, tails, raw_telemetry, stamp)
        unread = [c for c in pq.read_schema(raw_telemetry.path).names
                  if c not in RESERVED and c not in scorer.features]
        if unread:  # declared after the champion was trained: nothing watches them yet
            context.log.warning(
                f"champion v{bundle.manifest.version} does not read feature(s) {unread} of "
                f"raw_telemetry {day}: it was trained without them, so they are not monitored "
                "until a model trained with them becomes champion")
        context.add_output_metadata({**scoring_metadata(summary, bundle.manifest.version),
                                     "lead_in": lead_in_note, "kept_for_next_day": kept,
                                     "unread_features": unread})
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
