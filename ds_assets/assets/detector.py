"""Training set -> autoencoder -> ONNX graph (parity-checked) -> model bundle.

Each asset is wiring around the plain modules in ds_assets (datasets, training, export,
thresholds) and ds_serving (bundle, scoring).
"""


from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from ds_assets.analytics import markdown_table
from ds_assets.datasets import build_training_set, select_window, split_rows
from ds_assets.export import OPSET, check_parity, export_onnx
from ds_assets.resources.io_manager import OnnxGraph, PartitionFrames
from ds_assets.resources.registry import ModelRegistry
from ds_assets.schema import LABEL, TIMESTAMP, feature_columns
from ds_assets.thresholds import calibrate_quantile
from ds_assets.training import KIND, AutoencoderParams, TrainedAutoencoder, train_autoencoder
from ds_serving.bundle import write_bundle
from ds_serving.scoring import Scorer

CODE_VERSION = "1"
PARITY_ROWS = 4096


class TrainingWindowConfig(dg.Config):
    """Which materialized days train the model, and how they split by time."""

    n_partitions: int = 7
    end_partition: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15


@dg.asset(
    ins={"raw_telemetry": dg.AssetIn(metadata={"allow_missing_partitions": True})},
    kinds={"pandas", "parquet"},
    code_version=CODE_VERSION,
    group_name="training",
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingWindowConfig, raw_telemetry: PartitionFrames
) -> pd.DataFrame:
    """Normal rows of a window of days, split train | val | test by time (test keeps anomalies)."""
    keys = select_window(list(raw_telemetry), config.n_partitions, config.end_partition)
    data = build_training_set(
        {k: raw_telemetry[k] for k in keys}, config.val_fraction, config.test_fraction
    )
    counts = data.groupby("split")[LABEL].agg(["size", "sum"]).reset_index()
    counts.columns = ["split", "rows", "anomalies"]
    context.add_output_metadata(
        {
            "partitions": dg.MetadataValue.json(keys),
            "rows": len(data),
            "splits": dg.MetadataValue.md(markdown_table(counts)),
        }
    )
    return data


class AutoencoderConfig(dg.Config):
    """Hyper-parameters of the dense autoencoder (editable in the launchpad)."""

    hidden: list[int] = [32, 16, 4]
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 5
    seed: int = 0
    max_train_rows: int = 200_000

    def params(self) -> AutoencoderParams:
        return AutoencoderParams(
            hidden=tuple(self.hidden),
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            patience=self.patience,
            seed=self.seed,
            max_train_rows=self.max_train_rows,
        )


def _features_of(split: pd.DataFrame, features: list[str]) -> np.ndarray:
    return split[features].to_numpy(np.float32)


@dg.asset(
    kinds={"pytorch"},
    code_version=CODE_VERSION,
    pool="gpu",
    group_name="training",
    required_resource_keys={"mlflow"},
)
def autoencoder(
    context: dg.AssetExecutionContext, config: AutoencoderConfig, training_set: pd.DataFrame
) -> TrainedAutoencoder:
    """Dense autoencoder fitted on normal train rows, early-stopped on validation loss."""
    features = feature_columns(training_set)
    trained = train_autoencoder(
        _features_of(split_rows(training_set, "train"), features),
        _features_of(split_rows(training_set, "val"), features),
        features,
        config.params(),
    )
    history = trained.history
    mlflow = context.resources.mlflow
    mlflow.log_params({**history["params"], "features": ",".join(features), "kind": KIND})
    for epoch, (tl, vl) in enumerate(zip(history["train_loss"], history["val_loss"], strict=True)):
        mlflow.log_metrics({"train_loss": tl, "val_loss": vl}, step=epoch)
    mlflow.log_metrics({"best_val_loss": history["best_val_loss"],
                        "train_wall_seconds": history["wall_time_s"]})
    curve = pd.DataFrame(
        {"epoch": range(len(history["val_loss"])), "train_loss": history["train_loss"],
         "val_loss": history["val_loss"]}
    )
    context.add_output_metadata(
        {
            "epochs_run": history["epochs_run"],
            "best_epoch": history["best_epoch"],
            "best_val_loss": history["best_val_loss"],
            "stopped_early": history["stopped_early"],
            "train_rows": history["train_rows"],
            "device": history["device"],
            "wall_seconds": history["wall_time_s"],
            "seed": config.seed,
            "loss_curve": dg.MetadataValue.md(markdown_table(curve)),
        }
    )
    return trained


