"""A served point model for scorer tests: features, rows, a bundle and a server config."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np

from ds_serving.bundle import write_bundle
from ds_serving.scoring import Scorer
from ds_serving.server import ServerConfig
from tests.support.models import dense_autoencoder

FEATURES = ["cpu", "memory", "latency", "errors"]
MEAN = [50.0, 60.0, 120.0, 0.5]
STD = [10.0, 8.0, 30.0, 0.2]
POLICY = {"k": 2, "n": 3, "m": 2, "cooldown": 100.0}


def normal_rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.asarray(MEAN) + np.asarray(STD) * rng.normal(size=(n, len(FEATURES)))).astype(
        np.float32
    )


def write_point_bundle(models: Path, name: str = "ae", seed: int = 0, **kw: object) -> Path:
    model = dense_autoencoder(len(FEATURES), (8, 2), mean=MEAN, std=STD, seed=seed)
    scores = Scorer(model, features=FEATURES, threshold=0.0, backend="cpu").score(
        normal_rows(400, 99)
    ).scores
    params: dict[str, object] = {
        "kind": "dense_ae",
        "features": FEATURES,
        "threshold": float(np.quantile(scores, 0.95)),
        "threshold_rule": {"rule": "quantile", "q": 0.95},
        "alerting": POLICY,
        "extra": {"normalization": {"mean": MEAN, "std": STD}},
    }
    params.update(kw)
    bundle = write_bundle(models, name, model, **params)  # type: ignore[arg-type]
    return bundle.path


def server_config(models: Path, name: str = "ae", **kw: object) -> ServerConfig:
    params: dict[str, object] = {
        "models_dir": models, "name": name, "host": "127.0.0.1", "port": 0,
        "metrics_port": 0, "poll_interval": 0.05, "grace": 2.0,
    }
    params.update(kw)
    return ServerConfig(**params)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scraped(metrics_port: int, family: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of one metric family scraped from a live scorer, by (sample name, sorted
    labels)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for found in text_string_to_metric_families(text) if found.name == family
            for sample in found.samples}


def model_loaded(metrics_port: int) -> bool:
    """Whether a live scorer process has loaded its model (``ds_scorer_model_loaded``): the
    health of the port answers for whichever process took the connection."""
    return scraped(metrics_port, "ds_scorer_model_loaded").get(
        ("ds_scorer_model_loaded", ()), 0.0) == 1.0


def status_counts(metrics_port: int, method: str) -> dict[str, float]:
    """``ds_scorer_requests_total`` of one method by gRPC code, scraped from a live scorer."""
    counts: dict[str, float] = {}
    for (name, labels), value in scraped(metrics_port, "ds_scorer_requests").items():
        by = dict(labels)
        if name.endswith("_total") and by.get("method") == method:
            counts[by["code"]] = counts.get(by["code"], 0.0) + value
    return counts
