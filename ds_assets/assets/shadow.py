"""Shadow scoring: the candidate beside the champion per day, then the verdict.

Wiring around :mod:`ds_assets.training.shadow`: ``shadow_report`` (daily, in the daily pipeline)
compares both models on each day after the candidate's training window; ``shadow_verdict`` (a
job the shadow sensor requests once enough days exist) re-runs the promotion gate on those
days and promotes or drops the candidate, recording a ``champion`` materialization either way,
so the promotion sensor re-scores after a promotion and the UI shows why.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from ds_assets.assets.automation import daily_automation
from ds_assets.assets.scoring import day_before
from ds_assets.assets.telemetry import partitions_failing_checks
from ds_assets.dataset import Dataset
from ds_assets.reporting.analytics import markdown_table
from ds_assets.resources.io_manager import PartitionFrames, StoredTable
from ds_assets.resources.pipeline_metrics import PIPELINE_METRICS_KEY, push_champion
from ds_assets.sensors.records import candidate_shadow_days
from ds_assets.training import lead_in_cache
from ds_assets.training.dataset_scoring import file_tails, lead_in_rows
from ds_assets.training.datasets import DatasetError
from ds_assets.training.shadow import (
    close_candidate,
    pending_candidate,
    shadow_day,
    shadow_rows,
    verdict,
)
from ds_serving.bundle import BundleError, load_bundle

SHADOW_REPORT = "shadow_report"
SHADOW_VERDICT = "shadow_verdict"
VERDICT_JOB = "judge_candidate"  # a job's name must differ from its asset's op name


def both_lead_in(context: dg.AssetExecutionContext, ds: Dataset, day: str,
                 day_table: StoredTable, paths: Sequence[Path]) -> tuple[pd.DataFrame | None, str]:
    """The stored day before ``day`` that both models continue from (the rows the day's
    scoring kept of it where they are enough for both), and what was used, as
    ``scored_telemetry``'s ``lead_in`` says it."""
    both = [load_bundle(path) for path in paths]
    needs = [lead_in_rows(b) for b in both]
    if all(n == 0 for n in needs):
        return None, "not needed: neither model nor policy carries anything from row to row"
    features = list(dict.fromkeys(f for b in both for f in b.manifest.features))
    path, note = day_before(context, ds, day, day_table, features)
    bounded = [n for n in needs if n is not None]
    if path is not None and len(bounded) == len(needs):
        kept = lead_in_cache.kept_for(path, max(bounded), features)
        if kept is not None:  # the day's scoring kept enough of its last rows
            return kept.to_pandas(), f"{note}, kept when that day was scored"
        # only each host's last rows: the whole day before would double the memory a large
        # shadow day is scored in
        return file_tails(path, max(bounded), features).to_pandas(), note
    return (None if path is None else pd.read_parquet(path)), note


def build_shadow_report_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(
        key=ds.key(SHADOW_REPORT),
        partitions_def=ds.partitions_def,
        ins=ds.ins("raw_telemetry"),
        deps=[ds.key("scored_telemetry")],  # after the champion scored the day
        group_name=ds.scoped("monitoring"),
        automation_condition=daily_automation(ds),
        required_resource_keys={ds.registry_key},
        kinds={"json"},
        code_version="2",  # 2: continues from the stored day before
    )
    def shadow_report(context: dg.AssetExecutionContext,
                      raw_telemetry: StoredTable) -> dict[str, Any]:
        """The candidate in shadow and the champion on this day: flag rate, alerts, drift
        against each one's reference, event recall on injected anomalies. Empty when no
        candidate waits (or the day is inside its training window). Both continue from the
        stored day before, as the day's scored_telemetry does (``lead_in`` metadata)."""
        registry = ds.registry(context)
        day = context.partition_key
        candidate = pending_candidate(registry.models_dir, registry.model_name)
        champion = registry.champion_version()
        if candidate is None or day <= candidate.after or champion is None:
            note = ("no candidate in shadow" if candidate is None
                    else f"inside candidate v{candidate.version}'s training window")
            context.add_output_metadata({"candidate_version": "", "note": note})
            return {"partition": day, "candidate": None}
        try:
            paths = (registry.bundle_path(candidate.version), registry.bundle_path(champion))
            before, lead_in = both_lead_in(context, ds, day, raw_telemetry, paths)
            report = shadow_day(*paths, pd.read_parquet(raw_telemetry.path), before)
        except BundleError as exc:  # withdrawn or damaged since it passed the gate
            close_candidate(registry.models_dir, registry.model_name)
            note = (f"candidate v{candidate.version} dropped: its bundle cannot be read ({exc}); "
                    f"v{champion} keeps serving")
            context.log.warning(note)
            context.add_output_metadata({"candidate_version": "", "note": note})
            return {"partition": day, "candidate": None, "dropped": candidate.to_dict()}
        sides = [{"model": side, **report[side]} for side in ("candidate", "champion")]
        context.add_output_metadata({
            "candidate_version": candidate.version,
            "champion_version": champion,
            "candidate_flag_rate": report["candidate"]["flag_rate"],
            "champion_flag_rate": report["champion"]["flag_rate"],
            "candidate_alerts": report["candidate"]["alerts"],
            "champion_alerts": report["champion"]["alerts"],
            "comparison": dg.MetadataValue.md(markdown_table(pd.DataFrame(sides))),
            "lead_in": lead_in,
        })
        return {"partition": day, "candidate": candidate.to_dict(), **report}

    return shadow_report


