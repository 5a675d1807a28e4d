"""ONNX export with normalization and the score inside the graph, and the torch/ORT parity check.

The exported contract: input ``features`` float32 [batch, n_features]; outputs ``score`` [batch]
(mean squared reconstruction error in normalized units) and ``feature_errors`` [batch, n_features].
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ds_assets.training import TrainedAutoencoder
from ds_serving.bundle import INPUT_NAME, OUTPUT_NAMES

OPSET = 17
PARITY_RTOL = 1e-5


class ScoringGraph(nn.Module):
    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, autoencoder: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.register_buffer("mean", torch.from_numpy(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("inv_std", torch.from_numpy(1.0 / np.asarray(std, dtype=np.float32)))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (features - self.mean) * self.inv_std
        errors = (z - self.autoencoder(z)) ** 2
        return errors.mean(dim=1), errors


def scoring_graph(trained: TrainedAutoencoder) -> ScoringGraph:
    return ScoringGraph(trained.module(), trained.mean, trained.std).eval()


def export_onnx(trained: TrainedAutoencoder) -> bytes:
    graph = scoring_graph(trained)
    example = torch.zeros(2, len(trained.features), dtype=torch.float32)
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


def torch_scores(trained: TrainedAutoencoder, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        score, errors = scoring_graph(trained)(torch.from_numpy(np.asarray(rows, np.float32)))
    return score.numpy(), errors.numpy()


@dataclass(frozen=True)
class ParityResult:
    rows: int
    max_abs_diff_score: float
    max_abs_diff_feature_errors: float
    max_rel_diff: float  # max |onnx - torch| relative to the largest torch output magnitude
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_rel_diff <= self.tolerance


def check_parity(
    trained: TrainedAutoencoder, model: bytes, rows: np.ndarray, rtol: float = PARITY_RTOL
) -> ParityResult:
    """Compare torch and onnxruntime outputs on the same rows."""
    import onnxruntime as ort

    rows = np.ascontiguousarray(rows, dtype=np.float32)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    onnx_score, onnx_errors = session.run(list(OUTPUT_NAMES), {INPUT_NAME: rows})
    ref_score, ref_errors = torch_scores(trained, rows)
    d_score = float(np.max(np.abs(onnx_score - ref_score)))
    d_errors = float(np.max(np.abs(onnx_errors - ref_errors)))
    scale_score = max(float(np.max(np.abs(ref_score))), 1e-12)
    scale_errors = max(float(np.max(np.abs(ref_errors))), 1e-12)
    return ParityResult(
        rows=len(rows),
        max_abs_diff_score=d_score,
        max_abs_diff_feature_errors=d_errors,
        max_rel_diff=max(d_score / scale_score, d_errors / scale_errors),
        tolerance=rtol,
    )
