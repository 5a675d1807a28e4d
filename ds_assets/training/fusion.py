"""The fused detector: z-score, PCA and temporal autoencoder scores of the same window, each
over its own calibration quantile, combined by their maximum, as one scoring graph.

Why: scored apart and fused after (``make eval``, 2026-12-05) this combination held out better
where hosts differ in level (the generator) and about as well elsewhere; as one ONNX graph it
is a bundle like any other, so the evaluation can choose it and the scorer serves it unchanged.
Each window is scored by the autoencoder; the row it ends at by the z-score (max |z| over
features, the training rows' mean and std) and PCA (T² and Q). A member's scale is the
``fusion_quantile`` of its scores on the validation windows, so each part reads "1 = as unusual
as the 99th percentile of normal". The feature errors (explanations) are the autoencoder's.
Univariate data has no PCA member (PCA of one column is its z-score).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ds_assets.training.detectors import (
    _VAL_CHUNK,
    DetectorParams,
    TrainedDetector,
    _fit_pca,
    pca_reference_scores,
)
from ds_assets.training.networks import fit_autoencoder, fitted_on_errors
from ds_serving.windows import window_index

AE, PCA = "temporal_ae", "pca"
PREFIXES = {AE: "ae.", PCA: "pca."}
SCALES = "fusion.scales"  # float32 [3]: z-score, PCA (0: no PCA member), autoencoder


def fit_fused(
    params: DetectorParams, features: list[str], zt: np.ndarray, zv: np.ndarray, val: np.ndarray,
    mean: np.ndarray, std: np.ndarray, train_keys: np.ndarray, val_keys: np.ndarray,
    device: torch.device,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Fit the members on normalized rows (``zt``, ``zv``), then each member's scale on the
    validation windows (``val``: the same rows unnormalized). (arrays, summary): the
    autoencoder's summary, with the PCA's and the scales added."""
    ae_params = replace(params, family=AE)
    ti = window_index(train_keys, params.window).starts
    index = window_index(val_keys, params.window)
    arrays, summary = fit_autoencoder(ae_params, zt.shape[1], zt, zv, ti, index.starts, device)
    arrays.update(fitted_on_errors(ae_params, arrays, zt, zv, ti, index.starts, summary))
    out = {PREFIXES[AE] + k: v for k, v in arrays.items()}
    pca_summary: dict[str, Any] = {}
    if zt.shape[1] > 1:
        pca_arrays, pca_summary = _fit_pca(replace(params, family=PCA), zt, zv)
        out.update({PREFIXES[PCA] + k: v for k, v in pca_arrays.items()})
    fitted = TrainedDetector("fused", features, params, mean, std, out)
    parts, _ = _member_scores(fitted, val, index.starts)
    scales = [_scale(p, params.fusion_quantile) if p is not None else 0.0 for p in parts]
    out[SCALES] = np.array(scales, np.float32)
    summary.update(
        members=["zscore", *([PCA] if pca_summary else []), AE],
        fusion_scales={"zscore": scales[0], PCA: scales[1], AE: scales[2]},
        fusion_quantile=params.fusion_quantile,
        **{k: pca_summary[k] for k in ("n_components", "explained_variance_ratio")
           if k in pca_summary},
    )
    return out, summary


def _scale(scores: np.ndarray, quantile: float) -> float:
    finite = scores[np.isfinite(scores)]
    scale = float(np.quantile(finite, quantile)) if finite.size else 0.0
    return scale if scale > 1e-12 else 1.0


def member(trained: TrainedDetector, family: str) -> TrainedDetector | None:
    """One member as a detector of its own family (None: the fused detector has none)."""
    prefix = PREFIXES[family]
    arrays = {k.removeprefix(prefix): v for k, v in trained.arrays.items()
              if k.startswith(prefix)}
    if not arrays:
        return None
    return TrainedDetector(family, trained.features, replace(trained.params, family=family),
                           trained.mean, trained.std, arrays, trained.training_summary)


def _member_scores(trained: TrainedDetector, rows: np.ndarray, starts: np.ndarray,
                   errors: bool = False) -> tuple[list[np.ndarray | None], np.ndarray | None]:
    """Unscaled (z-score, PCA or None, autoencoder) scores of the windows ``rows[starts]``
    (``starts``: [n, W] row positions), gathered a chunk at a time (never all windows at once),
    in numpy and torch apart from the graph: the fit's scales and the parity reference; with
    ``errors``, the autoencoder's feature errors of the same pass too."""
    from ds_assets.training.export import scoring_graph

    ae, pca = member(trained, AE), member(trained, PCA)
    assert ae is not None
    graph = scoring_graph(ae)
    ae_parts, error_parts = [np.zeros(0, np.float32)], [np.zeros((0, len(trained.mean)))]
    with torch.no_grad():
        for at in range(0, len(starts), _VAL_CHUNK):
            windows = np.ascontiguousarray(rows[starts[at:at + _VAL_CHUNK]], np.float32)
            score, error = graph(torch.from_numpy(windows))
            ae_parts.append(score.numpy())
            if errors:
                error_parts.append(error.numpy())
    last = np.asarray(rows[starts[:, -1]], np.float64) if len(starts) else np.zeros(
        (0, len(trained.mean)))
    z = np.abs((last - trained.mean) / trained.std).max(axis=1, initial=0.0)
    pca_scores = None if pca is None else pca_reference_scores(pca, last)[0]
    parts = [z, pca_scores, np.concatenate(ae_parts).astype(np.float64)]
    return parts, np.concatenate(error_parts).astype(np.float32) if errors else None


def reference_scores(trained: TrainedDetector, windows: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(score, feature_errors) of the fused graph computed apart from it (parity reference):
    the members' scores over their scales, the maximum; the autoencoder's errors."""
    scales = trained.arrays[SCALES]
    flat = windows.reshape(-1, windows.shape[-1])
    parts, errors = _member_scores(trained, flat, np.arange(len(flat)).reshape(windows.shape[:2]),
                                   errors=True)
    assert errors is not None
    score = np.max([p / s for p, s in zip(parts, scales, strict=True) if p is not None],
                   axis=0)
    return score.astype(np.float32), errors


class FusedScoringGraph(nn.Module):
    """Input windows [B, W, F]; score = max(z / s_z, pca / s_pca, ae / s_ae) of the window
    (z-score and PCA of its last row); feature errors: the autoencoder's."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, trained: TrainedDetector) -> None:
        from ds_assets.training.export import scoring_graph

        super().__init__()
        ae, pca = member(trained, AE), member(trained, PCA)
        assert ae is not None
        self.ae = scoring_graph(ae)  # each member's own scoring graph
        self.pca = None if pca is None else scoring_graph(pca)
        self.register_buffer("mean", torch.from_numpy(trained.mean.astype(np.float32)))
        self.register_buffer("inv_std", torch.from_numpy((1.0 / trained.std).astype(np.float32)))
        scales = trained.arrays[SCALES].astype(np.float64)
        self.inv_z, self.inv_pca, self.inv_ae = (float(1.0 / s) if s > 0 else 0.0
                                                 for s in scales)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ae_score, errors = self.ae(features)
        last = features[:, -1, :]
        z = torch.abs((last - self.mean) * self.inv_std).amax(dim=1)
        parts = [z * self.inv_z, ae_score * self.inv_ae]
        if self.pca is not None:
            parts.append(self.pca(last)[0] * self.inv_pca)
        return torch.stack(parts).amax(dim=0), errors

