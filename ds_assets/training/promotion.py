"""Champion/challenger promotion and the MLflow model registry mirror.

A challenger replaces the champion only if it *beats* it on PR-AUC computed on the same held-out
test rows (the rows both models score: a temporal model leaves each entity's first W-1 rows
unscored). Promotion writes the local ``champion.json`` (what the scorer serves) and moves the
MLflow alias ``champion`` to the challenger's registered model version.

MLflow is used through an explicit ``MlflowClient`` (tracking URI + run id): nothing here depends
on a process-global active run.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ds_serving import bundle as bundles
from ds_serving import jsonio
from ds_serving.policy import ENTITIES_KEY

CHAMPION_ALIAS = "champion"
BUNDLE_VERSION_TAG = "bundle_version"
PIP_REQUIREMENTS = ["onnx", "onnxruntime", "numpy"]


@dataclass(frozen=True)
class Burden:
    """False-alarm load of a model on real rows at its own deployed policy."""

    flag_rate: float  # flagged share of the rows not known to be anomalous
    alerts_per_entity_day: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    challenger_version: str
    challenger_pr_auc: float
    champion_version: str | None
    champion_pr_auc: float | None
    compared_rows: int | None = None
    excluded_rows: int = 0  # test rows the champion was fitted on, left out of the comparison
    # what the PR-AUCs were computed on: "labels" (labeled test rows) or "injected" (anomalies
    # injected into the test rows, when no labeled anomaly is among them)
    evidence: str = "labels"
    details: dict[str, Any] | None = None  # both models' numbers on every kind of evidence

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Gate tolerances. A challenger with at least RELIEF_RATIO x fewer false alarms (and at least
#: BURDEN_SLACK fewer of the rows: 0 against 0, or 1 row against 2, is no relief) is promoted if
#: its PR-AUC is within PR_AUC_TOLERANCE of the champion's; one that beats the champion's PR-AUC
#: is refused if it raises more than BURDEN_RATIO x the champion's false alarms (and at least
#: BURDEN_SLACK more of the rows): a better ranking is not worth an alert storm.
RELIEF_RATIO = 2.0
#: A first model that flags more than this share of the test rows not known to be anomalous
#: is no champion: it flags nearly everything, so its alerts carry no signal. Set high: where
#: anomalies are common a useful model can flag half the normal rows (SKAB held out: 41-51 %).
MAX_FIRST_FLAG_RATE = 0.9
PR_AUC_TOLERANCE = 0.05
BURDEN_RATIO = 2.0
BURDEN_SLACK = 0.005


def decide_promotion(
    challenger_version: str,
    challenger_pr_auc: float,
    champion_version: str | None,
    champion_pr_auc: float | None,
    min_improvement: float = 0.0,
    compared_rows: int | None = None,
    excluded_rows: int = 0,
    *,
    evidence: str = "labels",
    challenger_burden: Burden | None = None,
    champion_burden: Burden | None = None,
    details: Mapping[str, Any] | None = None,
) -> PromotionDecision:
    """One rule, whatever the evidence (labeled or injected anomalies), on test rows neither
    model was fitted on: promote when there is no champion; when the challenger's PR-AUC beats
    the champion's plus ``min_improvement`` without raising the false-alarm burden past
    BURDEN_RATIO; or when it cuts false alarms RELIEF_RATIO-fold at a PR-AUC within
    PR_AUC_TOLERANCE (the case after drift, where the old model flags everything)."""
    def decision(promote: bool, reason: str) -> PromotionDecision:
        return PromotionDecision(
            promote, reason, challenger_version, challenger_pr_auc, champion_version,
            champion_pr_auc, compared_rows, excluded_rows, evidence,
            dict(details) if details is not None else None,
        )

    on = f"PR-AUC ({evidence})"
    if champion_version is None:
        if challenger_burden is not None and challenger_burden.flag_rate > MAX_FIRST_FLAG_RATE:
            rows = "" if compared_rows is None else f" of the {compared_rows:,} test rows"
            return decision(
                False,
                f"no current champion, and this model would make none: it flags "
                f"{challenger_burden.flag_rate:.1%}{rows} not known to be anomalous (more than "
                f"{MAX_FIRST_FLAG_RATE:.0%}), so its threshold does not hold after its training "
                "rows. Train on more days, check that the test days look like the training "
                "days, or raise the policy's quantile or margin, then materialize again",
            )
        return decision(True, "no current champion")
    if champion_version == challenger_version:
        return decision(False, "challenger is already the champion")
    if excluded_rows and not compared_rows:
        return decision(
            False,
            f"no test row is both after the champion's training window and scored by both "
            f"models ({excluded_rows} lie inside that window), so the champion cannot be judged; "
            "retrain on data newer than the champion's",
        )
    if math.isnan(challenger_pr_auc):
        return decision(False, f"challenger {on} is undefined (test rows have no anomalies)")
    if champion_pr_auc is None or math.isnan(champion_pr_auc):
        return decision(True, f"champion {on} is undefined on these test rows")
    mine, theirs = challenger_burden, champion_burden
    if mine is not None and theirs is not None:
        if (mine.flag_rate * RELIEF_RATIO <= theirs.flag_rate
                and theirs.flag_rate - mine.flag_rate >= BURDEN_SLACK
                and challenger_pr_auc >= champion_pr_auc - PR_AUC_TOLERANCE):
            return decision(
                True,
                f"challenger flags {mine.flag_rate:.4f} of rows vs champion {theirs.flag_rate:.4f}"
                f" (>= {RELIEF_RATIO:g}x fewer false alarms) at {on} {challenger_pr_auc:.4f} vs "
                f"{champion_pr_auc:.4f}"
                + (" (higher)" if challenger_pr_auc > champion_pr_auc
                   else f" (within {PR_AUC_TOLERANCE})"),
            )
        if mine.flag_rate > max(theirs.flag_rate * BURDEN_RATIO, theirs.flag_rate + BURDEN_SLACK):
            return decision(
                False,
                f"challenger flags {mine.flag_rate:.4f} of rows vs champion {theirs.flag_rate:.4f}"
                f" (more than {BURDEN_RATIO:g}x the false alarms), whatever its {on} "
                f"{challenger_pr_auc:.4f} vs {champion_pr_auc:.4f}",
            )
    bar = champion_pr_auc + min_improvement
    verdict = ">" if challenger_pr_auc > bar else ("==" if challenger_pr_auc == bar else "<")
    return decision(
        verdict == ">",
        f"challenger {on} {challenger_pr_auc:.4f} {verdict} champion {champion_pr_auc:.4f}"
        f" + {min_improvement}",
    )


#: Lineage key of a bundle: the time of the last train/validation row it was fitted on.
FIT_END_KEY = "fit_rows_end"


def fit_rows_end(training_set: Any) -> str:
    """ISO time of the last train/validation row: what a later comparison must not reuse."""
    fitted = pd.to_datetime(training_set.loc[training_set["split"] != "test", "timestamp"],
                            utc=True)  # naive times are UTC, as everywhere in the graph
    return str(fitted.max().isoformat())


def rows_after_fit(bundle_path: str | Path, timestamps: Any) -> np.ndarray | None:
    """Mask of the rows after the bundle's fit window (None when its lineage lacks it: bundles
    written before it was recorded), so it is never judged on rows it was trained on."""
    lineage = bundles.load_bundle(bundle_path).manifest.lineage
    end = lineage.get(FIT_END_KEY)
    if not end:
        return None
    cutoff = pd.Timestamp(end)
    if cutoff.tzinfo is None:
        cutoff = cutoff.tz_localize("UTC")
    return np.asarray(pd.to_datetime(timestamps, utc=True) > cutoff, dtype=bool)


class RollbackError(ValueError):
    """A rollback that cannot be done; the message says why and what exists."""


def rollback_decision(models_dir: str | Path, name: str, version: str, reason: str
                      ) -> PromotionDecision:
    """The decision that re-points the champion to an earlier ``version`` for ``reason``;
    refused (naming what exists) for an unknown or broken version, the serving one, or no
    reason. The bundle is verified (hashes, graph) before anything changes."""
    try:
        current = bundles.champion_version(models_dir, name)
    except bundles.BundleError:  # a damaged pointer is what a rollback repairs
        current = None
    if not reason.strip():
        raise RollbackError("a rollback needs a reason (it is recorded in champion.json, the "
                            "MLflow tag and the champion's metadata)")
    if version == current:
        raise RollbackError(f"v{version} of {name} is already the champion")
    root = bundles.model_dir(models_dir, name)
    found = root.iterdir() if root.is_dir() else iter(())
    known = sorted((p.name for p in found if p.is_dir() and not p.name.startswith(".")),
                   key=lambda v: (len(v), v))
    if version not in known:
        raise RollbackError(f"{name} has no version {version!r}; versions: {known}")
    try:
        bundles.load_version(models_dir, name, version)
    except bundles.BundleError as exc:
        raise RollbackError(f"v{version} cannot serve: {exc}") from exc
    return PromotionDecision(
        promote=True, reason=f"rollback from v{current or '-'}: {reason.strip()}",
        challenger_version=version, challenger_pr_auc=float("nan"), champion_version=current,
        champion_pr_auc=None)


# --------------------------------------------------------------------------------------------
# MLflow registry mirror


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _flat(prefix: str, data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(f"{name}.", value))
        elif isinstance(value, list | tuple):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = value
    return out


def log_bundle(
    tracking_uri: str,
    run_id: str,
    bundle: bundles.Bundle,
    registered_name: str,
    *,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
) -> str:
    """Log a bundle to an MLflow run (params, metrics, ONNX model flavour, bundle files) and
    register it as a model version tagged with the bundle version; returns that version."""
    import mlflow.onnx
    import onnx
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    run = client.get_run(run_id)
    m = bundle.manifest
    logged = run.data.params
    # per-entity thresholds stay in the bundle's manifest (logged as a file below): one param
    # per host would be thousands, and MLflow refuses names with characters ids may hold
    rule = {k: v for k, v in m.threshold_rule.items() if k != ENTITIES_KEY}
    all_params = _flat("", {**(params or {}), "threshold": m.threshold,
                            "threshold_rule": rule, "smoothing": m.smoothing,
                            "bundle_version": m.version, "kind": m.kind,
                            "window": m.window if m.window is not None else "none"})
    # MLflow params are immutable: log only the ones this run does not hold yet
    values = {k: str(v)[:6000] for k, v in all_params.items()}
    new = [Param(k, v) for k, v in values.items() if k not in logged]
    clashes = sorted(k for k, v in values.items() if k in logged and logged[k] != v)
    if clashes:
        client.set_tag(run_id, "param_clashes", ",".join(clashes)[:5000])
    now = int(time.time() * 1000)
    metric_rows = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()
                   if v is not None and math.isfinite(float(v))]
    client.log_batch(run_id, metrics=metric_rows, params=new)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        mlflow.onnx.save_model(
            onnx.load_from_string(bundle.model_bytes()), str(model_dir),
            pip_requirements=PIP_REQUIREMENTS,  # explicit: inference spawns a slow subprocess
        )
        client.log_artifacts(run_id, str(model_dir), "model")
    client.log_artifacts(run_id, str(bundle.path), f"bundle/{m.version}")
    try:
        client.get_registered_model(registered_name)
    except MlflowException:  # RESOURCE_DOES_NOT_EXIST: the first bundle of this name
        client.create_registered_model(
            registered_name, description="DataSentinel detector bundles (ONNX scoring graphs)"
        )
    version = client.create_model_version(
        registered_name,
        source=f"{run.info.artifact_uri}/model",
        run_id=run_id,
        tags={BUNDLE_VERSION_TAG: m.version, "kind": m.kind},
        description=f"bundle {m.name} v{m.version} ({m.kind})",
    )
    return str(version.version)


def log_report(tracking_uri: str, run_id: str, report: Mapping[str, Any],
               artifact: str = "report/evaluation_report.json") -> None:
    """Attach an evaluation report (JSON) to the run that trained the bundle."""
    payload = json.loads(jsonio.dumps(report, default=str))  # NaN -> null: standard JSON
    _client(tracking_uri).log_dict(run_id, payload, artifact)


def log_decision(tracking_uri: str, run_id: str, decision: PromotionDecision) -> None:
    """The gate's decision (rule, evidence, both models' numbers) on the challenger's run: a
    JSON artifact, and its numbers as ``gate_<side>_<name>`` metrics."""
    from mlflow.entities import Metric

    log_report(tracking_uri, run_id, decision.to_dict(), "report/promotion_decision.json")
    details = decision.details or {}
    now = int(time.time() * 1000)
    metrics = [Metric(f"gate_{side}_{k}", float(v), now, 0)
               for side in ("challenger", "champion")
               for k, v in dict(details.get(side) or {}).items()
               if isinstance(v, int | float) and math.isfinite(float(v))]
    client = _client(tracking_uri)
    client.log_batch(run_id, metrics=metrics)
    client.set_tag(run_id, "promotion_decision",
                   f"{'promoted' if decision.promote else 'refused'}: {decision.reason}"[:5000])


def model_version_for_bundle(
    tracking_uri: str, registered_name: str, bundle_version: str
) -> str | None:
    """The registered model version that mirrors a local bundle version, if any."""
    client = _client(tracking_uri)
    found = client.search_model_versions(
        f"name='{registered_name}' and tag.{BUNDLE_VERSION_TAG}='{bundle_version}'"
    )
    return str(max(int(v.version) for v in found)) if found else None


def champion_alias_version(tracking_uri: str, registered_name: str) -> str | None:
    """The registered model version the ``champion`` alias points at, if any."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        return str(client.get_model_version_by_alias(registered_name, CHAMPION_ALIAS).version)
    except MlflowException:  # no such registered model, or no alias yet
        return None


def promote_bundle(
    models_dir: str | Path,
    name: str,
    decision: PromotionDecision,
    *,
    tracking_uri: str | None = None,
    mlflow_version: str | None = None,
) -> str | None:
    """Apply a positive decision: ``champion.json`` first (what serves), then the MLflow alias.
    Returns the MLflow version the alias now points at (None when nothing was promoted or
    there is no MLflow)."""
    if decision.promote:
        bundles.promote(models_dir, name, decision.challenger_version, details=decision.to_dict())
    elif bundles.champion_version(models_dir, name) != decision.challenger_version:
        return None
    # For a challenger that already serves, (re)point the alias too: this repairs an earlier
    # attempt that moved champion.json but failed before the MLflow alias moved.
    if tracking_uri is None:
        return None
    version = mlflow_version or model_version_for_bundle(
        tracking_uri, name, decision.challenger_version
    )
    if version is None:
        raise LookupError(
            f"bundle {name} v{decision.challenger_version} has no registered MLflow model "
            "version; log it with log_bundle before promoting"
        )
    client = _client(tracking_uri)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    client.set_model_version_tag(name, version, "promotion", decision.reason[:5000])
    return version
