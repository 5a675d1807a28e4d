"""The nearest-window detector: how far each window of an entity's recent rows lies from the
closest window of normal training data, at several time scales, as one scoring graph.

Why: an autoencoder scores a window by how well it reconstructs it, and the 16-row temporal AE
ranks shape anomalies longer than its window poorly (GutenTAG pattern / platform / trend
anomalies, AUC 0.53-0.72). A nearest-neighbour distance needs no training, works on one
feature, and can look at several lengths at once: the last 4, 16 and 48 rows (the longest
averaged into 16 points of 3 rows), each compared with the same scale of a seeded sample of
``bank_size`` training windows. Prototyped on the three ``make eval`` sources before it was
built (VUS-PR, against the temporal AE): SKAB 0.846 vs 0.824, GutenTAG 0.636 vs 0.527, the
generator 0.564 vs 0.568.

Per scale ``s`` (reduced to ``s / p`` points of ``p`` rows each, ``p = s / scale_points`` when
``s > scale_points``): the squared distance to the nearest bank window per feature, averaged
over the points, plus the temporal AE's flat-line term over the scale's rows (a stuck sensor
lies close to calm normal windows), in units of the scale's ``fusion_quantile`` on the
validation windows. The score is the highest scale's score (so "1 = as unusual as the 99th
percentile of normal at some scale"); the feature errors are that scale's. The nearest window
is the arg-min of a float32 distance, so two bank windows at (nearly) the same distance may
swap between implementations: the score is continuous there, the explanation may change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ds_assets.training.detectors import (
    EARLY_STOPPING_ITEMS,
    FLATLINE_PREFIX,
    DetectorParams,
    TrainedDetector,
    _flatline,
)
from ds_serving.windows import window_index

BANK = "knn.bank."  # + scale: float32 [bank, points, features], normalized and averaged
SCALE = "knn.scale."  # + scale: float32 [1], the scale's fusion_quantile on validation windows
# the flat-line term watches scales of at least this many rows (the temporal AE's window): the
# spread of 4 rows is noisy, and on the generator its term lowered VUS-PR from 0.585 to 0.434
FLATLINE_MIN_ROWS = 16
# bank windows shortlisted by the graph's float32 distance, then compared exactly
CANDIDATES = 8
_CHUNK = 1024  # windows per distance block while fitting (a [chunk, bank] float32 matrix)


def points_per_scale(params: DetectorParams) -> dict[int, int]:
    """Rows averaged into one point, per scale (1: every row is a point)."""
    return {s: (s // params.scale_points if s > params.scale_points else 1)
            for s in params.scales}


def reduced(z: np.ndarray | torch.Tensor, scale: int, rows_per_point: int,
            ) -> np.ndarray | torch.Tensor:
    """The last ``scale`` rows of windows [n, W, F] averaged into points [n, scale / p, F]."""
    tail = z[:, z.shape[1] - scale:, :]
    if rows_per_point == 1:
        return tail
    shaped = tail.reshape(tail.shape[0], scale // rows_per_point, rows_per_point, tail.shape[2])
    return shaped.mean(2) if isinstance(shaped, torch.Tensor) else shaped.mean(axis=2)


def fit_window_knn(
    params: DetectorParams, zt: np.ndarray, zv: np.ndarray, train_keys: np.ndarray,
    val_keys: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The bank (a seeded sample of the training windows, each scale reduced), then per scale
    the flat-line term and the calibration scale from up to EARLY_STOPPING_ITEMS validation
    windows. (arrays, summary)."""
    rng = np.random.default_rng(params.seed)
    ti = window_index(train_keys, params.window).starts
    vi = window_index(val_keys, params.window).starts
    bank_rows = ti[np.sort(rng.choice(len(ti), min(params.bank_size, len(ti)), replace=False))]
    if len(vi) > EARLY_STOPPING_ITEMS:
        vi = vi[np.sort(rng.choice(len(vi), EARLY_STOPPING_ITEMS, replace=False))]
    arrays: dict[str, np.ndarray] = {}
    summary_scales: dict[str, Any] = {}
    for scale, per_point in points_per_scale(params).items():
        bank = np.ascontiguousarray(reduced(zt[bank_rows], scale, per_point), np.float32)
        arrays[BANK + str(scale)] = bank
        errors = _nearest_errors(bank, np.asarray(reduced(zv[vi], scale, per_point)))
        part: dict[str, Any] = {"rows_per_point": per_point}
        if params.flatline_quantile is not None and scale >= FLATLINE_MIN_ROWS:
            flat = _flatline(params, zt, ti[:, params.window - scale:], errors, part)
            arrays.update({f"{k}.{scale}": v for k, v in flat.items()})
            errors = errors + flatline_term(zv[vi][:, params.window - scale:, :],
                                            flat[FLATLINE_PREFIX + "floor"],
                                            float(flat[FLATLINE_PREFIX + "penalty"][0]))
        scores = errors.mean(axis=1)
        finite = scores[np.isfinite(scores)]
        calibration = float(np.quantile(finite, params.fusion_quantile)) if finite.size else 1.0
        calibration = calibration if calibration > 1e-12 else 1.0
        arrays[SCALE + str(scale)] = np.array([calibration], np.float32)
        part["calibration"] = calibration
        summary_scales[str(scale)] = part
    val_loss = float(np.mean([p["calibration"] for p in summary_scales.values()]))
    summary: dict[str, Any] = {
        "epochs_run": 0, "best_epoch": 0, "best_val_loss": val_loss, "stopped_early": False,
        "loss_curve": {"best_val_loss": val_loss}, "device": "cpu",
        "bank_windows": len(bank_rows), "train_windows": len(ti), "val_windows": len(vi),
        "scales": summary_scales,
    }
    return arrays, summary


