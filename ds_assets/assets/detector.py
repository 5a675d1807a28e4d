"""Training set -> detector (any family) -> ONNX graph (parity-checked) -> model bundle
(threshold + smoothing policy, registered in MLflow) -> TensorRT engine (GPU only).

Each asset is wiring around the plain modules in ds_assets (datasets, detectors, export,
thresholds, tensorrt_build, promotion) and ds_serving (bundle, scoring, smoothing).
"""


import datetime as dt
from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Any, Literal

import dagster as dg
import numpy as np
import pandas as pd

from ds_assets.assets.telemetry import partitions_failing_checks
from ds_assets.dataset import Dataset
from ds_assets.reporting.analytics import markdown_table
from ds_assets.resources.io_manager import OnnxGraph, PartitionFrames
from ds_assets.resources.pipeline_metrics import PIPELINE_METRICS_KEY, pipeline_metrics
from ds_assets.telemetry.schema import LABEL, LABEL_KNOWN, TIMESTAMP, feature_columns
from ds_assets.training import evaluated_default
from ds_assets.training.bundling import (
    build_bundle,
    entities_of,
    features_of,
    row_scores,
    unlabeled_rows,
)
from ds_assets.training.contamination import (
    DEFAULT_SHARE,
    MAX_FLAG_RATE,
    champion_screen,
    check_enough_left,
    trim_top,
)
from ds_assets.training.datasets import (
    DatasetError,
    build_training_set,
    normal_rows,
    select_window,
    split_rows,
    window_reach,
)
from ds_assets.training.detectors import (
    DetectorParams,
    TrainedDetector,
    train_detector,
)
from ds_assets.training.tensorrt_build import (
    attach_engine,
    compile_and_check,
    graph_reason,
    unavailable_reason,
)
from ds_assets.training.thresholds import MIN_ENTITY_ROWS
from ds_serving.alerting import AlertPolicy, AlertPolicyError
from ds_serving.bundle import load_bundle
from ds_serving.smoothing import Rebaseline, Smoothing
from ds_serving.threads import TRAINING, thread_policy
from ds_serving.windows import window_index

CODE_VERSION = "3"  # 3: temporal AE default, fresh training sample each epoch
PARITY_ROWS = 4096


class TrainingWindowConfig(dg.Config):
    """Which materialized days train the model, and how they split by time."""

    n_partitions: int = 7
    end_partition: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # keep the validation split's labeled anomalies, so the `auto` threshold rule calibrates
    # best-F1 on them (early stopping and quantile thresholds still use its normal rows)
    labeled_validation: bool = False
    # days without labels (production telemetry): "train" on them, screened for anomalies
    # (ds_assets.training.contamination), or "leave_out" as before they could be
    unlabeled_days: Literal["train", "leave_out"] = "train"
    # the champion's flags screen an unlabeled day only where it flags at most this share
    champion_max_flag_rate: float = MAX_FLAG_RATE
    # refuse a window where screening keeps less than this share of its unlabeled rows
    min_kept_share: float = 0.5


