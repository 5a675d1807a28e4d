"""Detector families behind one API: dense autoencoder, temporal (1-D conv) autoencoder, PCA T²+Q.

``train_detector(params, train, val, features, ...)`` returns a ``TrainedDetector`` that every
later stage treats the same way: ``training.export.export_onnx`` turns it into the scoring graph
(normalization and score inside), the bundle records ``family``/``window``, and the scorer needs
no model-specific code. Everything a detector learns travels as ``.npz`` float arrays plus JSON
(``to_bytes``/``from_bytes``, never pickle), so loading one cannot execute code.

Conventions shared by all families, so their scores are comparable in spirit:
- normalization statistics (mean/std per feature) come from the training rows only;
- ``feature_errors`` are squared residuals per feature in normalized units;
- a config that cannot work raises ``DetectorConfigError`` *before* any training, naming the
  value and why.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from ds_serving.windows import group_positions, window_index

# torch (3 s to import) is imported where a model is fitted or exported: ``networks``
if TYPE_CHECKING:
    import torch
    from torch import nn

FAMILIES = ("dense_ae", "temporal_ae", "pca", "fused", "window_knn")
# Manifest ``kind`` of each family (what a bundle reader sees).
KINDS = {"dense_ae": "dense_autoencoder", "temporal_ae": "temporal_autoencoder", "pca": "pca_t2q",
         "fused": "fused_zscore_pca_temporal", "window_knn": "nearest_window_multiscale"}
# families scoring windows of W rows per entity (window_knn: W is its largest scale)
WINDOWED = ("temporal_ae", "fused", "window_knn")
AUTOENCODERS = ("dense_ae", "temporal_ae", "fused")  # families trained by gradient descent
TEMPORAL_SCORES = ("window_mean", "last_row", "recent")
PCA_COMBINE = ("max", "sum")
# autoencoders: "validation" divides each feature's error by its mean error on the validation
# items, so a feature the model reconstructs closely weighs as much as a noisy one
ERROR_SCALES = ("none", "validation")
# the smallest feature scale, as a share of the median feature's: a feature reconstructed
# almost exactly (constant in training) is weighed at most 100x the typical one
ERROR_SCALE_FLOOR = 0.01
_FORMAT = 1
# ``max_train_rows`` when left at 0: training items per epoch, a fresh sample each epoch. A
# temporal AE's window costs about 30x a dense AE's row, and windows one row apart repeat each
# other: on the demo's data 10,000 fresh windows an epoch fit a better model than all 139,000
# (test PR-AUC 0.72-0.79 against 0.53, seeds 0-2) in a seventh of the time
TRAIN_ITEMS_PER_EPOCH = {"dense_ae": 200_000, "temporal_ae": 10_000, "fused": 10_000}
# validation rows (dense) or windows (temporal) whose loss decides early stopping, drawn once by
# seed: the loss every epoch over all of them was nearly half of a temporal fit
EARLY_STOPPING_ITEMS = 8192
_VAL_CHUNK = 8192


class DetectorConfigError(ValueError):
    """A detector configuration or dataset that cannot work; the message names the value."""


# numeric parameters that may be None (no cap, no flat-line term)
_OPTIONAL_NUMBERS = frozenset({"max_train_rows", "max_components", "flatline_quantile"})


def _whole_numbers(values: Any) -> tuple[int, ...] | None:
    """A list of whole numbers as a tuple of ints; None when it is not one."""
    if isinstance(values, str | bytes):
        return None
    try:
        items = tuple(values)
    except TypeError:
        return None
    if any(isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v for v in items):
        return None
    return tuple(int(v) for v in items)


@dataclass(frozen=True)
class DetectorParams:
    """Family and hyper-parameters; fields of other families are ignored (and not validated
    beyond their type) so one config object can describe any detector."""

    family: str = "dense_ae"
    seed: int = 0
    # autoencoders (dense_ae, temporal_ae)
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    min_delta: float = 1e-4
    # rows (dense) or windows (temporal) per epoch, drawn afresh each epoch by seed; 0: the
    # family's default (TRAIN_ITEMS_PER_EPOCH); None: every item every epoch
    max_train_rows: int | None = 0
    hidden: tuple[int, ...] = (32, 16, 4)  # dense_ae: encoder sizes, the last is the bottleneck
    # temporal_ae: windows of ``window`` rows per entity, 1-D convolutions over time
    window: int = 16
    channels: tuple[int, ...] = (32, 16)
    kernel_size: int = 5
    latent: int = 16
    # window_mean, last_row (the error of the row the window ends at) or recent
    # (``recent_weights``: a row's weight halves every ``recent_half_life`` rows back)
    temporal_score: str = "window_mean"
    recent_half_life: float = 2.0
    # flat-line term (temporal_ae): a feature whose window is flatter than this quantile of the
    # training windows' spread adds up to ``flatline_weight`` x the 0.999 quantile of the
    # validation scores (a stuck sensor reconstructs well: its error alone never flags it);
    # None turns it off
    flatline_quantile: float | None = 0.001
    flatline_weight: float = 4.0
    error_scale: str = "none"  # autoencoders: one of ERROR_SCALES
    # pca: components explaining ``explained_variance`` of the normalized training variance
    explained_variance: float = 0.95
    max_components: int | None = None
    pca_combine: str = "max"  # max(T²/s_T², Q/s_Q) or t2_weight*T²/s_T² + (1-t2_weight)*Q/s_Q
    t2_weight: float = 0.5
    scale_quantile: float = 0.99  # s_T², s_Q: this quantile of the statistic on training rows
    # fused (z-score + pca + temporal_ae, each with the fields above): each member's score over
    # this quantile of its validation scores, then the maximum (``training.fusion``)
    fusion_quantile: float = 0.99
    # window_knn (``training.nearest_windows``): distance to the nearest of ``bank_size``
    # training windows at each of ``scales`` rows (a scale longer than ``scale_points`` is
    # averaged into that many points), each over its ``fusion_quantile``, then the maximum;
    # its window is the largest scale. Flat-line term as for temporal_ae.
    scales: tuple[int, ...] = (4, 16, 48)
    scale_points: int = 16
    bank_size: int = 4096

    def __post_init__(self) -> None:
        # launchpad/JSON configs deliver lists; keep the dataclass hashable and comparable
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.max_train_rows == 0:  # recorded resolved, so a manifest says what was used
            object.__setattr__(self, "max_train_rows", TRAIN_ITEMS_PER_EPOCH.get(self.family))

        def bad(name: str, why: str) -> DetectorConfigError:
            return DetectorConfigError(f"{name}={getattr(self, name)!r}: {why}")

        scales = _whole_numbers(self.scales)
        if scales is None:
            raise bad("scales", "must be a list of whole numbers of rows, e.g. [4, 16, 48]")
        object.__setattr__(self, "scales", scales)

        # numbers must be numbers (YAML reads 1e-3 as text, and the checks below compare)
        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if isinstance(default, bool) or not isinstance(default, int | float):
                continue
            if value is None and f.name in _OPTIONAL_NUMBERS:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad(f.name, "must be a number (in YAML write 0.001 or 1.0e-3: 1e-3 "
                                  "without a dot reads as text)")

        if self.family not in FAMILIES:
            raise bad("family", f"unknown detector family; choose one of {', '.join(FAMILIES)}")
        if self.seed < 0:
            raise bad("seed", "must be >= 0")
        if self.family == "window_knn":
            self._check_scales(bad)
        if self.family in AUTOENCODERS:
            for name in ("epochs", "batch_size", "patience"):
                if getattr(self, name) < 1:
                    raise bad(name, "must be >= 1")
            if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
                raise bad("learning_rate", "must be a finite number > 0")
            if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
                raise bad("weight_decay", "must be a finite number >= 0")
            if not (self.min_delta >= 0 and math.isfinite(self.min_delta)):
                raise bad("min_delta", "must be a finite number >= 0 (the improvement that resets "
                          "patience)")
            if self.max_train_rows is not None and self.max_train_rows < 1:
                raise bad("max_train_rows", "must be >= 1, 0 for the family's default, or None "
                          "for no cap")
            if self.error_scale not in ERROR_SCALES:
                raise bad("error_scale", f"choose one of {', '.join(ERROR_SCALES)}")
        if self.family == "dense_ae" and (not self.hidden or min(self.hidden) < 1):
            raise bad("hidden", "need one or more positive sizes (the last is the bottleneck)")
        if self.family in WINDOWED:
            if self.window < 2:
                raise bad("window", "must be >= 2 rows (a window of 1 row is the dense model)")
            if self.flatline_quantile is not None and not 0.0 < self.flatline_quantile < 0.5:
                raise bad("flatline_quantile", "must be in (0, 0.5), e.g. 0.001, or None for "
                          "no flat-line term")
            if not (self.flatline_weight >= 0 and math.isfinite(self.flatline_weight)):
                raise bad("flatline_weight", "must be a finite number >= 0")
        if self.family in ("temporal_ae", "fused"):
            if not self.channels or min(self.channels) < 1:
                raise bad("channels", "need one or more positive convolution channel counts")
            if self.kernel_size < 1 or self.kernel_size % 2 == 0:
                raise bad("kernel_size", "must be a positive odd number (keeps the window length)")
            if self.latent < 1:
                raise bad("latent", "must be >= 1")
            if self.temporal_score not in TEMPORAL_SCORES:
                raise bad("temporal_score", f"choose one of {', '.join(TEMPORAL_SCORES)}")
            if not (self.recent_half_life > 0 and math.isfinite(self.recent_half_life)):
                raise bad("recent_half_life", "must be a number of rows > 0")
        if self.family in ("pca", "fused"):
            if not 0.0 < self.explained_variance <= 1.0:
                raise bad("explained_variance", "must be in (0, 1], e.g. 0.95")
            if self.max_components is not None and self.max_components < 1:
                raise bad("max_components", "must be >= 1, or None for no cap")
            if self.pca_combine not in PCA_COMBINE:
                raise bad("pca_combine", f"choose one of {', '.join(PCA_COMBINE)}")
            if not 0.0 <= self.t2_weight <= 1.0:
                raise bad("t2_weight", "must be in [0, 1] (weight of T² against Q)")
            if not 0.0 < self.scale_quantile < 1.0:
                raise bad("scale_quantile", "must be strictly between 0 and 1")
        if self.family in ("fused", "window_knn") and not 0.0 < self.fusion_quantile < 1.0:
            raise bad("fusion_quantile", "must be strictly between 0 and 1, e.g. 0.99")

    def _check_scales(self, bad: Callable[[str, str], DetectorConfigError]) -> None:
        """window_knn: scales that reduce to whole points; the window becomes the largest."""
        for name in ("scale_points", "bank_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value:
                raise bad(name, "must be a whole number")
            object.__setattr__(self, name, int(value))
        if (not self.scales or min(self.scales) < 1
                or len(set(self.scales)) != len(self.scales)):
            raise bad("scales", "need one or more distinct whole window lengths in rows, "
                      "e.g. [4, 16, 48]")
        if max(self.scales) < 2:
            raise bad("scales", "the longest must be >= 2 rows (a window of 1 row is a point "
                      "model)")
        if self.scale_points < 1:
            raise bad("scale_points", "must be >= 1")
        uneven = [s for s in self.scales if s > self.scale_points and s % self.scale_points]
        if uneven:
            raise bad("scales", f"{uneven} longer than scale_points={self.scale_points} must be "
                      "a multiple of it (each point averages whole rows)")
        if self.bank_size < 1:
            raise bad("bank_size", "must be >= 1 (training windows to compare with)")
        largest = max(self.scales)
        if self.window not in (DetectorParams.window, largest):
            raise bad("window", f"window_knn's window is its largest scale ({largest}); set "
                      "scales instead")
        object.__setattr__(self, "scales", tuple(sorted(self.scales)))
        object.__setattr__(self, "window", largest)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        data["channels"] = list(self.channels)
        data["scales"] = list(self.scales)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DetectorConfigError(f"unknown detector parameter(s) {unknown}")
        return cls(**data)

    def relevant(self) -> dict[str, Any]:
        """Only the parameters this family uses (for MLflow params and metadata)."""
        common = ["family", "seed"]
        ae = ["epochs", "batch_size", "learning_rate", "weight_decay", "patience", "min_delta",
              "max_train_rows", "error_scale"]
        temporal = ["window", "channels", "kernel_size", "latent", "temporal_score",
                    *(["recent_half_life"] if self.temporal_score == "recent" else []),
                    "flatline_quantile", "flatline_weight"]
        pca = ["explained_variance", "max_components", "pca_combine", "t2_weight",
               "scale_quantile"]
        per_family = {
            "dense_ae": [*common, *ae, "hidden"],
            "temporal_ae": [*common, *ae, *temporal],
            "pca": [*common, *pca],
            "fused": [*common, *ae, *temporal, *pca, "fusion_quantile"],
            "window_knn": [*common, "scales", "scale_points", "bank_size", "window",
                           "flatline_quantile", "flatline_weight", "fusion_quantile"],
        }[self.family]
        data = self.to_dict()
        return {k: data[k] for k in per_family}


# --------------------------------------------------------------------------------------------
# modules


# --------------------------------------------------------------------------------------------
# the trained artifact


@dataclass
class TrainedDetector:
    """What a detector learned. ``arrays`` holds torch weights (autoencoders) or the PCA basis."""

    family: str
    features: list[str]
    params: DetectorParams
    mean: np.ndarray  # float32 [n_features], training rows only
    std: np.ndarray  # float32 [n_features], constant features get 1
    arrays: dict[str, np.ndarray]
    training_summary: dict[str, Any] = field(default_factory=dict)

    @property
    def window(self) -> int | None:
        """Rows per model input for temporal models; None for point-wise ones."""
        return self.params.window if self.family in WINDOWED else None

    @property
    def kind(self) -> str:
        return KINDS[self.family]

    @property
    def history(self) -> dict[str, Any]:
        """Backwards-compatible name of ``training_summary``."""
        return self.training_summary

    @property
    def state(self) -> dict[str, np.ndarray]:
        """Backwards-compatible name of ``arrays`` (torch state dict of an autoencoder)."""
        return self.arrays

    def module(self) -> nn.Module:
        """The torch module of an autoencoder with its trained weights, in eval mode."""
        from ds_assets.training.networks import autoencoder

        return autoencoder(self.params, len(self.features), self.arrays)

    @property
    def flatline(self) -> tuple[np.ndarray, float] | None:
        """(per-feature floor of the window spread, penalty) of a temporal model's flat-line
        term; None without one (turned off, or a detector trained before it existed)."""
        floor = self.arrays.get(FLATLINE_PREFIX + "floor")
        if floor is None:
            return None
        return floor, float(self.arrays[FLATLINE_PREFIX + "penalty"][0])

    @property
    def error_scale_inverse(self) -> np.ndarray | None:
        """1 / each feature's mean validation error (``error_scale: validation``): the graph
        multiplies feature errors by it; None for raw errors."""
        return self.arrays.get(ERROR_SCALE_KEY)

    def to_bytes(self) -> bytes:
        meta = {
            "format": _FORMAT,
            "family": self.family,
            "features": self.features,
            "params": self.params.to_dict(),
            "training_summary": self.training_summary,
        }
        arrays: dict[str, Any] = {f"arrays/{k}": v for k, v in self.arrays.items()}
        arrays.update(
            mean=self.mean,
            std=self.std,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        )
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes) -> TrainedDetector:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            meta = json.loads(npz["meta"].tobytes().decode())
            if meta.get("format") != _FORMAT:
                raise DetectorConfigError(
                    f"stored detector has format {meta.get('format')!r}, this code reads "
                    f"{_FORMAT}; retrain the detector"
                )
            return cls(
                family=meta["family"],
                features=list(meta["features"]),
                params=DetectorParams.from_dict(meta["params"]),
                mean=npz["mean"],
                std=npz["std"],
                arrays={
                    k.removeprefix("arrays/"): npz[k] for k in npz.files if k.startswith("arrays/")
                },
                training_summary=meta["training_summary"],
            )


# --------------------------------------------------------------------------------------------
# input checks (all before training)


def check_training_data(x: np.ndarray, features: Sequence[str], what: str) -> np.ndarray:
    """Return ``x`` as float32 [rows, n_features] or raise naming the bad value and column."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0 or len(features) == 0:
        raise DetectorConfigError(
            f"{what}: need at least one feature column, got shape {x.shape} and "
            f"{len(features)} feature names"
        )
    if x.shape[1] != len(features):
        raise DetectorConfigError(
            f"{what}: {x.shape[1]} columns but {len(features)} feature names {list(features)}"
        )
    if x.shape[0] < 2:
        raise DetectorConfigError(f"{what}: need at least 2 rows, got {x.shape[0]}")
    if not np.issubdtype(x.dtype, np.number):
        raise DetectorConfigError(f"{what}: features must be numeric, got dtype {x.dtype}")
    x = np.asarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DetectorConfigError(
            f"{what}: feature {features[col]!r} is {x[row, col]} at row {row}; training data "
            f"must be finite ({int(bad.sum())} bad values; impute or drop them first)"
        )
    return x