def _nearest_errors(bank: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Per-feature mean squared distance [n, F] of each window to its nearest bank window."""
    flat_bank = bank.reshape(len(bank), -1).astype(np.float64)
    bank_norms = (flat_bank * flat_bank).sum(axis=1)
    out = np.empty((len(windows), windows.shape[2]), np.float64)
    for at in range(0, len(windows), _CHUNK):
        block = windows[at:at + _CHUNK].astype(np.float64)
        flat = block.reshape(len(block), -1)
        distance = (flat * flat).sum(axis=1)[:, None] - 2.0 * flat @ flat_bank.T + bank_norms
        nearest = bank[np.argmin(distance, axis=1)].astype(np.float64)
        out[at:at + len(block)] = ((block - nearest) ** 2).mean(axis=1)
    return out


def flatline_term(windows: np.ndarray, floor: np.ndarray, penalty: float) -> np.ndarray:
    """The temporal AE's flat-line term [n, F] of raw normalized windows (numpy)."""
    spread = windows.astype(np.float64).std(axis=1)
    safe = np.where(floor > 0, floor, 1.0)
    return np.maximum(1.0 - spread / safe, 0.0) * (floor > 0) * penalty


class _Scale(nn.Module):
    """One scale, in float64 from the normalized rows on: nearest bank window, per-feature
    error to it, the flat-line term, all over the scale's calibration.

    Why float64: hosts at their own levels with little noise put every window near |z| ~ 1
    with spreads of 1e-3, where a float32 distance's rounding (about eps |z|^2 over hundreds of
    terms) exceeds the distances themselves: the shortlist became random and normal windows
    scored up to 2.8x too high. The bank is stored in float32 (its cast is folded when the
    session loads); a TensorRT engine, which has no float64, cannot be built for this family.
    """

    bank: torch.Tensor
    half_norms: torch.Tensor
    inv_floor: torch.Tensor
    watched: torch.Tensor

    def __init__(self, trained: TrainedDetector, scale: int, per_point: int) -> None:
        super().__init__()
        a = trained.arrays
        bank = a[BANK + str(scale)].astype(np.float32)
        flat = bank.reshape(len(bank), -1)
        self.scale, self.per_point = scale, per_point
        # one copy of the bank in the graph, [bank, points x features]: the shortlist gathers
        # whole rows of it; the distance product's transpose of it is folded by onnxruntime
        # when the session loads (gathering columns of a stored transpose was a fifth of the
        # graph's time)
        self.register_buffer("bank", torch.from_numpy(np.ascontiguousarray(flat)))
        wide = flat.astype(np.float64)
        self.register_buffer("half_norms", torch.from_numpy(0.5 * (wide * wide).sum(axis=1)))
        floor = a.get(f"{FLATLINE_PREFIX}floor.{scale}")
        self.flatline = floor is not None
        floor = np.zeros(bank.shape[2], np.float32) if floor is None else floor
        safe = np.where(floor > 0, floor, 1.0).astype(np.float64)
        self.register_buffer("inv_floor", torch.from_numpy(1.0 / safe))
        self.register_buffer("watched", torch.from_numpy((floor > 0).astype(np.float64)))
        self.penalty = (float(a[f"{FLATLINE_PREFIX}penalty.{scale}"][0]) if self.flatline
                        else 0.0)
        self.inv_calibration = 1.0 / float(a[SCALE + str(scale)][0])
        self.candidates = min(CANDIDATES, len(bank))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z``: normalized windows in float64; per-feature errors [B, F] in float64."""
        bank = self.bank.double()
        tail = z[:, z.shape[1] - self.scale:, :]
        points = reduced(z, self.scale, self.per_point)
        assert isinstance(points, torch.Tensor)
        flat = points.flatten(1)
        # |x - b|^2 / 2 - |x|^2 / 2 = |b|^2 / 2 - x.b, one Gemm with its bias: the same order
        # within a row as the distance. Expanded, a distance still cancels far from the origin,
        # so it only shortlists CANDIDATES bank windows, whose exact distances pick the nearest
        closeness = torch.addmm(-self.half_norms, flat, bank.T)  # larger = nearer
        shortlist = torch.topk(closeness, self.candidates, dim=1).indices
        rows, width = points.shape[0], points.shape[1]
        near = bank[shortlist.flatten()].reshape(rows, self.candidates, width, -1)
        squared = (points[:, None] - near) ** 2  # [B, C, P, F]
        best = torch.argmin(squared.sum(dim=(2, 3)), dim=1)
        chosen = torch.gather(squared, 1, best[:, None, None, None].expand(
            -1, 1, width, squared.shape[3]))
        errors = chosen[:, 0].mean(dim=1)  # [B, F]
        if self.flatline:
            centred = tail - tail.mean(dim=1, keepdim=True)
            spread = torch.sqrt((centred * centred).mean(dim=1))
            errors = errors + torch.relu(1.0 - spread * self.inv_floor) * self.watched \
                * self.penalty
        return errors * self.inv_calibration


class NearestWindowScoringGraph(nn.Module):
    """Input windows [B, W, F] (W = the longest scale); score = the highest of the scales'
    mean feature errors; feature errors: that scale's."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, trained: TrainedDetector) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(trained.mean.astype(np.float32)))
        self.register_buffer("inv_std", torch.from_numpy((1.0 / trained.std).astype(np.float32)))
        self.n_features = len(trained.features)
        self.scales = nn.ModuleList(_Scale(trained, s, p)
                                    for s, p in points_per_scale(trained.params).items())

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = ((features - self.mean) * self.inv_std).double()
        errors = torch.stack([scale(z) for scale in self.scales], dim=1)  # [B, S, F]
        scores = errors.mean(dim=2)  # [B, S]
        best = torch.argmax(scores, dim=1)
        chosen = torch.gather(errors, 1, best[:, None, None].expand(-1, 1, errors.shape[2]))
        # a constant feature count, so the exported output's shape says [batch, F]
        return scores.amax(dim=1).float(), chosen.reshape(-1, self.n_features).float()


def reference_scores(trained: TrainedDetector, windows: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(score, feature_errors) in numpy, apart from the graph, with exact float64 distances to
    every bank window: the parity reference. The rows are normalized in float32 as the graph
    does (a random walk's windows lie far from the training mean, where the rounding of the
    normalization alone moves small distances by 3e-5)."""
    inv_std = (1.0 / trained.std.astype(np.float32)).astype(np.float32)
    z = ((np.asarray(windows, np.float32) - trained.mean.astype(np.float32)) * inv_std
         ).astype(np.float64)
    per_scale = []
    for scale, per_point in points_per_scale(trained.params).items():
        a = trained.arrays
        errors = _nearest_errors(a[BANK + str(scale)], np.asarray(reduced(z, scale, per_point)))
        floor = a.get(f"{FLATLINE_PREFIX}floor.{scale}")
        if floor is not None:
            errors = errors + flatline_term(z[:, z.shape[1] - scale:, :], floor,
                                            float(a[f"{FLATLINE_PREFIX}penalty.{scale}"][0]))
        per_scale.append(errors / float(a[SCALE + str(scale)][0]))
    stacked = np.stack(per_scale, axis=1)
    scores = stacked.mean(axis=2)
    best = np.argmax(scores, axis=1)
    return (scores.max(axis=1).astype(np.float32),
            stacked[np.arange(len(stacked)), best].astype(np.float32))
