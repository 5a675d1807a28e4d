"""Backwards-compatible dense-autoencoder API over ``ds_assets.detectors``.

New code calls ``ds_assets.detectors.train_detector`` with a ``DetectorParams``; these names stay
so existing callers (tests, helpers) keep working and get a ``TrainedDetector`` back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ds_assets.detectors import (
    KINDS,
    DetectorConfigError,
    DetectorParams,
    TrainedDetector,
    build_autoencoder,
    check_training_data,
    normalization,
    pick_device,
    train_detector,
)

__all__ = [
    "KIND",
    "AutoencoderParams",
    "TrainedAutoencoder",
    "TrainingConfigError",
    "build_autoencoder",
    "check_training_data",
    "normalization",
    "pick_device",
    "train_autoencoder",
]

KIND = KINDS["dense_ae"]
TrainingConfigError = DetectorConfigError
TrainedAutoencoder = TrainedDetector


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

    def detector_params(self) -> DetectorParams:
        """The equivalent ``DetectorParams`` (validated there)."""
        return DetectorParams(
            family="dense_ae",
            hidden=tuple(self.hidden),
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            patience=self.patience,
            min_delta=self.min_delta,
            seed=self.seed,
            max_train_rows=self.max_train_rows,
        )

    def validate(self) -> None:
        self.detector_params()


def train_autoencoder(
    train: np.ndarray,
    val: np.ndarray,
    features: Sequence[str],
    params: AutoencoderParams = AutoencoderParams(),
    device: torch.device | None = None,
) -> TrainedDetector:
    """Dense autoencoder on normal rows; see ``train_detector``."""
    return train_detector(params.detector_params(), train, val, features, device=device)
