"""ONNX export of every detector family with normalization and the score inside the graph, and
the reference-vs-onnxruntime parity check.

The exported contract (``ds_serving.bundle``): input ``features`` float32 ``[batch, n_features]``
(``[batch, W, n_features]`` for temporal models); outputs ``score`` ``[batch]`` and
``feature_errors`` ``[batch, n_features]`` (squared residuals in normalized units). The scorer and
TensorRT therefore need no model-specific code.

Parity references: torch for the autoencoders, independent numpy implementations for PCA and
the nearest-window detector.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

from ds_assets.training.detectors import TrainedDetector, pca_reference_scores
from ds_assets.training.networks import window_errors
from ds_assets.training.parity import PARITY_RTOL, ParityResult, compare_outputs, ort_outputs
from ds_serving.bundle import INPUT_NAME, OUTPUT_NAMES
from ds_serving.windows import window_index

OPSET = 17


class _Normalize(nn.Module):
    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("inv_std", torch.from_numpy(1.0 / np.asarray(std, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


class _ErrorScale(nn.Module):
    """Feature errors times 1 / each feature's validation error (``error_scale``); the
    identity, and no node in the graph, without one."""

    inverse: torch.Tensor

    def __init__(self, inverse: np.ndarray | None) -> None:
        super().__init__()
        self.on = inverse is not None
        if inverse is not None:
            self.register_buffer("inverse", torch.from_numpy(inverse.astype(np.float32)))

    def forward(self, errors: torch.Tensor) -> torch.Tensor:
        return errors * self.inverse if self.on else errors


class ScoringGraph(nn.Module):
    """Dense autoencoder: score = mean squared reconstruction error of the row (each feature's
    in units of its validation error with ``error_scale``)."""

    def __init__(self, autoencoder: nn.Module, mean: np.ndarray, std: np.ndarray,
                 error_scale: np.ndarray | None = None) -> None:
        super().__init__()
        self.normalize = _Normalize(mean, std)
        self.autoencoder = autoencoder
        self.scale = _ErrorScale(error_scale)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.normalize(features)
        errors = self.scale((z - self.autoencoder(z)) ** 2)
        return errors.mean(dim=1), errors


class TemporalScoringGraph(nn.Module):
    """Temporal autoencoder over [batch, W, F]: the window's error scores the row it ends at
    (mean over the window, the last row only, or weighted to its last rows:
    ``networks.window_errors``)."""

    inv_floor: torch.Tensor
    watched: torch.Tensor

    def __init__(
        self, autoencoder: nn.Module, mean: np.ndarray, std: np.ndarray, temporal_score: str,
        flatline: tuple[np.ndarray, float] | None = None,
        error_scale: np.ndarray | None = None, half_life: float = 2.0,
    ) -> None:
        super().__init__()
        self.normalize = _Normalize(mean, std)
        self.autoencoder = autoencoder
        self.temporal_score = temporal_score
        self.half_life = half_life
        self.scale = _ErrorScale(error_scale)
        # flat-line term: a watched feature whose window spread is below its training floor
        # adds penalty x (1 - spread / floor) to its error (a stuck sensor is no error)
        self.flatline = flatline is not None
        floor = np.zeros(len(mean), np.float32) if flatline is None else flatline[0]
        safe = np.where(floor > 0, floor, 1.0).astype(np.float32)
        self.register_buffer("inv_floor", torch.from_numpy(1.0 / safe))
        self.register_buffer("watched", torch.from_numpy((floor > 0).astype(np.float32)))
        self.penalty = 0.0 if flatline is None else float(flatline[1])

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.normalize(features)
        errors = (z - self.autoencoder(z)) ** 2  # [B, W, F]
        per_feature = self.scale(window_errors(errors, self.temporal_score, self.half_life))
        if self.flatline:
            centred = z - z.mean(dim=1, keepdim=True)
            spread = torch.sqrt((centred * centred).mean(dim=1))  # [B, F]
            flat = torch.relu(1.0 - spread * self.inv_floor) * self.watched
            per_feature = per_feature + flat * self.penalty
        return per_feature.mean(dim=1), per_feature


class PcaScoringGraph(nn.Module):
    """PCA T²+Q: T² = sum t_i²/lambda_i over kept components, Q = squared residual outside
    them; each divided by its training-quantile scale, then combined by max or weighted sum."""

    components: torch.Tensor
    inv_eigenvalues: torch.Tensor

    def __init__(self, trained: TrainedDetector) -> None:
        super().__init__()
        a = trained.arrays
        self.normalize = _Normalize(trained.mean, trained.std)
        self.register_buffer("components", torch.from_numpy(a["components"].astype(np.float32)))
        self.register_buffer(
            "inv_eigenvalues", torch.from_numpy((1.0 / a["eigenvalues"]).astype(np.float32))
        )
        self.inv_t2_scale = float(1.0 / a["scales"][0])
        self.inv_q_scale = float(1.0 / a["scales"][1])
        self.combine_max = trained.params.pca_combine == "max"
        self.t2_weight = float(trained.params.t2_weight)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.normalize(features)
        t = z @ self.components
        t2 = (t * t * self.inv_eigenvalues).sum(dim=1) * self.inv_t2_scale
        residual = z - t @ self.components.T
        errors = residual * residual
        q = errors.sum(dim=1) * self.inv_q_scale
        if self.combine_max:
            score = torch.maximum(t2, q)
        else:
            score = self.t2_weight * t2 + (1.0 - self.t2_weight) * q
        return score, errors


def scoring_graph(trained: TrainedDetector) -> nn.Module:
    """The torch module whose ONNX export is the bundle's scoring graph."""
    if trained.family == "dense_ae":
        return ScoringGraph(trained.module(), trained.mean, trained.std,
                            trained.error_scale_inverse).eval()
    if trained.family == "temporal_ae":
        return TemporalScoringGraph(trained.module(), trained.mean, trained.std,
                                    trained.params.temporal_score, trained.flatline,
                                    trained.error_scale_inverse,
                                    trained.params.recent_half_life).eval()
    if trained.family == "fused":
        from ds_assets.training.fusion import FusedScoringGraph  # it builds on this module

        return FusedScoringGraph(trained).eval()
    if trained.family == "window_knn":
        from ds_assets.training.nearest_windows import NearestWindowScoringGraph

        return NearestWindowScoringGraph(trained).eval()
    return PcaScoringGraph(trained).eval()