@dg.asset(kinds={"onnx"}, code_version=CODE_VERSION, group_name="training")
def onnx_model(context: dg.AssetExecutionContext, autoencoder: TrainedAutoencoder) -> OnnxGraph:
    """The scoring graph: normalization, reconstruction and score inside one ONNX model."""
    graph = OnnxGraph(export_onnx(autoencoder))
    context.add_output_metadata({"opset": OPSET, "bytes": len(graph.data)})
    return graph


def parity_rows(training_set: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Validation and test rows (anomalies included), capped, for the parity comparison."""
    rows = training_set.loc[training_set["split"] != "train", features]
    step = max(1, len(rows) // PARITY_ROWS)
    return rows.iloc[::step].head(PARITY_ROWS).to_numpy(np.float32)


@dg.asset_check(
    asset=onnx_model,
    blocking=True,
    additional_ins={"autoencoder": dg.AssetIn(), "training_set": dg.AssetIn()},
)
def onnx_matches_torch(
    onnx_model: OnnxGraph, autoencoder: TrainedAutoencoder, training_set: pd.DataFrame
) -> dg.AssetCheckResult:
    """onnxruntime and torch must agree within a relative tolerance before anything ships."""
    result = check_parity(
        autoencoder, onnx_model.data, parity_rows(training_set, autoencoder.features)
    )
    return dg.AssetCheckResult(
        passed=result.passed,
        metadata={
            "rows": result.rows,
            "max_abs_diff_score": result.max_abs_diff_score,
            "max_abs_diff_feature_errors": result.max_abs_diff_feature_errors,
            "max_rel_diff": result.max_rel_diff,
            "tolerance_rel": result.tolerance,
        },
    )


class ThresholdConfig(dg.Config):
    quantile: float = 0.995
    margin: float = 1.0


@dg.asset(
    kinds={"onnx", "json"},
    code_version=CODE_VERSION,
    group_name="training",
    required_resource_keys={"mlflow", "registry"},
)
def model_bundle(
    context: dg.AssetExecutionContext,
    config: ThresholdConfig,
    onnx_model: OnnxGraph,
    autoencoder: TrainedAutoencoder,
    training_set: pd.DataFrame,
) -> dict[str, Any]:
    """A versioned bundle (ONNX + manifest) with a threshold calibrated on validation rows."""
    registry: ModelRegistry = context.resources.registry
    features = autoencoder.features
    calibrator = Scorer(
        onnx_model.data, features=features, threshold=float("inf"), backend="cpu"
    )
    val = split_rows(training_set, "val")
    threshold, rule = calibrate_quantile(
        calibrator.score(_features_of(val, features)).scores, config.quantile, config.margin
    )
    days = sorted({str(d) for d in training_set[TIMESTAMP].dt.date.unique()})
    mlflow_run = context.resources.mlflow.active_run()
    lineage = {
        "partitions": days,
        "rows": {s: int((training_set["split"] == s).sum()) for s in ("train", "val", "test")},
        "code_version": CODE_VERSION,
        "dagster_run_id": context.run_id,
        "mlflow_run_id": mlflow_run.info.run_id if mlflow_run else None,
    }
    bundle = write_bundle(
        registry.models_dir,
        registry.model_name,
        onnx_model.data,
        kind=KIND,
        features=features,
        threshold=threshold,
        threshold_rule=rule,
        lineage=lineage,
        metrics={"best_val_loss": autoencoder.history["best_val_loss"]},
        extra={"normalization": {"mean": autoencoder.mean.tolist(),
                                 "std": autoencoder.std.tolist()},
               "training": {k: autoencoder.history[k] for k in
                            ("epochs_run", "best_epoch", "device", "wall_time_s", "params")}},
    )
    context.resources.mlflow.log_params({"threshold": threshold, "threshold_rule": "quantile",
                                         "threshold_quantile": config.quantile})
    context.add_output_metadata(
        {
            "version": bundle.manifest.version,
            "path": dg.MetadataValue.path(str(bundle.path)),
            "threshold": threshold,
            "threshold_rule": dg.MetadataValue.json(rule),
        }
    )
    return {
        "name": bundle.manifest.name,
        "version": bundle.manifest.version,
        "path": str(bundle.path),
        "threshold": threshold,
    }
