"""Evaluation of a bundle on the held-out test split, and champion promotion."""


import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from ds_assets.dataset import Dataset
from ds_assets.reporting.analytics import markdown_table
from ds_assets.reporting.evaluation import group_breakdown
from ds_assets.reporting.report_html import build_report, report_directory
from ds_assets.resources.pipeline_metrics import PIPELINE_METRICS_KEY, push_champion
from ds_assets.telemetry.schema import ANOMALY_TYPE, LABEL, TIMESTAMP
from ds_assets.training.dataset_scoring import dataset_scorer, score_frame
from ds_assets.training.datasets import check_same_training_set, normal_rows, split_rows
from ds_assets.training.gate import ModelRun, injected_test_rows, judge, known_labels
from ds_assets.training.promotion import rows_after_fit
from ds_assets.training.shadow import open_candidate
from ds_serving.bundle import BundleError, load_bundle
from ds_serving.policy import ScoringPolicy

HEADLINE = ("precision", "recall", "f1", "roc_auc", "pr_auc", "best_f1_oracle", "precision_at_k",
            "far", "mar", "contamination", "mean_delay_seconds", "median_delay_seconds",
            "false_alarms_per_hour", "event_recall")


class EvaluationConfig(dg.Config):
    """Report options; the metrics themselves always follow the bundle's deployed policy."""

    seed: int = 0  # IsolationForest baseline seed


def evaluation_rows(test: pd.DataFrame, features: list[str]) -> tuple[pd.DataFrame, str]:
    """The test rows metrics can be computed on, and where their labels come from: all rows
    when labeled; the labeled ones when some days were not; with no labeled row, a copy with
    anomalies injected (the promotion gate's copy, same seed)."""
    known = known_labels(test)
    if known.all():
        return test, "labeled test rows"
    if known.any():
        return (test.loc[known].reset_index(drop=True),
                f"the {int(known.sum())} labeled test rows ({int((~known).sum())} unlabeled "
                "left out)")
    injected = injected_test_rows(test, features)
    rows = injected.frame.assign(**{LABEL: injected.labels.astype(np.int64),
                                    ANOMALY_TYPE: injected.types})
    return rows, (f"no labeled test row: {injected.events} anomalies injected "
                  f"({', '.join(f'{k} {n}' for k, n in injected.counts().items())})")