def _check_entities(entities: np.ndarray | None, n_rows: int, what: str) -> np.ndarray:
    if entities is None:
        return np.zeros(n_rows, np.int8)
    keys = np.asarray(entities)
    if keys.ndim != 1 or len(keys) != n_rows:
        raise DetectorConfigError(
            f"{what}: got {len(keys)} entity ids (shape {keys.shape}) for {n_rows} rows; pass one "
            "id per row"
        )
    return keys


def _check_window_fits(keys: np.ndarray, window: int, what: str) -> None:
    groups = group_positions(keys)
    longest = max(groups, key=len)
    if len(longest) < window:
        first = keys[longest[0]]
        entity: Hashable = first.item() if isinstance(first, np.generic) else first
        raise DetectorConfigError(
            f"window={window} is longer than every entity's {what} (longest: entity "
            f"{entity!r} with {len(longest)} rows, {len(groups)} entities); use a smaller "
            "window or more data"
        )


def normalization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std from the training rows only; constant features get std 1 to avoid 0/0."""
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


DEVICES = ("auto", "cpu", "cuda")


# --------------------------------------------------------------------------------------------
# training


# one line per epoch (``ds-dataset materialize`` prints them)
LOG = logging.getLogger("ds_assets.training")

# why a family cannot learn anything from one column (rows carry no relation between features)
UNIVARIATE_REFUSALS = {
    "pca": "PCA of one column is its z-score, no model to learn",
    "dense_ae": "an autoencoder of single values has no smaller code to squeeze them through",
}


def train_detector(
    params: DetectorParams,
    train: np.ndarray,
    val: np.ndarray,
    features: Sequence[str],
    *,
    train_entities: np.ndarray | None = None,
    val_entities: np.ndarray | None = None,
    device: torch.device | None = None,
    threads: int | None = None,
) -> TrainedDetector:
    """Fit a detector on normal rows (time-ordered within each entity).

    ``threads``: torch's CPU threads while fitting (restored after); None keeps torch's.

    Autoencoders keep the weights of the epoch with the best validation loss (early stopping
    after ``patience`` epochs without ``min_delta`` improvement). Entities only matter for
    ``temporal_ae``: windows never cross entities and are built with
    ``ds_serving.windows.window_index``, exactly as scoring builds them.
    """
    features = list(features)
    train = check_training_data(train, features, "training rows")
    val = check_training_data(val, features, "validation rows")
    if len(set(features)) != len(features):
        raise DetectorConfigError(f"feature names must be unique, got {features}")
    if len(features) == 1 and params.family in UNIVARIATE_REFUSALS:
        raise DetectorConfigError(
            f"family {params.family} on the one feature {features[0]!r}: "
            f"{UNIVARIATE_REFUSALS[params.family]}; use family temporal_ae, which learns "
            "windows of the series")
    train_keys: np.ndarray | None = None
    val_keys: np.ndarray | None = None
    if params.family in WINDOWED:
        train_keys = _check_entities(train_entities, len(train), "training rows")
        val_keys = _check_entities(val_entities, len(val), "validation rows")
        _check_window_fits(train_keys, params.window, "training rows")
        _check_window_fits(val_keys, params.window, "validation rows")
    from ds_assets.training import networks  # torch: imported where a model is fitted

    started = time.perf_counter()
    with networks.torch_threads(threads):
        arrays, summary, mean, std = _fit(params, features, train, val, train_keys, val_keys,
                                          device)
    summary.update(
        family=params.family,
        seed=params.seed,
        train_rows=len(train),
        val_rows=len(val),
        wall_time_s=round(time.perf_counter() - started, 3),
        params=params.relevant(),
        threads=threads if threads is not None else networks.torch.get_num_threads(),
    )
    return TrainedDetector(
        family=params.family,
        features=features,
        params=params,
        mean=mean,
        std=std,
        arrays=arrays,
        training_summary=summary,
    )


def _fit(
    params: DetectorParams, features: list[str], train: np.ndarray, val: np.ndarray,
    train_keys: np.ndarray | None, val_keys: np.ndarray | None, device: torch.device | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any], np.ndarray, np.ndarray]:
    """Normalize and fit the family; (arrays, summary, mean, std)."""
    mean, std = normalization(train)
    if params.family == "pca":
        arrays, summary = _fit_pca(params, (train - mean) / std, (val - mean) / std)
        return arrays, summary, mean, std
    if params.family == "window_knn":
        from ds_assets.training.nearest_windows import fit_window_knn  # it builds on this module

        assert train_keys is not None and val_keys is not None
        arrays, summary = fit_window_knn(params, ((train - mean) / std).astype(np.float32),
                                         ((val - mean) / std).astype(np.float32), train_keys,
                                         val_keys)
        return arrays, summary, mean, std
    from ds_assets.training.networks import fit_autoencoder, fitted_on_errors, pick_device

    device = device or pick_device()
    zt = ((train - mean) / std).astype(np.float32)
    zv = ((val - mean) / std).astype(np.float32)
    if params.family == "fused":
        from ds_assets.training.fusion import fit_fused  # it builds on this module

        assert train_keys is not None and val_keys is not None
        arrays, summary = fit_fused(params, features, zt, zv, val, mean, std, train_keys,
                                    val_keys, device)
        return arrays, summary, mean, std
    if params.family == "temporal_ae":
        assert train_keys is not None and val_keys is not None
        ti = window_index(train_keys, params.window).starts
        vi = window_index(val_keys, params.window).starts
        arrays, summary = fit_autoencoder(params, len(features), zt, zv, ti, vi, device)
        arrays.update(fitted_on_errors(params, arrays, zt, zv, ti, vi, summary))
    else:
        arrays, summary = fit_autoencoder(params, len(features), zt, zv, None, None, device)
        arrays.update(fitted_on_errors(params, arrays, zt, zv, None, None, summary))
    return arrays, summary, mean, std


FLATLINE_PREFIX = "flatline_"
ERROR_SCALE_KEY = "error_scale_inverse"


def _is_weight(name: str) -> bool:
    return not (name.startswith(FLATLINE_PREFIX) or name == ERROR_SCALE_KEY)


def window_spread(z: np.ndarray, windows: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Population std over each window's rows, per feature: [windows, features]. ``windows``
    holds each window's row positions ([m, W], ``window_index``): an entity's rows need not be
    adjacent (telemetry sorted by time interleaves its hosts), so the rows are gathered, as the
    scoring graph sees them, a chunk of windows at a time."""
    spread = np.empty((len(windows), z.shape[1]), np.float64)
    for start in range(0, len(windows), chunk):
        spread[start:start + chunk] = z[windows[start:start + chunk]].astype(np.float64).std(axis=1)
    return spread