def screen_unlabeled_days(
    context: dg.AssetExecutionContext, ds: Dataset, frames: dict[str, pd.DataFrame],
    max_flag_rate: float, window: Mapping[str, pd.DataFrame] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Each unlabeled day's rows the serving champion flags (with their alert episodes),
    each day continuing from the day before where ``window`` (the window's days) holds it."""
    registry = ds.registry(context)
    current = registry.champion_version()
    path = registry.bundle_path(current) if current is not None else None
    masks, reports = {}, {}
    for day, frame in frames.items():
        before = (window or {}).get(
            (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat())
        masks[day], reports[day] = champion_screen(path, frame, max_flag_rate, before)
        context.log.info(f"unlabeled {day}: {reports[day]['reason']} "
                         f"({reports[day]['excluded_rows']} rows left out)")
    return masks, reports


def build_training_set_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(
        key=ds.key("training_set"),
        ins={"raw_telemetry": dg.AssetIn(ds.key("raw_telemetry"),
                                         metadata={"allow_missing_partitions": True})},
        kinds={"pandas", "parquet"},
        code_version="2",
        group_name=ds.scoped("training"),
        required_resource_keys={ds.registry_key},
    )
    @ds.with_defaults("training_set")
    def training_set(
        context: dg.AssetExecutionContext,
        config: TrainingWindowConfig,
        raw_telemetry: PartitionFrames,
    ) -> pd.DataFrame:
        """Normal rows of a window of days, split train | val | test by time (test keeps anomalies,
        validation too when configured). Unlabeled days train too, screened for anomalies.

        Days whose raw data failed a blocking check are left out, so a retrain requested later by a
        sensor or schedule never learns from data that failed validation."""
        failing = partitions_failing_checks(context.instance, list(raw_telemetry), ds)
        for day, checks in failing.items():
            context.log.warning(
                f"leaving out raw_telemetry {day}: failed blocking check(s) {checks}")
        # from each day's schema: reading every stored day in full cost the whole history
        unlabeled = sorted(d for d in raw_telemetry if d not in failing
                           and LABEL not in raw_telemetry.columns(d))
        left_out = unlabeled if config.unlabeled_days == "leave_out" else []
        if left_out:
            context.log.warning(f"leaving out unlabeled raw_telemetry days {left_out}")
        usable = [day for day in raw_telemetry if day not in failing and day not in left_out]
        if (failing or left_out) and not any(d <= (config.end_partition or d) for d in usable):
            raise DatasetError(
                f"no raw_telemetry partition in the window can be trained on: failed blocking "
                f"checks {failing}, unlabeled days left out {left_out}; fix the source data, or "
                "train on unlabeled days (unlabeled_days: train)"
            )
        keys = select_window(usable, config.n_partitions, config.end_partition)
        reach = window_reach(keys, config.n_partitions, config.end_partition)
        if reach:
            context.log.warning(reach)
        frames = {k: raw_telemetry[k] for k in keys}
        masks, screens = screen_unlabeled_days(
            context, ds, {k: f for k, f in frames.items() if LABEL not in f.columns},
            config.champion_max_flag_rate, frames)
        data = build_training_set(
            frames, config.val_fraction, config.test_fraction,
            labeled_validation=config.labeled_validation, screened=masks,
        )
        if masks:  # train/val rows of unlabeled days before and after screening
            test_start = data.loc[data["split"] == "test", TIMESTAMP].min()
            total = sum(int((pd.to_datetime(frames[d][TIMESTAMP], utc=True) < test_start).sum())
                        for d in masks)
            kept = int(((data["split"] != "test") & ~data[LABEL_KNOWN]).sum())
            check_enough_left(kept, total, config.min_kept_share, "training_set")
        counts = data.groupby("split")[LABEL].agg(["size", "sum"]).reset_index()
        counts.columns = ["split", "rows", "anomalies"]
        counts["unlabeled"] = [int((~data.loc[data["split"] == s, LABEL_KNOWN]).sum())
                               for s in counts["split"]]
        context.add_output_metadata(
            {
                "partitions": dg.MetadataValue.json(keys),
                "excluded_partitions": dg.MetadataValue.json(failing),
                "unlabeled_partitions": dg.MetadataValue.json(sorted(masks)),
                "left_out_unlabeled_partitions": dg.MetadataValue.json(left_out),
                "champion_screen": dg.MetadataValue.json(screens),
                "rows": len(data),
                "splits": dg.MetadataValue.md(markdown_table(counts)),
            }
        )
        return data

    return training_set


class Family(Enum):
    """Detector families (a dropdown in the launchpad); names match ``detectors.FAMILIES``."""

    dense_ae = "dense_ae"
    temporal_ae = "temporal_ae"
    pca = "pca"
    fused = "fused"
    window_knn = "window_knn"


_DEFAULTS = DetectorParams()


class DetectorConfig(dg.Config):
    """Detector family and hyper-parameters (editable in the launchpad); fields of other
    families are ignored. The family is the one ``make eval`` chose on data it was not tuned on
    (``training.evaluated_default``); defaults and validation come from
    ``detectors.DetectorParams``."""

    family: Family = Family(evaluated_default.FAMILY)
    seed: int = _DEFAULTS.seed
    # autoencoders
    epochs: int = _DEFAULTS.epochs
    batch_size: int = _DEFAULTS.batch_size
    learning_rate: float = _DEFAULTS.learning_rate
    weight_decay: float = _DEFAULTS.weight_decay
    patience: int = _DEFAULTS.patience
    min_delta: float = _DEFAULTS.min_delta
    # rows (dense) or windows (temporal) per epoch, a fresh sample each; 0: the family's default
    max_train_rows: int = 0
    # each feature's error in units of its mean validation error: none | validation
    error_scale: str = _DEFAULTS.error_scale
    hidden: list[int] = list(_DEFAULTS.hidden)  # dense_ae
    # temporal_ae
    window: int = _DEFAULTS.window
    channels: list[int] = list(_DEFAULTS.channels)
    kernel_size: int = _DEFAULTS.kernel_size
    latent: int = _DEFAULTS.latent
    temporal_score: str = _DEFAULTS.temporal_score  # window_mean | last_row | recent
    recent_half_life: float = _DEFAULTS.recent_half_life  # rows (temporal_score: recent)
    # flat-line term for stuck sensors: quantile of training window spread (None: off), weight
    flatline_quantile: float | None = _DEFAULTS.flatline_quantile
    flatline_weight: float = _DEFAULTS.flatline_weight
    # pca
    explained_variance: float = _DEFAULTS.explained_variance
    max_components: int | None = _DEFAULTS.max_components
    pca_combine: str = _DEFAULTS.pca_combine  # max | sum
    t2_weight: float = _DEFAULTS.t2_weight
    scale_quantile: float = _DEFAULTS.scale_quantile
    # fused (z-score + pca + temporal_ae with the fields above)
    fusion_quantile: float = _DEFAULTS.fusion_quantile
    # window_knn: distance to the nearest training window at each scale (rows); its window is
    # the largest scale
    scales: list[int] = list(_DEFAULTS.scales)
    scale_points: int = _DEFAULTS.scale_points
    bank_size: int = _DEFAULTS.bank_size
    # where autoencoders train (not part of the model): auto = CUDA where torch sees a GPU
    device: str = "auto"  # auto | cpu | cuda
    # expected share of anomalous rows in unlabeled days: that share of them, the highest by
    # the first fit's score, is dropped and the model fitted again (training.contamination)
    contamination: float = DEFAULT_SHARE

    def params(self) -> DetectorParams:
        fields = self.model_dump(exclude={"device", "contamination"})
        return DetectorParams(**{**fields, "family": self.family.value})


def training_metadata(trained: TrainedDetector) -> dict[str, Any]:
    """Materialization metadata of a training run (seed, epochs, loss curve, wall time, rows)."""
    s = trained.training_summary
    meta: dict[str, Any] = {
        "family": trained.family,
        "kind": trained.kind,
        "seed": s["seed"],
        "epochs_run": s["epochs_run"],
        "best_epoch": s["best_epoch"],
        "best_val_loss": float(s["best_val_loss"]),
        "stopped_early": s["stopped_early"],
        "train_rows": s["train_rows"],
        "val_rows": s["val_rows"],
        "device": s["device"],
        "wall_time_s": s["wall_time_s"],
        "window": trained.window if trained.window is not None else "none",
        "params": dg.MetadataValue.json(s["params"]),
        "loss_curve_summary": dg.MetadataValue.json(s["loss_curve"]),
    }
    if "contamination" in s:
        meta["contamination"] = dg.MetadataValue.json(s["contamination"])
    if "train_windows" in s:
        meta.update(train_windows=s["train_windows"], val_windows=s["val_windows"])
    if trained.family == "pca":
        meta.update(n_components=s["n_components"],
                    explained_variance_ratio=s["explained_variance_ratio"])
    elif trained.family == "window_knn":
        meta.update(bank_windows=s["bank_windows"],
                    scales=dg.MetadataValue.json(s["scales"]))
    else:
        curve = pd.DataFrame({"epoch": range(len(s["val_loss"])), "train_loss": s["train_loss"],
                              "val_loss": s["val_loss"]})
        meta["loss_curve"] = dg.MetadataValue.md(markdown_table(curve))
    return meta


def refit_without_top_share(
    first: TrainedDetector, fit: Any, train: pd.DataFrame, val: pd.DataFrame, share: float
) -> TrainedDetector:
    """Fit again without the top ``share`` of the unlabeled train and validation rows by the
    first fit's score (iterated once; no refit when no training row is unlabeled); what was
    dropped goes into the training summary, and the bundle trims its validation rows alike."""
    # torch (3 s to import) is imported where a step fits or exports a model, not by the code
    # location that run workers, code servers and the CLI load (tests/assets/
    # test_code_location_runs.py: test_loading_the_code_location_imports_no_compute_library)
    from ds_assets.training.export import export_onnx

    graph = export_onnx(first)
    keep_train = trim_top(row_scores(graph, first, train), unlabeled_rows(train), share)
    keep_val = trim_top(row_scores(graph, first, val), unlabeled_rows(val), share)
    refit = not keep_train.all()
    trained: TrainedDetector = (
        fit(train.loc[keep_train].reset_index(drop=True), val.loc[keep_val].reset_index(drop=True))
        if refit else first)
    trained.training_summary["contamination"] = {
        "share": share,
        "unlabeled_train_rows": int(unlabeled_rows(train).sum()),
        "unlabeled_val_rows": int(unlabeled_rows(val).sum()),
        "trimmed_train_rows": int((~keep_train).sum()),
        "trimmed_val_rows": int((~keep_val).sum()),
        "refit": refit,
        "first_fit_wall_time_s": first.training_summary["wall_time_s"] if refit else 0.0,
        "reason": f"top {share:.1%} of the unlabeled rows by the first fit's score",
    }
    return trained


def build_detector_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(
        key=ds.key("detector"),
        ins=ds.ins("training_set"),
        kinds={"pytorch"},
        code_version=CODE_VERSION,
        pool="gpu",
        group_name=ds.scoped("training"),
        required_resource_keys={"mlflow", PIPELINE_METRICS_KEY},
    )
    @ds.with_defaults("detector")
    def detector(
        context: dg.AssetExecutionContext, config: DetectorConfig, training_set: pd.DataFrame
    ) -> TrainedDetector:
        """A detector of the configured family fitted on normal train rows (autoencoders are
        early-stopped on validation loss); training facts go to metadata and MLflow."""
        from ds_assets.training.networks import pick_device

        params = config.params()  # a config that cannot work fails here, before any training
        device = pick_device(config.device)
        threads = thread_policy(TRAINING)
        features = feature_columns(training_set)
        train, val = split_rows(training_set, "train"), normal_rows(split_rows(training_set, "val"))

        def fit(train: pd.DataFrame, val: pd.DataFrame) -> TrainedDetector:
            return train_detector(
                params, features_of(train, features), features_of(val, features), features,
                train_entities=entities_of(train), val_entities=entities_of(val), device=device,
                threads=threads.threads,
            )

        trained = fit(train, val)
        if config.contamination > 0 and (unlabeled_rows(train).any()
                                         or unlabeled_rows(val).any()):
            trained = refit_without_top_share(trained, fit, train, val, config.contamination)
            context.log.info(f"contamination screen: {trained.training_summary['contamination']}")
        s = trained.training_summary
        mlflow = context.resources.mlflow
        mlflow.log_params({**{k: (",".join(map(str, v)) if isinstance(v, list) else v)
                              for k, v in s["params"].items()},
                           "features": ",".join(features), "kind": trained.kind,
                           "train_rows": s["train_rows"], "val_rows": s["val_rows"]})
        for epoch, (tl, vl) in enumerate(zip(s.get("train_loss", []), s.get("val_loss", []),
                                             strict=True)):
            mlflow.log_metrics({"train_loss": tl, "val_loss": vl}, step=epoch)
        mlflow.log_metrics({"best_val_loss": float(s["best_val_loss"]),
                            "epochs_run": s["epochs_run"], "train_wall_time_s": s["wall_time_s"]})
        context.add_output_metadata({**training_metadata(trained),
                                     "threads": dg.MetadataValue.json(threads.to_dict())})
        pipeline_metrics(context).push(ds.name, "training",
                                       {"training_seconds": float(s["wall_time_s"])})
        return trained

    return detector


def build_onnx_model_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(key=ds.key("onnx_model"), ins=ds.ins("detector"), kinds={"onnx"},
              code_version=CODE_VERSION, group_name=ds.scoped("training"))
    def onnx_model(context: dg.AssetExecutionContext, detector: TrainedDetector) -> OnnxGraph:
        """The scoring graph: normalization, model and score inside one ONNX model."""
        from ds_assets.training.export import OPSET, export_onnx, input_shape

        graph = OnnxGraph(export_onnx(detector))
        context.add_output_metadata({
            "opset": OPSET,
            "bytes": len(graph.data),
            "family": detector.family,
            "input_shape": str(["batch", *input_shape(detector, 1)[1:]]),
        })
        return graph

    return onnx_model


def parity_inputs(training_set: pd.DataFrame, trained: TrainedDetector) -> np.ndarray:
    """Validation and test rows (anomalies included) as model inputs, capped: rows for
    point-wise models, per-entity windows for temporal ones."""
    rows = training_set.loc[training_set["split"] != "train"]
    x = features_of(rows, trained.features)
    if trained.window is not None:
        keys = entities_of(rows)
        index = window_index(np.zeros(len(x), np.int8) if keys is None else keys, trained.window)
        step = max(1, len(index.starts) // PARITY_ROWS)
        return x[index.starts[::step][:PARITY_ROWS]]
    step = max(1, len(x) // PARITY_ROWS)
    return x[::step][:PARITY_ROWS]


def build_onnx_parity_check(ds: Dataset) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=ds.key("onnx_model"),
        blocking=True,
        additional_ins=ds.ins("detector", "training_set"),
    )
    def onnx_parity(
        onnx_model: OnnxGraph, detector: TrainedDetector, training_set: pd.DataFrame
    ) -> dg.AssetCheckResult:
        """onnxruntime and the reference (torch, numpy for PCA) agree within a relative
        tolerance before anything ships."""
        from ds_assets.training.export import check_parity

        result = check_parity(detector, onnx_model.data, parity_inputs(training_set, detector))
        return dg.AssetCheckResult(
            passed=result.passed,
            metadata={
                "reference": result.reference,
                "inputs": result.rows,
                "max_abs_diff_score": result.max_abs_diff_score,
                "max_abs_diff_feature_errors": result.max_abs_diff_feature_errors,
                "max_rel_diff": result.max_rel_diff,
                "tolerance_rel": result.tolerance,
                "max_element_rel_diff": result.max_element_rel_diff,
                "tolerance_element_rel": result.element_tolerance,
            },
        )

    return onnx_parity


_EVALUATED = evaluated_default.POLICY


class BundleConfig(dg.Config):
    """Scoring policy recorded in the manifest: threshold rule, flag smoothing, alerting."""

    # Defaults: the policy ``make eval`` chose with the default family
    # (``training.evaluated_default.POLICY``, any of these fields), else the values here.
    # auto (best_f1 with labeled validation anomalies, else quantile) | quantile | pot | best_f1
    threshold_rule: str = _EVALUATED.get("threshold_rule", "auto")
    quantile: float = _EVALUATED.get("quantile", 0.995)
    margin: float = _EVALUATED.get("margin", 1.0)
    # pot (peaks over threshold): exceedance probability of the threshold, and the quantile
    # above which the tail is fitted
    risk: float = _EVALUATED.get("risk", 1e-3)
    pot_level: float = _EVALUATED.get("pot_level", 0.98)
    # global (one threshold) | entity: each host's own by the same rule from its own validation
    # rows (hosts that differ in level); hosts with fewer than min_entity_rows scored rows, and
    # hosts unseen in training, use the global one
    threshold_scope: str = _EVALUATED.get("threshold_scope", "global")
    min_entity_rows: int = MIN_ENTITY_ROWS
    # flag a row when >= k of its entity's last n raw flags are set (k=n=1: no smoothing)
    smoothing_k: int = _EVALUATED.get("smoothing_k", 1)
    smoothing_n: int = _EVALUATED.get("smoothing_n", 1)
    # re-baselining after an alarm episode (ds_serving.smoothing): on when end_ratio > 0 (it
    # must then be > 1); the episode ends at peak / end_ratio, the entity's threshold becomes
    # raise x the score level there and returns to the calibrated one over horizon rows
    rebaseline_end_ratio: float = _EVALUATED.get("rebaseline_end_ratio", 0.0)
    rebaseline_raise: float = _EVALUATED.get("rebaseline_raise", 3.0)
    rebaseline_horizon: int = _EVALUATED.get("rebaseline_horizon", 240)
    # level adaptation (ds_serving.smoothing): > 0 turns it on; each host's threshold rises
    # with its recent score level over the median normal validation score, at this weight per
    # row (an incident longer than ~1 / rate rows is absorbed)
    adapt_rate: float = _EVALUATED.get("adapt_rate", 0.0)
    # per-entity alerting (ds_serving.alerting), applied alike by the alerts asset and the
    # gRPC scorer: open after k flagged rows of the last n, close after m normal rows, no
    # re-opening within the cooldown
    alert_k: int = 3
    alert_n: int = 5
    alert_m: int = 10
    alert_cooldown_seconds: float = 600.0

    def alerting(self) -> AlertPolicy:
        try:
            return AlertPolicy(k=self.alert_k, n=self.alert_n, m=self.alert_m,
                               cooldown=self.alert_cooldown_seconds)
        except AlertPolicyError as exc:  # name the run-config fields, not the manifest keys
            raise AlertPolicyError(
                f"model_bundle config: {exc} (run config fields alert_k, alert_n, alert_m, "
                "alert_cooldown_seconds)") from None

    def smoothing(self) -> Smoothing:
        rebaseline = None
        if self.rebaseline_end_ratio:
            rebaseline = Rebaseline(self.rebaseline_end_ratio, self.rebaseline_raise,
                                    self.rebaseline_horizon)
        return Smoothing(k=self.smoothing_k, n=self.smoothing_n, rebaseline=rebaseline)


def build_model_bundle_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(
        key=ds.key("model_bundle"),
        ins=ds.ins("onnx_model", "detector", "training_set"),
        kinds={"onnx", "json"},
        code_version=CODE_VERSION,
        group_name=ds.scoped("training"),
        required_resource_keys={"mlflow", ds.registry_key},
    )
    @ds.with_defaults("model_bundle")
    def model_bundle(
        context: dg.AssetExecutionContext,
        config: BundleConfig,
        onnx_model: OnnxGraph,
        detector: TrainedDetector,
        training_set: pd.DataFrame,
    ) -> dict[str, Any]:
        """A versioned bundle (ONNX + manifest) with a threshold calibrated on validation rows,
        logged to MLflow and registered as a model version."""
        registry = ds.registry(context)
        mlflow_run = context.resources.mlflow.active_run()
        run_id = mlflow_run.info.run_id if mlflow_run else None
        bundle = build_bundle(
            registry.models_dir, registry.model_name, onnx_model.data, detector, training_set,
            threshold_rule=config.threshold_rule, quantile=config.quantile, margin=config.margin,
            risk=config.risk, pot_level=config.pot_level,
            threshold_scope=config.threshold_scope, min_entity_rows=config.min_entity_rows,
            smoothing=config.smoothing(), alerting=config.alerting(),
            adapt_rate=config.adapt_rate,
            feature_groups=ds.spec.features.groups if ds.spec is not None else None,
            lineage={"code_version": CODE_VERSION, "dagster_run_id": context.run_id,
                     "mlflow_run_id": run_id},
        )
        policy = bundle.manifest.policy
        threshold = policy.threshold
        if config.threshold_scope == "entity" and not policy.per_entity:
            rule = policy.threshold_rule
            context.log.warning(
                f"threshold_scope=entity, but no host got its own threshold "
                f"({rule.get('entities_too_few_rows', 0)} with fewer than "
                f"{config.min_entity_rows} scored validation rows, "
                f"{rule.get('entities_failed', 0)} whose rule failed): every host uses the "
                "global one; lower min_entity_rows or validate on more rows")
        summary = detector.training_summary
        mlflow_version = registry.register(
            bundle, run_id,
            params={"family": detector.family},
            metrics={"threshold": threshold, "best_val_loss": float(summary["best_val_loss"])},
        )
        context.add_output_metadata(
            {
                "version": bundle.manifest.version,
                "path": dg.MetadataValue.path(str(bundle.path)),
                "family": detector.family,
                "window": detector.window if detector.window is not None else "none",
                "threshold": threshold,
                "threshold_rule": dg.MetadataValue.json(dict(policy.threshold_rule)),
                "entity_thresholds": len(policy.entity_thresholds),
                "smoothing": dg.MetadataValue.json(policy.smoothing.to_dict()),
                "alerting": dg.MetadataValue.json(policy.alerting.to_dict()),
                "mlflow_run_id": run_id or "",
                "mlflow_model_version": mlflow_version or "",
            }
        )
        return {
            "name": bundle.manifest.name,
            "version": bundle.manifest.version,
            "path": str(bundle.path),
            "threshold": threshold,
            "family": detector.family,
            "window": detector.window,
            "smoothing": policy.smoothing.to_dict(),
            "mlflow_run_id": run_id,
            "mlflow_model_version": mlflow_version,
        }

    return model_bundle


class TensorRTConfig(dg.Config):
    enabled: bool = True
    fp16: bool = True  # used where the GPU has fast FP16 and parity holds, else FP32
    opt_batch: int = 4096
    max_batch: int = 65_536


def build_tensorrt_engine_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(
        key=ds.key("tensorrt_engine"),
        ins=ds.ins("model_bundle", "detector", "training_set"),
        kinds={"tensorrt"},
        code_version=CODE_VERSION,
        pool="gpu",
        group_name=ds.scoped("training"),
        output_required=False,
    )
    def tensorrt_engine(
        context: dg.AssetExecutionContext,
        config: TensorRTConfig,
        model_bundle: dict[str, Any],
        detector: TrainedDetector,
        training_set: pd.DataFrame,
    ) -> Iterator[dg.Output[dict[str, Any]]]:
        """TensorRT engine of the bundle's ONNX graph, added to the bundle as ``model.plan``.

        Without a CUDA GPU and the tensorrt package nothing is produced (the asset shows as
        skipped and the run log says why); the bundle keeps serving through onnxruntime.
        """
        reason = ("disabled by run config" if not config.enabled
                  else unavailable_reason() or graph_reason(load_bundle(
                      model_bundle["path"]).model_bytes()))
        if reason is not None:
            context.log.info(
                f"tensorrt_engine: no engine built for bundle v{model_bundle['version']}: "
                f"{reason}. Scoring uses the ONNX graph (onnxruntime)."
            )
            return
        bundle = load_bundle(model_bundle["path"])
        if bundle.engine_path is not None:
            context.log.info(
                f"tensorrt_engine: bundle v{bundle.manifest.version} already has an engine "
                f"({bundle.engine_path.name}); versions are immutable, nothing to rebuild"
            )
            return
        compiled = compile_and_check(
            bundle.model_bytes(), parity_inputs(training_set, detector),
            n_features=len(detector.features), window=detector.window, fp16=config.fp16,
            opt_batch=config.opt_batch, max_batch=config.max_batch,
        )
        if not compiled.parity.passed:
            raise dg.Failure(
                description=(
                    f"TensorRT engine disagrees with onnxruntime: max relative deviation "
                    f"{compiled.parity.max_rel_diff:.3g} > tolerance {compiled.parity.tolerance}; "
                    "the engine was not added to the bundle"
                ),
                metadata={"max_rel_diff": compiled.parity.max_rel_diff},
            )
        info = compiled.info()
        attach_engine(bundle.path, compiled.build.plan, info)
        latency = pd.DataFrame(compiled.latency)
        yield dg.Output(
            {"name": model_bundle["name"], "version": model_bundle["version"],
             "path": model_bundle["path"], **info},
            metadata={
                "precision": compiled.build.precision,
                "build_seconds": compiled.build.build_seconds,
                "plan_bytes": len(compiled.build.plan),
                "parity_max_rel_diff": compiled.parity.max_rel_diff,
                "parity_tolerance": compiled.parity.tolerance,
                "fp16_rejected": compiled.fp16_rejected is not None,
                "latency": dg.MetadataValue.md(markdown_table(latency)),
                "tensorrt_version": compiled.build.tensorrt_version,
                "device": compiled.build.device_name,
                "profile": f"batch {compiled.build.min_batch}..{compiled.build.max_batch} "
                           f"(opt {compiled.build.opt_batch})",
            },
        )

    return tensorrt_engine
