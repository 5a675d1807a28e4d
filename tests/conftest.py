"""Shared fixtures: tiny telemetry, isolated data dirs, one MLflow SQLite store per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ds_assets.dataset import Dataset
from ds_assets.settings import Settings

TINY_SOURCE: dict[str, Any] = {
    "n_hosts": 3,
    "interval_seconds": 300,
    "seed": 7,
    "anomaly_rate": 0.03,
}
DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def settings(tmp_path: Path, mlflow_uri: str) -> Settings:
    data = tmp_path / "data"
    return Settings(
        data_dir=data,
        models_dir=data / "models",
        mlflow_tracking_uri=mlflow_uri,
        mlflow_artifacts=tmp_path / "mlartifacts",
        mlflow_experiment=f"test-{tmp_path.name}",
        model_name="test-ae",
    )


@pytest.fixture
def dataset(settings: Settings) -> Dataset:
    """The default dataset (unprefixed keys and names) of ``settings``."""
    return Dataset.default(settings)


@pytest.fixture
def rng() -> Iterator[np.random.Generator]:
    yield np.random.default_rng(0)
