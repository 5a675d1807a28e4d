"""The torch side of the detectors: the autoencoder modules, the gradient-descent fit, and the
device and thread settings it runs under.

Apart from ``ds_assets.training.detectors`` (parameters, the trained artifact, PCA) because
importing torch takes 3 s: the code location that every run worker, code server and CLI loads
imports the detectors module, and only the steps that fit or export a model import this one.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ds_assets.training.detectors import (
    DEVICES,
    EARLY_STOPPING_ITEMS,
    ERROR_SCALE_FLOOR,
    ERROR_SCALE_KEY,
    LOG,
    DetectorConfigError,
    DetectorParams,
    _curve_summary,
    _flatline,
    _is_weight,
    recent_weights,
)

# windows (rows) per no-grad forward in validation: the temporal AE's convolutions run about 2x
# faster over 256 windows at a time than over 8,192 (the chunk's activations stay in cache)
_EVAL_BATCH = 256


def build_autoencoder(n_features: int, hidden: Sequence[int]) -> nn.Sequential:
    """Mirror-symmetric MLP; the last hidden size is the bottleneck."""
    sizes = [n_features, *hidden]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    rev = sizes[::-1]
    for i, (a, b) in enumerate(itertools.pairwise(rev)):
        layers.append(nn.Linear(a, b))
        if i < len(rev) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ConvAutoencoder(nn.Module):
    """[batch, W, F] -> [batch, W, F]: 'same'-padded 1-D convolutions over time around a dense
    bottleneck of ``latent`` units, so the whole window is compressed, not just each row."""

    def __init__(
        self, n_features: int, window: int, channels: Sequence[int], kernel_size: int, latent: int
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        encoder: list[nn.Module] = []
        c_in = n_features
        for c in channels:
            encoder += [nn.Conv1d(c_in, c, kernel_size, padding=pad), nn.ReLU()]
            c_in = c
        self.encoder = nn.Sequential(*encoder)
        self.window = window
        self.last_channels = c_in
        self.to_latent = nn.Linear(c_in * window, latent)
        self.from_latent = nn.Linear(latent, c_in * window)
        rev = list(channels)[::-1]
        decoder: list[nn.Module] = []
        for a, b in itertools.pairwise(rev):
            decoder += [nn.Conv1d(a, b, kernel_size, padding=pad), nn.ReLU()]
        decoder.append(nn.Conv1d(rev[-1], n_features, kernel_size, padding=pad))
        self.decoder = nn.Sequential(*decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x.transpose(1, 2))  # [B, C, W]
        z = self.to_latent(torch.flatten(h, 1))
        h = torch.relu(self.from_latent(z)).reshape(-1, self.last_channels, self.window)
        return self.decoder(h).transpose(1, 2)


def build_module(params: DetectorParams, n_features: int) -> nn.Module:
    if params.family == "dense_ae":
        return build_autoencoder(n_features, params.hidden)
    if params.family == "temporal_ae":
        return ConvAutoencoder(
            n_features, params.window, params.channels, params.kernel_size, params.latent
        )
    raise DetectorConfigError(f"family={params.family!r} has no torch module")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA where torch sees a GPU, else CPU. Measured on an H200 host (16 cores), the
    small dense AE trains about 1.3x faster on its CPU (launch-bound on the GPU) while the
    temporal AE trains 1.7-2x faster on CUDA (bench/results/gpu-training-h200-*.json), so the
    choice is the operator's to make per run."""
    if name not in DEVICES:
        raise DetectorConfigError(f"device={name!r}: choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise DetectorConfigError(
            "device='cuda' but torch sees no CUDA GPU (a CPU build of torch, or no driver); "
            "use device='auto' or 'cpu'"
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count for the block, and the BLAS threads of numpy work in it
    (the nearest-window bank's distances, PCA) alike (process-wide, so restored after)."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def fit_autoencoder(
    params: DetectorParams,
    n_features: int,
    zt: np.ndarray,
    zv: np.ndarray,
    train_windows: np.ndarray | None,
    val_windows: np.ndarray | None,
    device: torch.device,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Shared loop: ``*_windows`` (int [m, W] row positions) switch to windowed batches that
    are gathered on the fly, so W-times-larger window tensors are never materialized."""
    rng = np.random.default_rng(params.seed)
    n_items = len(zt) if train_windows is None else len(train_windows)
    # each epoch trains on a fresh sample of at most ``max_train_rows`` items
    n_train = min(n_items, params.max_train_rows or n_items)
    n_val_items = len(zv) if val_windows is None else len(val_windows)
    val_keep = np.arange(n_val_items)
    if n_val_items > EARLY_STOPPING_ITEMS:  # one sample for every epoch: losses compare
        val_keep = np.sort(rng.choice(n_val_items, EARLY_STOPPING_ITEMS, replace=False))
    n_val = len(val_keep)
    torch.manual_seed(params.seed)
    model = build_module(params, n_features).to(device)
    # fused: one kernel per step for all parameters instead of a Python loop over them (the
    # loop was 40 % of a small model's step on CPU); same update rule
    optimizer = torch.optim.Adam(
        model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay,
        fused=True,
    )
    xt = torch.from_numpy(zt).to(device)
    xv = torch.from_numpy(zv).to(device)
    if train_windows is None:
        xv = xv[torch.from_numpy(val_keep).to(device)]

        def train_batch(idx: torch.Tensor) -> torch.Tensor:
            return xt[idx]

        def val_batch(sl: slice) -> torch.Tensor:
            return xv[sl]
    else:
        assert val_windows is not None
        tw = torch.from_numpy(train_windows).to(device)
        vw = torch.from_numpy(val_windows[val_keep]).to(device)

        def train_batch(idx: torch.Tensor) -> torch.Tensor:
            return xt[tw[idx]]

        def val_batch(sl: slice) -> torch.Tensor:
            return xv[vw[sl]]

    orders = epoch_orders(n_items, n_train, params.seed)
    train_curve: list[float] = []
    val_curve: list[float] = []
    best_loss, best_epoch = math.inf, 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for epoch in range(params.epochs):
        model.train()
        order = next(orders).to(device)
        total = torch.zeros((), device=device)  # summed on the device: no sync per step
        for start in range(0, n_train, params.batch_size):
            batch = train_batch(order[start : start + params.batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss = torch.mean((model(batch) - batch) ** 2)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(batch)
        val_loss = _mean_loss(model, val_batch, n_val)
        train_curve.append(float(total) / n_train)
        val_curve.append(val_loss)
        improved = val_loss < best_loss - params.min_delta
        if improved:
            best_loss, best_epoch = val_loss, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        LOG.info("%s epoch %d/%d: train loss %.4g, validation loss %.4g (best at epoch %d)",
                 params.family, epoch + 1, params.epochs, train_curve[-1], val_loss,
                 best_epoch + 1)
        if not improved and epoch - best_epoch >= params.patience:
            break
    if not math.isfinite(best_loss):
        raise DetectorConfigError(
            f"training diverged: validation loss was never finite ({val_curve[:5]}...); the model "
            f"still has its random initial weights. Lower learning_rate={params.learning_rate} "
            "or check the training data's scale"
        )
    summary: dict[str, Any] = {
        "epochs_run": len(val_curve),
        "best_epoch": best_epoch,
        "best_val_loss": best_loss,
        "stopped_early": len(val_curve) < params.epochs,
        "train_loss": train_curve,
        "val_loss": val_curve,
        "loss_curve": _curve_summary(train_curve, val_curve, best_epoch),
        "device": str(device),
        "train_items": n_items,
        "train_items_per_epoch": n_train,
        "val_items": n_val_items,
        "early_stopping_items": n_val,
    }
    if train_windows is not None:
        summary.update(train_windows=n_items, val_windows=n_val_items)
    return {k: v.cpu().numpy() for k, v in best_state.items()}, summary


def autoencoder(params: DetectorParams, n_features: int, arrays: dict[str, np.ndarray],
                 ) -> nn.Module:
    """The module with these trained weights (the flat-line numbers are not weights), in eval
    mode."""
    model = build_module(params, n_features)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in arrays.items()
                           if _is_weight(k)})
    return model.eval()


def epoch_orders(n_items: int, per_epoch: int, seed: int) -> Iterator[torch.Tensor]:
    """Each epoch's training items in order: a fresh random ``per_epoch`` of the ``n_items``
    (all of them, shuffled, when ``per_epoch >= n_items``)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    while True:
        yield torch.randperm(n_items, generator=generator)[:per_epoch]


def fitted_on_errors(
    params: DetectorParams, arrays: dict[str, np.ndarray], zt: np.ndarray, zv: np.ndarray,
    train_windows: np.ndarray | None, val_windows: np.ndarray | None, summary: dict[str, Any],
) -> dict[str, np.ndarray]:
    """What an autoencoder fits on its validation errors after the weights: the per-feature
    error scale (``error_scale``), then the flat-line term (temporal models), which is in the
    scaled units. One pass over the validation items serves both."""
    flat = train_windows is not None and params.flatline_quantile is not None
    if params.error_scale == "none" and not flat:
        return {}
    errors = validation_errors(params, arrays, zv, val_windows)
    extra: dict[str, np.ndarray] = {}
    if params.error_scale == "validation":
        scale = errors.mean(axis=0) if len(errors) else np.ones(zv.shape[1])
        floor = ERROR_SCALE_FLOOR * float(np.median(scale))
        scale = np.maximum(scale, max(floor, 1e-12))
        extra[ERROR_SCALE_KEY] = (1.0 / scale).astype(np.float32)
        errors = errors * extra[ERROR_SCALE_KEY]
        summary["error_scale"] = {"mean_validation_error": [round(float(v), 6) for v in scale]}
    if flat:
        assert train_windows is not None
        extra.update(_flatline(params, zt, train_windows, errors, summary))
    return extra


def window_errors(errors: torch.Tensor, temporal_score: str,
                  half_life: float = 2.0) -> torch.Tensor:
    """A window's per-feature error [B, F] from its rows' [B, W, F], as the score takes it."""
    if temporal_score == "last_row":
        return errors[:, -1, :]
    if temporal_score == "recent":
        weights = torch.from_numpy(recent_weights(errors.shape[1], half_life))
        return (errors * weights[None, :, None]).sum(dim=1)
    return errors.mean(dim=1)


def validation_errors(params: DetectorParams, arrays: dict[str, np.ndarray], zv: np.ndarray,
                       val_windows: np.ndarray | None) -> np.ndarray:
    """Per-feature squared errors [items, features] of the validation rows (dense) or windows
    (temporal: over the window, or its last row, as the score takes them), raw units."""
    model = autoencoder(params, zv.shape[1], arrays)
    xv = torch.from_numpy(zv)
    n = len(zv) if val_windows is None else len(val_windows)
    vw = None if val_windows is None else torch.from_numpy(val_windows)
    out = np.empty((n, zv.shape[1]), np.float32)
    with torch.no_grad():
        for start in range(0, n, _EVAL_BATCH):
            x = xv[start:start + _EVAL_BATCH] if vw is None else xv[vw[start:start + _EVAL_BATCH]]
            errors = (model(x) - x) ** 2
            if vw is not None:
                errors = window_errors(errors, params.temporal_score, params.recent_half_life)
            out[start:start + len(x)] = errors.numpy()
    return out


def _mean_loss(model: nn.Module, batch: Callable[[slice], torch.Tensor], n: int) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, n, _EVAL_BATCH):
            x = batch(slice(start, start + _EVAL_BATCH))
            total += float(torch.sum(torch.mean((model(x) - x) ** 2, dim=tuple(range(1, x.ndim)))))
    return total / n
