"""Deterministic synthetic telemetry for ``ds-scorer replay`` (load generation and demos).

Rows follow each feature's training mean/std when the server reports them (``ModelInfo``), so a
replay against a real model scores mostly normal with labelled injected bursts; without them the
scale is standard normal. Same seed, same rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

START_EPOCH = 1_793_491_200.0  # 2026-11-01T00:00:00Z: replays are reproducible to the timestamp


@dataclass(frozen=True)
class TelemetryBatch:
    rows: np.ndarray  # float32 [n, f]
    entities: np.ndarray  # str [n]
    timestamps: np.ndarray  # float64 epoch seconds [n]
    injected: np.ndarray  # bool [n]: rows inside an injected anomaly burst


def synthetic_batches(
    n_features: int,
    *,
    batch_rows: int = 64,
    n_entities: int = 8,
    seed: int = 0,
    anomaly_rate: float = 0.01,
    interval_seconds: float = 60.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    start: float = START_EPOCH,
) -> Iterator[TelemetryBatch]:
    """Endless batches; entities take turns, each entity's rows are time-ordered."""
    if n_features < 1 or batch_rows < 1 or n_entities < 1:
        raise ValueError("n_features, batch_rows and n_entities must be >= 1")
    if not 0.0 <= anomaly_rate <= 1.0:
        raise ValueError(f"anomaly_rate must be within [0, 1], got {anomaly_rate}")
    rng = np.random.default_rng(seed)
    mu = np.zeros(n_features) if not mean else np.asarray(mean, np.float64)
    sd = np.ones(n_features) if not std else np.maximum(np.asarray(std, np.float64), 1e-6)
    # one latent load per entity drives every feature (real telemetry is correlated: more load,
    # more cpu, traffic and latency), so a model that learned those correlations sees normal rows
    phase = rng.uniform(0, 2 * np.pi, size=n_entities)
    # not the generator's host-NNN: a replay into a scorer that also sees the real fleet must not
    # feed its rows into real hosts' windows, smoothing and alert state
    names = np.array([f"synthetic-{i:03d}" for i in range(n_entities)])
    period = 24 * 3600.0
    burst_left = np.zeros(n_entities, np.int64)
    burst_shift = np.zeros((n_entities, n_features))
    step = 0
    while True:
        idx = (step + np.arange(batch_rows)) % n_entities
        tick = (step + np.arange(batch_rows)) // n_entities
        times = start + tick * interval_seconds
        load = 0.25 * np.sin(2 * np.pi * times / period + phase[idx])
        z = load[:, None] + 0.1 * rng.standard_normal((batch_rows, n_features))
        injected = np.zeros(batch_rows, bool)
        for i, e in enumerate(idx):
            if burst_left[e] == 0 and rng.random() < anomaly_rate:
                burst_left[e] = rng.integers(3, 9)
                burst_shift[e] = 0.0
                n_cols = min(n_features, int(rng.integers(1, 4)))
                cols = rng.choice(n_features, size=n_cols, replace=False)
                burst_shift[e, cols] = rng.choice([-1.0, 1.0], size=len(cols)) * 6.0
            if burst_left[e] > 0:
                z[i] += burst_shift[e]
                injected[i] = True
                burst_left[e] -= 1
        step += batch_rows
        yield TelemetryBatch(
            rows=(mu + sd * z).astype(np.float32),
            entities=names[idx],
            timestamps=times.astype(np.float64),
            injected=injected,
        )