def recent_weights(window: int, half_life: float = 2.0) -> np.ndarray:
    """Weights of a window's rows (oldest first) in its ``recent`` score: halving every
    ``half_life`` rows back from the last, summing to 1. With 16 rows and a half-life of 2, a
    one-row spike at the end weighs 0.29 of the score (1/16 in the window mean) while a shift
    of the whole window weighs all of it, as in the mean; the price is a noisier score (as if
    averaged over 6 rows), so a higher threshold."""
    weights = 0.5 ** (np.arange(window - 1, -1, -1) / half_life)
    return (weights / weights.sum()).astype(np.float32)


def _flatline(
    params: DetectorParams, zt: np.ndarray, train_windows: np.ndarray, val_errors: np.ndarray,
    summary: dict[str, Any],
) -> dict[str, np.ndarray]:
    """The flat-line term's numbers: each feature's floor (the ``flatline_quantile`` of its
    training windows' spread; 0, i.e. off, for a feature that is often flat in training), and
    the penalty of a fully flat feature, ``flatline_weight`` x the 0.999 quantile of the
    validation windows' scores x the number of features (scores average over features)."""
    assert params.flatline_quantile is not None
    spread = window_spread(zt, train_windows)
    floor = np.quantile(spread, params.flatline_quantile, axis=0)
    floor = np.where(floor > 1e-3, floor, 0.0).astype(np.float32)
    scores = val_errors.mean(axis=1)
    top = float(np.quantile(scores, 0.999)) if len(scores) else 0.0
    penalty = params.flatline_weight * top * zt.shape[1]
    summary["flatline"] = {"features_watched": int((floor > 0).sum()), "penalty": penalty,
                           "val_score_q999": top}
    return {FLATLINE_PREFIX + "floor": floor,
            FLATLINE_PREFIX + "penalty": np.array([penalty], np.float32)}