def build_evaluation_report_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(
        key=ds.key("evaluation_report"),
        ins=ds.ins("model_bundle", "training_set"),
        kinds={"json", "html"},
        code_version="2",
        group_name=ds.scoped("evaluation"),
        required_resource_keys={"mlflow", ds.registry_key},
    )
    def evaluation_report(
        context: dg.AssetExecutionContext,
        config: EvaluationConfig,
        model_bundle: dict[str, Any],
        training_set: pd.DataFrame,
    ) -> dict[str, Any]:
        """The deployed bundle on the time-ordered test split: metrics at its threshold and
        smoothing policy, event-wise delay and false alarms, baselines on the same rows, plots, and
        a standalone HTML report saved next to the bundle and logged to MLflow."""
        bundle = load_bundle(model_bundle["path"])
        manifest = bundle.manifest
        check_same_training_set(manifest.lineage, training_set)
        test, labels_from = evaluation_rows(split_rows(training_set, "test"),
                                            list(manifest.features))
        # each host continues from its validation rows (just before the test split in time),
        # as a deployed model continues from the day before: a temporal model scores the
        # split's first rows too
        scored = score_frame(dataset_scorer(bundle), test,
                             before=split_rows(training_set, "val"))
        scores = scored["score"].to_numpy(np.float64)
        entities = scored["host_id"].to_numpy() if "host_id" in scored.columns else None
        flags = scored["is_anomaly"].to_numpy()  # the bundle's policy, as deployed
        features = list(manifest.features)
        rule = manifest.threshold_rule
        rendered = build_report(
            title=f"Evaluation of {manifest.name} v{manifest.version} ({manifest.kind})",
            labels=scored[LABEL].to_numpy(),
            scores=scores,
            flags=flags,
            threshold=manifest.threshold,
            train=split_rows(training_set, "train")[features].to_numpy(np.float64),
            val=normal_rows(split_rows(training_set, "val"))[features].to_numpy(np.float64),
            test=test[features].to_numpy(np.float64),
            anomaly_types=scored[ANOMALY_TYPE].to_numpy() if ANOMALY_TYPE in scored else None,
            # tz-aware UTC timestamps -> naive datetime64[ns] (UTC) for numpy arithmetic
            timestamps=(scored[TIMESTAMP].to_numpy(dtype="datetime64[ns]")
                        if TIMESTAMP in scored else None),
            entities=entities,
            baseline_quantile=float(rule.get("quantile", 0.995)),
            baseline_margin=float(rule.get("margin", 1.0)),
            notes=[f"labels: {labels_from}", f"threshold rule {rule.get('rule', '?')}",
                   f"flag policy: {manifest.policy.smoothing.describe()}",
                   f"window {manifest.window or 'none (point-wise)'}",
                   *_per_entity_note(manifest.policy)],
            entity_thresholds=manifest.policy.entity_thresholds,
            seed=config.seed,
        )
        registry = ds.registry(context)
        directory = report_directory(registry.models_dir, manifest.name, manifest.version)
        paths = rendered.write(directory)
        metrics = rendered.report.metrics()
        mlflow = context.resources.mlflow
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_metrics({f"baseline_{b.name}_{k}": float(getattr(b.report, k))
                            for b in rendered.baselines for k in ("pr_auc", "roc_auc", "f1")})
        mlflow.log_artifacts(str(directory), artifact_path="evaluation")
        context.add_output_metadata(
            {
                "model_version": manifest.version,
                "labels": labels_from,
                **{k: float(metrics[k]) for k in HEADLINE if k in metrics},
                "unscored_rows": rendered.unscored_rows,
                "report": dg.MetadataValue.md(rendered.metadata_markdown()),
                "report_html": dg.MetadataValue.path(str(paths["report.html"])),
            }
        )
        groups = {}
        if "top_group" in scored.columns:  # declared feature groups (ds_serving.groups)
            breakdown = group_breakdown(
                scored["top_group"].to_numpy(), flags, scored[LABEL].to_numpy(),
                scored[ANOMALY_TYPE].to_numpy() if ANOMALY_TYPE in scored else None)
            groups = {"feature_groups": breakdown}
            context.add_output_metadata({"feature_groups": dg.MetadataValue.md(markdown_table(
                pd.DataFrame([{k: v for k, v in g.items() if k != "anomaly_types"}
                              for g in breakdown])))})
        return {"model": model_bundle, **rendered.to_dict(), **groups,
                "report_html": str(paths["report.html"])}

    return evaluation_report


class ChampionConfig(dg.Config):
    """Shadow scoring before promotion: a challenger that passes the gate scores this many next
    days beside the champion, without serving, before the verdict (ds_assets.training.shadow).
    None: DS_SHADOW_DAYS (2) for drift-triggered retrains, 0 (promote at once) otherwise."""

    shadow_days: int | None = None


def shadow_days(config: ChampionConfig, tags: Mapping[str, str]) -> int:
    if config.shadow_days is not None:
        if config.shadow_days < 0:
            raise ValueError(f"champion config shadow_days={config.shadow_days}: use 0 (promote "
                             "at once) or a number of days")
        return config.shadow_days
    if tags.get("datasentinel/trigger") == "drift":
        return int(os.environ.get("DS_SHADOW_DAYS", "2"))
    return 0


