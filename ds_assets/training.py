"""Dense autoencoder training: seeded, early-stopped on validation loss, GPU when present.

Trained weights travel as a plain ``.npz`` of float arrays plus JSON (never pickle), so loading a
detector cannot execute code.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

KIND = "dense_autoencoder"


class TrainingConfigError(ValueError):
    """A training configuration or dataset that cannot work; the message says which value."""


@dataclass(frozen=True)
class AutoencoderParams:
    hidden: tuple[int, ...] = (32, 16, 4)
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    min_delta: float = 1e-4
    seed: int = 0
    max_train_rows: int | None = 200_000

    def validate(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise TrainingConfigError(
                f"hidden={self.hidden}: need one or more positive layer sizes"
            )
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise TrainingConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.learning_rate > 0:
            raise TrainingConfigError(f"learning_rate={self.learning_rate} must be > 0")


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


@dataclass
class TrainedAutoencoder:
    features: list[str]
    hidden: list[int]
    mean: np.ndarray
    std: np.ndarray
    state: dict[str, np.ndarray]
    history: dict[str, Any] = field(default_factory=dict)

    def module(self) -> nn.Sequential:
        model = build_autoencoder(len(self.features), self.hidden)
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self.state.items()})
        return model.eval()

    def to_bytes(self) -> bytes:
        meta = {"features": self.features, "hidden": self.hidden, "history": self.history}
        arrays: dict[str, Any] = {f"state/{k}": v for k, v in self.state.items()}
        arrays.update(
            mean=self.mean,
            std=self.std,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        )
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes) -> TrainedAutoencoder:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            meta = json.loads(npz["meta"].tobytes().decode())
            state = {k.removeprefix("state/"): npz[k] for k in npz.files if k.startswith("state/")}
            return cls(
                features=list(meta["features"]),
                hidden=list(meta["hidden"]),
                mean=npz["mean"],
                std=npz["std"],
                state=state,
                history=meta["history"],
            )


def check_training_data(x: np.ndarray, features: Sequence[str], what: str) -> None:
    if x.ndim != 2 or x.shape[1] == 0:
        raise TrainingConfigError(f"{what}: need at least one feature column, got shape {x.shape}")
    if x.shape[1] != len(features):
        raise TrainingConfigError(f"{what}: {x.shape[1]} columns but {len(features)} feature names")
    if x.shape[0] < 2:
        raise TrainingConfigError(f"{what}: need at least 2 rows, got {x.shape[0]}")
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise TrainingConfigError(
            f"{what}: feature {features[col]!r} is {x[row, col]} at row {row}; training data "
            f"must be finite ({int(bad.sum())} bad values)"
        )


def normalization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std from the training rows only; constant features get std 1 to avoid 0/0."""
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_autoencoder(
    train: np.ndarray,
    val: np.ndarray,
    features: Sequence[str],
    params: AutoencoderParams = AutoencoderParams(),
    device: torch.device | None = None,
) -> TrainedAutoencoder:
    """Fit on normal rows; keep the weights of the epoch with the best validation loss."""
    params.validate()
    check_training_data(train, features, "training rows")
    check_training_data(val, features, "validation rows")
    started = time.perf_counter()
    device = device or pick_device()
    rng = np.random.default_rng(params.seed)
    if params.max_train_rows and len(train) > params.max_train_rows:
        train = train[np.sort(rng.choice(len(train), params.max_train_rows, replace=False))]
    mean, std = normalization(train)
    torch.manual_seed(params.seed)
    model = build_autoencoder(len(features), params.hidden).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
    )
    xt = torch.from_numpy(((train - mean) / std).astype(np.float32)).to(device)
    xv = torch.from_numpy(((val - mean) / std).astype(np.float32)).to(device)
    generator = torch.Generator(device="cpu").manual_seed(params.seed)
    train_curve: list[float] = []
    val_curve: list[float] = []
    best = (math.inf, 0, {k: v.detach().clone() for k, v in model.state_dict().items()})
    for epoch in range(params.epochs):
        model.train()
        order = torch.randperm(len(xt), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(xt), params.batch_size):
            batch = xt[order[start : start + params.batch_size]]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.mean((model(batch) - batch) ** 2)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        model.eval()
        with torch.no_grad():
            val_loss = float(torch.mean((model(xv) - xv) ** 2))
        train_curve.append(total / len(xt))
        val_curve.append(val_loss)
        if val_loss < best[0] - params.min_delta:
            best = (val_loss, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
        elif epoch - best[1] >= params.patience:
            break
    state = {k: v.cpu().numpy() for k, v in best[2].items()}
    history = {
        "params": {**asdict(params), "hidden": list(params.hidden)},
        "train_loss": train_curve,
        "val_loss": val_curve,
        "best_epoch": best[1],
        "best_val_loss": best[0],
        "epochs_run": len(val_curve),
        "stopped_early": len(val_curve) < params.epochs,
        "train_rows": len(train),
        "val_rows": len(val),
        "device": str(device),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    return TrainedAutoencoder(
        features=list(features),
        hidden=list(params.hidden),
        mean=mean,
        std=std,
        state=state,
        history=history,
    )
