"""Classical baselines scored on the same split as the deployed model, side by side in the report.

Why: a PR-AUC of 0.6 means little alone; next to a per-feature z-score it says whether the
autoencoder earns its complexity.  Every baseline is fitted on the same normal training rows,
thresholded with the same rule as the deployed model (quantile x margin of its *validation*
scores) and evaluated on the same test rows, so only the detector differs.

* ``zscore``: max over features of ``|x - mean| / std`` (train statistics);
* ``pca``: PCA on standardized rows, components up to a share of explained variance, score
  ``T^2 / k + Q / E[Q]`` (Hotelling T^2 in the kept subspace plus squared prediction error,
  each divided by its expectation on training data so neither dominates by scale);
* ``isolation_forest``: scikit-learn ``IsolationForest``, score ``-score_samples``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ds_assets.reporting.evaluation import EvaluationReport, _fmt, _markdown_table, evaluate
from ds_assets.training.thresholds import calibrate_quantile

BASELINES = ("zscore", "pca", "isolation_forest")


class BaselineError(ValueError):
    """A baseline that cannot be fitted on the given rows; the message names the problem."""


def _check_rows(x: np.ndarray, what: str, n_features: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise BaselineError(f"{what}: need a 2-D array with at least one feature, got {x.shape}")
    if n_features is not None and x.shape[1] != n_features:
        raise BaselineError(
            f"{what}: {x.shape[1]} features, the baseline was fitted on {n_features}"
        )
    if x.shape[0] == 0:
        raise BaselineError(f"{what}: no rows")
    if not np.isfinite(x).all():
        raise BaselineError(f"{what}: contains NaN/inf ({int((~np.isfinite(x)).sum())} values)")
    return x


def _standardizer(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)


class ZScoreBaseline:
    """Max absolute per-feature z-score: what a set of static 3-sigma alarms would see."""

    name = "zscore"
    description = "max |z| over features (train mean/std)"

    def fit(self, train: np.ndarray) -> ZScoreBaseline:
        train = _check_rows(train, "zscore training rows")
        self.mean, self.std = _standardizer(train)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        x = _check_rows(x, "zscore rows", self.mean.size)
        return np.max(np.abs((x - self.mean) / self.std), axis=1)


class PCABaseline:
    """PCA T^2 + Q on standardized rows, components chosen by explained variance."""

    name = "pca"

    def __init__(self, variance: float = 0.95) -> None:
        if not 0.0 < variance <= 1.0:
            raise BaselineError(f"pca variance={variance} must be in (0, 1]")
        self.variance = variance

    @property
    def description(self) -> str:
        return f"PCA T²/k + Q/E[Q], {self.variance:.0%} explained variance"

    def fit(self, train: np.ndarray) -> PCABaseline:
        train = _check_rows(train, "pca training rows")
        if train.shape[0] < 2:
            raise BaselineError("pca training rows: need at least 2 rows")
        self.mean, self.std = _standardizer(train)
        z = (train - self.mean) / self.std
        _, singular, vt = np.linalg.svd(z, full_matrices=False)
        eigen = singular**2 / (z.shape[0] - 1)
        share = np.cumsum(eigen) / max(float(eigen.sum()), 1e-300)
        self.k = int(min(np.searchsorted(share, self.variance - 1e-12) + 1, eigen.size))
        self.components = vt[: self.k].T  # [n_features, k]
        self.eigen = np.maximum(eigen[: self.k], 1e-12)
        residual = eigen[self.k :].sum()
        self.q_scale = float(residual) if residual > 1e-12 else math.inf
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        x = _check_rows(x, "pca rows", self.mean.size)
        z = (x - self.mean) / self.std
        t = z @ self.components
        t2 = np.sum(t**2 / self.eigen, axis=1)
        q = np.sum((z - t @ self.components.T) ** 2, axis=1)
        return t2 / self.k + q / self.q_scale


class IsolationForestBaseline:
    """scikit-learn IsolationForest; higher score = easier to isolate = more anomalous."""

    name = "isolation_forest"

    def __init__(self, n_estimators: int = 100, seed: int = 0, max_train_rows: int = 50_000):
        self.n_estimators = n_estimators
        self.seed = seed
        self.max_train_rows = max_train_rows

    @property
    def description(self) -> str:
        return f"scikit-learn IsolationForest, {self.n_estimators} trees"

    def fit(self, train: np.ndarray) -> IsolationForestBaseline:
        train = _check_rows(train, "isolation_forest training rows")
        if train.shape[0] > self.max_train_rows:
            rng = np.random.default_rng(self.seed)
            train = train[np.sort(rng.choice(train.shape[0], self.max_train_rows, replace=False))]
        self.n_features = train.shape[1]
        from sklearn.ensemble import IsolationForest  # 0.5 s to import; reports only

        self.model = IsolationForest(
            n_estimators=self.n_estimators, random_state=self.seed, n_jobs=1
        ).fit(train)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        x = _check_rows(x, "isolation_forest rows", self.n_features)
        return -self.model.score_samples(x)


Baseline = ZScoreBaseline | PCABaseline | IsolationForestBaseline


def make_baseline(name: str, seed: int = 0) -> Baseline:
    if name == "zscore":
        return ZScoreBaseline()
    if name == "pca":
        return PCABaseline()
    if name == "isolation_forest":
        return IsolationForestBaseline(seed=seed)
    raise BaselineError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")


@dataclass(frozen=True)
class BaselineResult:
    name: str
    description: str
    threshold: float
    threshold_rule: dict[str, Any]
    scores: np.ndarray
    report: EvaluationReport

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "threshold_rule": self.threshold_rule,
            **self.report.to_dict(),
        }


def run_baselines(
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    labels: np.ndarray,
    *,
    quantile: float,
    margin: float = 1.0,
    names: Sequence[str] = BASELINES,
    anomaly_types: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
    entities: np.ndarray | None = None,
    seed: int = 0,
) -> list[BaselineResult]:
    """Fit each baseline on ``train``, threshold on ``val`` scores, evaluate on ``test``.

    ``quantile``/``margin`` should be the deployed model's threshold rule so the comparison
    at the threshold is like for like; the ranking metrics do not depend on it.
    """
    results = []
    for name in names:
        baseline = make_baseline(name, seed).fit(train)
        threshold, rule = calibrate_quantile(baseline.score(val), quantile, margin)
        scores = baseline.score(test)
        report = evaluate(
            labels, scores, threshold, anomaly_types, timestamps=timestamps, entities=entities
        )
        results.append(
            BaselineResult(name, baseline.description, threshold, rule, scores, report)
        )
    return results


COMPARISON_COLUMNS = (
    ("ROC-AUC", "roc_auc"),
    ("PR-AUC", "pr_auc"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("F1", "f1"),
    ("FAR", "far"),
    ("MAR", "mar"),
    ("P@k", "precision_at_k"),
    ("best F1 (oracle)", "best_f1_oracle"),
)


def comparison_rows(
    model_name: str, model: EvaluationReport, baselines: Sequence[BaselineResult]
) -> list[tuple[str, dict[str, float]]]:
    """(detector, {column: value}) rows, the deployed model first."""
    rows = [(model_name, {label: getattr(model, key) for label, key in COMPARISON_COLUMNS})]
    for result in baselines:
        rows.append(
            (
                f"{result.name} ({result.description})",
                {label: getattr(result.report, key) for label, key in COMPARISON_COLUMNS},
            )
        )
    return rows


def comparison_markdown(
    model_name: str, model: EvaluationReport, baselines: Sequence[BaselineResult]
) -> str:
    """The deployed model and the baselines on the same test rows, one row each."""
    header = ["detector", *(label for label, _ in COMPARISON_COLUMNS)]
    rows = [
        [name, *(_fmt(float(values[label]), ".3f") for label, _ in COMPARISON_COLUMNS)]
        for name, values in comparison_rows(model_name, model, baselines)
    ]
    return _markdown_table(header, rows)
