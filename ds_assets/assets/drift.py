"""Daily drift report: one day of telemetry and its scores against the champion's reference."""


from typing import Any

import dagster as dg
import pandas as pd

from ds_assets.assets.automation import daily_champion_asset
from ds_assets.dataset import Dataset
from ds_assets.monitoring.drift import comparable_rows, compare, rate_flags
from ds_assets.monitoring.reference import load_reference
from ds_assets.reporting.analytics import markdown_table, png_markdown
from ds_assets.reporting.plots import drift_plot_png
from ds_assets.resources.pipeline_metrics import pipeline_metrics, with_pipeline_metrics
from ds_assets.telemetry.schema import LABEL

DRIFT_TABLE_COLUMNS = [
    "feature", "mean", "reference_mean", "std_ratio", "wasserstein", "wasserstein_threshold",
    "psi", "psi_threshold", "ks_d", "ks_p_bh", "drift_score", "drifted",
]


class DriftReportConfig(dg.Config):
    """False-discovery rate of the KS tests across features."""

    alpha: float = 0.05


def scoring_version(scored: pd.DataFrame, fallback: str | None) -> str:
    """The model version that scored the day (drift is judged against that model's data)."""
    versions = sorted({str(v) for v in scored.get("model_version", pd.Series(dtype=str))})
    if len(versions) > 1:
        raise ValueError(f"scored_telemetry mixes model versions {versions}; re-score the day")
    if versions and versions[0]:
        return versions[0]
    if fallback is None:
        raise ValueError("scored_telemetry has no model_version and there is no champion")
    return fallback


def build_drift_report_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(**with_pipeline_metrics(daily_champion_asset(
        ds, "drift_report", "monitoring", "raw_telemetry", "scored_telemetry")),
        kinds={"scipy", "json"})
    def drift_report(
        context: dg.AssetExecutionContext,
        config: DriftReportConfig,
        raw_telemetry: pd.DataFrame,
        scored_telemetry: pd.DataFrame,
    ) -> dict[str, Any]:
        """Per-feature W1/PSI/KS(BH) against the training reference, plus score and rate shift."""
        registry = ds.registry(context)
        version = scoring_version(scored_telemetry, registry.champion_version())
        reference = load_reference(registry.bundle_path(version))
        raw_rows = comparable_rows(raw_telemetry)  # known anomalies are not in the reference
        scored_rows = comparable_rows(scored_telemetry)
        labeled = LABEL in scored_telemetry.columns
        result = compare(
            reference,
            raw_telemetry[raw_rows],
            scored_telemetry["score"].to_numpy()[scored_rows],
            # raw flags: the reference rate is unsmoothed
            rate_flags(scored_telemetry)[scored_rows],
            alpha=config.alpha,
            labeled=labeled,  # unlabeled: the score by its unflagged part, the rate not deciding
        )
        population = (
            "label == 0 rows (labeled anomalies are not in the reference)" if labeled
            else f"all rows (no label column; scores: {result.score['compared']})"
        )
        summary = result.summary()
        score = result.score
        context.add_output_metadata(
            {
                "drifted": summary["drifted"],
                "drift_score": summary["drift_score"],
                "n_drifted_features": summary["n_drifted_features"],
                "drifted_features": dg.MetadataValue.json(summary["drifted_features"]),
                "reference_version": version,
                "score_wasserstein": float(score["wasserstein"]),
                "anomaly_rate": float(score["anomaly_rate"]),
                "reference_anomaly_rate": float(score["reference_anomaly_rate"]),
                "features": dg.MetadataValue.md(markdown_table(result.table[DRIFT_TABLE_COLUMNS])),
                "drift_scores": dg.MetadataValue.md(png_markdown(drift_plot_png(result),
                                                                 "drift score per feature")),
                "thresholds_rule": reference.calibration.get("rule", ""),
                "compared_rows": dg.MetadataValue.text(f"{int(scored_rows.sum())} {population}"),
            }
        )
        pipeline_metrics(context).push(
            ds.name, "drift", {"drift_score": float(summary["drift_score"]),
                               "drifted": float(bool(summary["drifted"]))},
            {"day": context.partition_key})
        return {"partition": context.partition_key, "reference_version": version,
                "compared_rows": int(scored_rows.sum()), "population": population,
                **result.to_dict()}

    return drift_report