def _curve_summary(train: list[float], val: list[float], best_epoch: int) -> dict[str, float]:
    return {
        "first_train_loss": train[0],
        "last_train_loss": train[-1],
        "first_val_loss": val[0],
        "best_val_loss": val[best_epoch],
        "last_val_loss": val[-1],
    }


def _fit_pca(
    params: DetectorParams, zt: np.ndarray, zv: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Principal axes of the normalized training rows; T² and Q scaled by training quantiles."""
    n_features = zt.shape[1]
    cov = np.cov(zt.astype(np.float64), rowvar=False).reshape(n_features, n_features)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(eigvals)[::-1]
    eigvals = np.clip(eigvals[order], 0.0, None)
    eigvecs = eigvecs[:, order]
    total = float(eigvals.sum())
    ratio = eigvals / total if total > 0 else np.full(n_features, 1.0 / n_features)
    cumulative = np.cumsum(ratio)
    k = int(np.searchsorted(cumulative, params.explained_variance - 1e-12) + 1)
    # keep the residual subspace non-empty so Q means something
    k = min(k, max(1, n_features - 1), params.max_components or n_features)
    floor = max(float(eigvals[0]) * 1e-6, 1e-12)
    arrays = {
        "components": eigvecs[:, :k].astype(np.float32),
        "eigenvalues": np.maximum(eigvals[:k], floor).astype(np.float32),
        "scales": np.ones(2, np.float32),
    }
    t2, q = pca_statistics(arrays, zt)
    arrays["scales"] = np.array(
        [max(float(np.quantile(t2, params.scale_quantile)), 1e-12),
         max(float(np.quantile(q, params.scale_quantile)), 1e-12)],
        np.float32,
    )
    _, q_val = pca_statistics(arrays, zv)
    summary: dict[str, Any] = {
        "epochs_run": 0,
        "best_epoch": 0,
        "best_val_loss": float(np.mean(q_val) / n_features),
        "stopped_early": False,
        "n_components": k,
        "explained_variance_ratio": float(cumulative[k - 1]),
        "t2_scale": float(arrays["scales"][0]),
        "q_scale": float(arrays["scales"][1]),
        "loss_curve": {"best_val_loss": float(np.mean(q_val) / n_features)},
        "device": "cpu",
    }
    return arrays, summary


def _pca_projection(
    arrays: dict[str, np.ndarray], z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Hotelling T² [n] and the squared residual per feature [n, f] of normalized rows."""
    p = arrays["components"].astype(np.float64)
    t = z.astype(np.float64) @ p
    t2 = np.sum(t * t / arrays["eigenvalues"].astype(np.float64), axis=1)
    residual = z - t @ p.T
    return t2, residual * residual


def pca_statistics(arrays: dict[str, np.ndarray], z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hotelling T² and Q (squared prediction error) of normalized rows, in float64."""
    t2, errors = _pca_projection(arrays, z)
    return t2, errors.sum(axis=1)


def pca_reference_scores(
    trained: TrainedDetector, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Numpy reference of the PCA scoring graph: (score [n], feature_errors [n, f])."""
    z = (np.asarray(rows, np.float64) - trained.mean) / trained.std
    arrays = trained.arrays
    t2, errors = _pca_projection(arrays, z)
    a = t2 / float(arrays["scales"][0])
    b = errors.sum(axis=1) / float(arrays["scales"][1])
    if trained.params.pca_combine == "max":
        score = np.maximum(a, b)
    else:
        w = trained.params.t2_weight
        score = w * a + (1.0 - w) * b
    return score, errors