def build_shadow_verdict_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(
        key=ds.key(SHADOW_VERDICT),
        ins={"raw_telemetry": dg.AssetIn(ds.key("raw_telemetry"),
                                         metadata={"allow_missing_partitions": True})},
        deps=[ds.key(SHADOW_REPORT)],
        group_name=ds.scoped("evaluation"),
        required_resource_keys={ds.registry_key, PIPELINE_METRICS_KEY},
        kinds={"json"},
        code_version="2",  # 2: continues from the day before the first shadow day
    )
    def shadow_verdict(context: dg.AssetExecutionContext,
                       raw_telemetry: PartitionFrames) -> dict[str, Any]:
        """The promotion gate on the candidate's shadow days (rows neither model was fitted
        on): promote it, or drop it and keep the champion."""
        registry = ds.registry(context)
        candidate = pending_candidate(registry.models_dir, registry.model_name)
        if candidate is None:
            raise dg.Failure(description="no candidate in shadow: nothing to judge (a retrain "
                                         "that passes the gate with shadow_days > 0 opens one)")
        failing = partitions_failing_checks(context.instance, list(raw_telemetry), ds)
        days = [d for d in candidate_shadow_days(context.instance, ds.key(SHADOW_REPORT),
                                                 candidate)
                if d in raw_telemetry and d not in failing]
        if len(days) < candidate.days:
            raise DatasetError(
                f"candidate v{candidate.version} needs {candidate.days} shadow day(s) after "
                f"{candidate.after} reported beside the champion; {len(days)} are ({days}); run "
                "the daily pipeline for the next days first")
        champion = registry.champion_version()
        assert champion is not None  # a candidate is opened only beside a champion
        paths = (registry.bundle_path(candidate.version), registry.bundle_path(champion))
        # the shadow days run on from the day before the first, as their reports did
        before, lead_in = both_lead_in(context, ds, days[0], raw_telemetry.stored(days[0]),
                                       paths)
        decision = verdict(*paths, shadow_rows(raw_telemetry, days), before)
        lineage = load_bundle(registry.bundle_path(candidate.version)).manifest.lineage
        registry.log_decision(lineage.get("mlflow_run_id"), decision)
        aliased = registry.promote(decision, None) if decision.promote else None
        close_candidate(registry.models_dir, registry.model_name)
        serving = registry.champion_version()
        push_champion(context, ds.name, serving)
        verdict_text = "promoted" if decision.promote else "dropped"
        context.log.info(f"candidate v{candidate.version} {verdict_text} after shadow days "
                         f"{days}: {decision.reason}")
        context.log_event(dg.AssetMaterialization(
            asset_key=ds.key("champion"),
            description=f"shadow verdict: {decision.reason}",
            metadata={"promoted": decision.promote, "reason": decision.reason,
                      "evidence": decision.evidence, "champion_version": serving or "",
                      "challenger_version": candidate.version, "shadow_days": days,
                      "mlflow_champion_version": aliased or "",
                      "decision": dg.MetadataValue.json(decision.to_dict())}))
        context.add_output_metadata({"candidate_version": candidate.version,
                                     "promoted": decision.promote, "reason": decision.reason,
                                     "shadow_days": dg.MetadataValue.json(days),
                                     "lead_in": lead_in,
                                     "champion_version": serving or ""})
        return {"candidate": candidate.to_dict(), "days": days,
                "decision": decision.to_dict(), "champion_version": serving}

    return shadow_verdict


def build_shadow_verdict_job(ds: Dataset) -> Any:
    return dg.define_asset_job(
        ds.scoped(VERDICT_JOB),
        selection=dg.AssetSelection.assets(ds.key(SHADOW_VERDICT)),
        description="Judge the candidate in shadow on its shadow days; promote or drop it.")
