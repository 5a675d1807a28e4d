"""Evaluation of a bundle on the held-out test split, and champion promotion."""


from typing import Any

import dagster as dg
import pandas as pd

from ds_assets.datasets import score_frame, split_rows
from ds_assets.evaluation import average_precision, evaluate
from ds_assets.promotion import decide_promotion
from ds_assets.resources.registry import ModelRegistry
from ds_assets.schema import ANOMALY_TYPE, LABEL
from ds_serving.bundle import load_bundle, promote
from ds_serving.scoring import Scorer


def _scored_test_split(bundle_path: str, training_set: pd.DataFrame) -> pd.DataFrame:
    scorer = Scorer.from_bundle(load_bundle(bundle_path), backend="cpu")
    return score_frame(scorer, split_rows(training_set, "test"))


@dg.asset(
    kinds={"json"},
    code_version="1",
    group_name="evaluation",
    required_resource_keys={"mlflow"},
)
def evaluation_report(
    context: dg.AssetExecutionContext, model_bundle: dict[str, Any], training_set: pd.DataFrame
) -> dict[str, Any]:
    """Metrics at the deployed threshold on the time-ordered test split."""
    scored = _scored_test_split(model_bundle["path"], training_set)
    report = evaluate(
        scored[LABEL].to_numpy(),
        scored["score"].to_numpy(),
        model_bundle["threshold"],
        scored[ANOMALY_TYPE].to_numpy(),
    )
    metrics = report.metrics()
    context.resources.mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
    context.add_output_metadata(
        {
            "model_version": model_bundle["version"],
            **{k: float(v) for k, v in metrics.items() if k in (
                "precision", "recall", "f1", "roc_auc", "pr_auc", "best_f1_oracle")},
            "report": dg.MetadataValue.md(report.to_markdown()),
        }
    )
    return {"model": model_bundle, **report.to_dict()}


@dg.asset(kinds={"json"}, code_version="1", group_name="evaluation")
def champion(
    context: dg.AssetExecutionContext,
    registry: ModelRegistry,
    model_bundle: dict[str, Any],
    evaluation_report: dict[str, Any],
    training_set: pd.DataFrame,
) -> dict[str, Any]:
    """Promote the new bundle only if it is at least as good as the champion on the same test."""
    current = registry.champion_version()
    current_pr_auc = None
    if current is not None and current != model_bundle["version"]:
        scored = _scored_test_split(str(registry.root / registry.model_name / current),
                                    training_set)
        current_pr_auc = average_precision(scored[LABEL].to_numpy(), scored["score"].to_numpy())
    pr_auc = evaluation_report["pr_auc"]
    decision = decide_promotion(
        model_bundle["version"],
        float("nan") if pr_auc is None else float(pr_auc),
        current,
        current_pr_auc,
    )
    if decision.promote:
        promote(registry.models_dir, registry.model_name, model_bundle["version"],
                details=decision.to_dict())
    context.log.info(f"promotion decision: {decision.reason}")
    serving = registry.champion_version()
    context.add_output_metadata(
        {
            "promoted": decision.promote,
            "reason": decision.reason,
            "champion_version": serving or "",
            "challenger_pr_auc": decision.challenger_pr_auc,
            "previous_champion_pr_auc": (
                decision.champion_pr_auc if decision.champion_pr_auc is not None else float("nan")
            ),
        }
    )
    return {"name": registry.model_name, "version": serving, "decision": decision.to_dict()}