def build_champion_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(
        key=ds.key("champion"),
        ins=ds.ins("model_bundle", "evaluation_report", "training_set"),
        kinds={"json"},
        code_version="1",
        group_name=ds.scoped("evaluation"),
        required_resource_keys={ds.registry_key, PIPELINE_METRICS_KEY},
    )
    @ds.with_defaults("champion")
    def champion(
        context: dg.AssetExecutionContext,
        config: ChampionConfig,
        model_bundle: dict[str, Any],
        evaluation_report: dict[str, Any],
        training_set: pd.DataFrame,
    ) -> dict[str, Any]:
        """The promotion gate: challenger and champion on the same held-out test rows (both
        re-scored here; rows either leaves unscored, or the champion was fitted on, are left out),
        judged on labeled anomalies where the rows have some, else on anomalies injected into
        them, and on each model's false alarms at its own policy (ds_assets.training.gate). The
        decision and both models' numbers go to metadata, champion.json and MLflow."""
        registry = ds.registry(context)
        test = split_rows(training_set, "test")
        features = list(load_bundle(model_bundle["path"]).manifest.features)
        injected = injected_test_rows(test, features)
        before = split_rows(training_set, "val")  # each host's rows before the test split
        challenger = ModelRun.of(model_bundle["path"], test, injected, before)
        incumbent, unseen, excluded = None, None, 0
        broken = ""  # why the serving champion cannot be judged (it cannot serve either)
        try:
            current = registry.champion_version()
            if current is not None and current != model_bundle["version"]:
                incumbent_path = registry.bundle_path(current)
                gone = [f for f in load_bundle(incumbent_path).manifest.features
                        if f not in test.columns]
                if gone:  # the declaration dropped a feature it reads: it cannot score on
                    raise BundleError(f"champion v{current} reads feature(s) {gone}, which "
                                      "the training rows no longer have")
                incumbent = ModelRun.of(incumbent_path, test, injected, before)
        except BundleError as exc:
            broken = str(exc)
            context.log.warning(f"the champion cannot serve, so the challenger is judged "
                                f"as if there were none: {exc}")
        if incumbent is not None:
            unseen = rows_after_fit(incumbent_path, test[TIMESTAMP])
            if unseen is None:
                context.log.warning(f"champion v{current} has no fit window in its lineage; it is "
                                    "compared on every test row")
            else:
                excluded = int((~unseen).sum())
        decision = judge(challenger, incumbent, test, injected, eligible=unseen,
                         excluded_rows=excluded)
        if broken:
            decision = dataclasses.replace(
                decision, reason=f"the champion cannot serve ({broken[:300]}); "
                                 f"{decision.reason}")
        run_id = model_bundle.get("mlflow_run_id")
        registry.log_report(run_id, evaluation_report)
        registry.log_decision(run_id, decision)
        shadow = shadow_days(config, context.run.tags)
        candidate = None
        if decision.promote and shadow > 0 and incumbent is not None:
            lineage = load_bundle(model_bundle["path"]).manifest.lineage
            candidate = open_candidate(
                registry.models_dir, registry.model_name, decision.challenger_version,
                incumbent.version, str(lineage["partitions"][-1]), shadow, decision.to_dict())
            context.log.info(f"v{candidate.version} passed the gate ({decision.reason}); it "
                             f"scores the {shadow} day(s) after {candidate.after} in shadow "
                             f"beside v{incumbent.version} before its verdict")
            aliased = None
        else:
            aliased = registry.promote(decision, model_bundle.get("mlflow_model_version"))
            context.log.info(f"promotion decision: {decision.reason}")
        serving = registry.champion_version()
        details = decision.details or {}
        table = pd.DataFrame([{"model": side, **{k: v for k, v in details[side].items()}}
                              for side in ("challenger", "champion") if side in details])
        context.add_output_metadata(
            {
                "promoted": decision.promote and candidate is None,
                "shadow": (f"v{candidate.version} in shadow for {candidate.days} day(s) after "
                           f"{candidate.after}" if candidate is not None else "none"),
                "reason": decision.reason,
                "evidence": decision.evidence,
                "champion_version": serving or "",
                "challenger_version": decision.challenger_version,
                "challenger_pr_auc": decision.challenger_pr_auc,
                "previous_champion_version": decision.champion_version or "",
                "previous_champion_pr_auc": (
                    decision.champion_pr_auc if decision.champion_pr_auc is not None
                    else float("nan")
                ),
                "compared_test_rows": decision.compared_rows or 0,
                "excluded_in_sample_rows": excluded,
                "gate": dg.MetadataValue.md(markdown_table(table)),
                "decision": dg.MetadataValue.json(decision.to_dict()),
                "mlflow_champion_version": aliased or registry.champion_alias_version() or "",
            }
        )
        push_champion(context, ds.name, serving)
        return {"name": registry.model_name, "version": serving, "decision": decision.to_dict(),
                "candidate": candidate.to_dict() if candidate is not None else None}

    return champion


def _per_entity_note(policy: ScoringPolicy) -> list[str]:
    if not policy.per_entity:
        return []
    return [f"each host is flagged against its own threshold ({len(policy.entity_thresholds)} "
            f"calibrated; {policy.threshold:.6g} for the others, the one shown as the deployed "
            "threshold and in the histogram; the time series draws its host's own); baselines "
            "use one threshold each"]
