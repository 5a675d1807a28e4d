"""Training builders shared by tests: correlated rows, a tiny detector, a tiny training run and
the days it trains on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ds_assets.training.detectors import DetectorParams, TrainedDetector, train_detector
from tests.conftest import DAYS, TINY_SOURCE

if TYPE_CHECKING:
    import dagster as dg

    from ds_assets.settings import Settings

FEATURES = [f"f{i}" for i in range(1, 5)]


def correlated_rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 1))
    mix = np.array([[1.0, 0.8, -0.5, 2.0]])
    return (latent @ mix + 0.1 * rng.normal(size=(n, 4)) + [10, 20, 30, 40]).astype(np.float32)


def tiny_model(epochs: int = 3, seed: int = 0) -> TrainedDetector:
    return train_detector(
        DetectorParams(hidden=(8, 2), epochs=epochs, batch_size=64, seed=seed),
        correlated_rows(512, seed),
        correlated_rows(128, seed + 1),
        FEATURES,
    )

TRAIN_CONFIG = {
    "ops": {
        "training_set": {"config": {"n_partitions": len(DAYS), "end_partition": DAYS[-1]}},
        "detector": {"config": {"family": "dense_ae", "epochs": 1, "hidden": [8, 3],
                                "batch_size": 128}},
    }
}
# a tiny temporal model (window 4) on the first two days: state that crosses midnight
TEMPORAL_TWO_DAYS_CONFIG = {"ops": {
    "training_set": {"config": {"n_partitions": 2, "end_partition": DAYS[1]}},
    "detector": {"config": {"family": "temporal_ae", "epochs": 1, "window": 4, "channels": [4],
                            "latent": 2, "batch_size": 128}},
}}


def ingested(settings: Settings, days: Sequence[str] = DAYS
             ) -> tuple[dg.Definitions, dg.DagsterInstance]:
    """The code location on an ephemeral instance holding the tiny source's ``days``."""
    import dagster as dg

    from ds_assets.definitions import build_definitions

    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    for day in days:
        assert defs.resolve_job_def("ingest_telemetry").execute_in_process(
            instance=instance, partition_key=day,
            run_config={"ops": {"raw_telemetry": {"config": TINY_SOURCE}}},
        ).success
    return defs, instance
