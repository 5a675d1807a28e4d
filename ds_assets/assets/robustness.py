"""Robustness of the serving champion: noise, missing values, outliers and drift vs clean."""


from typing import Any

import dagster as dg
import pandas as pd

from ds_assets.dataset import Dataset
from ds_assets.monitoring.reference import load_reference
from ds_assets.monitoring.robustness import RobustnessSettings, summary
from ds_assets.monitoring.robustness import robustness_report as build_robustness_table
from ds_assets.monitoring.sketches import N_QUANTILES
from ds_assets.reporting.analytics import markdown_table
from ds_assets.training.dataset_scoring import dataset_scorer
from ds_assets.training.datasets import split_rows


class RobustnessConfig(dg.Config):
    noise_levels: list[float] = [0.1, 0.5]
    missing_fraction: float = 0.05
    outlier_fraction: float = 0.01
    outlier_size: float = 8.0
    drift_shift: float = 1.0
    seed: int = 0


def build_robustness_report_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(
        key=ds.key("robustness_report"),
        ins=ds.ins("training_set"),
        deps=[ds.key("champion")],
        kinds={"onnx", "json"},
        code_version="1",
        group_name=ds.scoped("evaluation"),
        required_resource_keys={ds.registry_key},
    )
    def robustness_report(
        context: dg.AssetExecutionContext,
        config: RobustnessConfig,
        training_set: pd.DataFrame,
    ) -> dict[str, Any]:
        """The champion on the test split, clean and under each corruption, side by side."""
        bundle = ds.registry(context).champion()
        reference = load_reference(bundle.path)
        sketches = {f: reference.sketches[f] for f in bundle.manifest.features}
        table = build_robustness_table(
            dataset_scorer(bundle),
            split_rows(training_set, "test"),
            scale={f: s.scale for f, s in sketches.items()},
            medians={f: float(s.quantiles[(N_QUANTILES - 1) // 2]) for f, s in sketches.items()},
            settings=RobustnessSettings(
                noise_levels=tuple(config.noise_levels), missing_fraction=config.missing_fraction,
                outlier_fraction=config.outlier_fraction, outlier_size=config.outlier_size,
                drift_shift=config.drift_shift, seed=config.seed,
            ),
        )
        head = summary(table)
        context.add_output_metadata({
            "model_version": bundle.manifest.version,
            **head,
            "scenarios": dg.MetadataValue.md(markdown_table(table)),
            "missing_values": ("refused at scoring (blocking check, INVALID_ARGUMENT); the "
                               "'missing' scenario fills them with the training median first, "
                               "as a producer would have to"),
        })
        return {"model_version": bundle.manifest.version, **head,
                "scenarios": table.to_dict(orient="records")}

    return robustness_report