def input_shape(trained: TrainedDetector, batch: int) -> tuple[int, ...]:
    n = len(trained.features)
    return (batch, n) if trained.window is None else (batch, trained.window, n)


def export_onnx(trained: TrainedDetector) -> bytes:
    """Serialize the scoring graph (dynamic batch axis, fixed window and feature count)."""
    graph = scoring_graph(trained)
    example = torch.zeros(input_shape(trained, 2), dtype=torch.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            graph,
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter accepts file objects
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "batch"}, "score": {0: "batch"},
                          "feature_errors": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def model_inputs(trained: TrainedDetector, rows: np.ndarray) -> np.ndarray:
    """Rows as model inputs: unchanged for point-wise models; for a temporal model a 2-D block
    of consecutive rows of one entity becomes its sliding windows [n - W + 1, W, F]."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if trained.window is None or rows.ndim == 3:
        return rows
    index = window_index(np.zeros(len(rows), np.int8), trained.window)
    return rows[index.starts]


def reference_scores(
    trained: TrainedDetector, inputs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(score, feature_errors) from the reference implementation (torch, or numpy for PCA)."""
    inputs = model_inputs(trained, inputs)
    if trained.family == "pca":
        score, errors = pca_reference_scores(trained, inputs)
        return score.astype(np.float32), errors.astype(np.float32)
    if trained.family == "fused":  # each member apart (numpy, torch), then the fusion
        from ds_assets.training.fusion import reference_scores as fused_reference

        return fused_reference(trained, inputs)
    if trained.family == "window_knn":  # numpy, exact distances
        from ds_assets.training.nearest_windows import reference_scores as knn_reference

        return knn_reference(trained, inputs)
    with torch.no_grad():
        score_t, errors_t = scoring_graph(trained)(torch.from_numpy(inputs))
    return score_t.numpy(), errors_t.numpy()


torch_scores = reference_scores  # backwards-compatible name


def check_parity(
    trained: TrainedDetector, onnx_bytes: bytes, inputs: np.ndarray, rtol: float = PARITY_RTOL
) -> ParityResult:
    """Compare the reference implementation and onnxruntime on the same model inputs."""
    inputs = model_inputs(trained, inputs)
    if len(inputs) == 0:
        raise ValueError("parity check needs at least one model input (one full window)")
    return compare_outputs(
        reference_scores(trained, inputs),
        ort_outputs(onnx_bytes, inputs),
        rtol,
        {"pca": "numpy", "fused": "members apart (numpy, torch)",
         "window_knn": "numpy"}.get(trained.family, "torch"),
    )
