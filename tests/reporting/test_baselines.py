"""Baselines: each catches what it should, thresholds come from validation, same test rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from ds_assets.reporting.baselines import (
    BASELINES,
    BaselineError,
    IsolationForestBaseline,
    PCABaseline,
    ZScoreBaseline,
    comparison_markdown,
    make_baseline,
    run_baselines,
)
from ds_assets.reporting.evaluation import evaluate
from tests.support.training import correlated_rows


def _correlation_break(n: int, seed: int) -> np.ndarray:
    """Rows whose features are individually normal but whose correlation is broken."""
    rows = correlated_rows(n, seed).astype(np.float64)
    rows[:, 0] = 20.0 - rows[:, 0]  # mirror feature 0 around its mean (10): sign flipped
    return rows


def test_zscore_is_max_abs_z() -> None:
    train = np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]])
    base = ZScoreBaseline().fit(train)
    # feature 0: mean 2, std sqrt(8/3); feature 1 is constant -> std 1 (no 0/0)
    got = base.score(np.array([[2.0, 13.0], [2.0 + 2 * np.sqrt(8 / 3), 10.0]]))
    assert got == pytest.approx([3.0, 2.0])


def test_pca_matches_sklearn_and_catches_correlation_breaks() -> None:
    train = correlated_rows(800, 0).astype(np.float64)
    base = PCABaseline(variance=0.95).fit(train)
    assert base.k == 1  # one latent factor drives all four features
    z = (train - train.mean(0)) / train.std(0)
    ref = PCA(n_components=1).fit(z)
    t = ref.transform(z[:5])
    t2_ref = (t**2 / ref.explained_variance_).sum(1)
    q_ref = ((z[:5] - ref.inverse_transform(t)) ** 2).sum(1)
    assert base.score(train[:5]) == pytest.approx(t2_ref / 1 + q_ref / base.q_scale, rel=1e-6)
    assert base.q_scale == pytest.approx(ref.noise_variance_ * 3, rel=1e-6)

    normal = correlated_rows(300, 5)
    broken = _correlation_break(300, 6)
    pca_gap = np.median(base.score(broken)) / np.median(base.score(normal))
    zs = ZScoreBaseline().fit(train)
    z_gap = np.median(zs.score(broken)) / np.median(zs.score(normal))
    assert pca_gap > 5 * z_gap  # PCA sees the broken correlation, per-feature z barely does


def test_isolation_forest_is_seeded_and_ranks_outliers_high() -> None:
    train = correlated_rows(500, 0)
    far_away = correlated_rows(20, 1) + 50.0
    a = IsolationForestBaseline(n_estimators=50, seed=3).fit(train)
    b = IsolationForestBaseline(n_estimators=50, seed=3).fit(train)
    normal = correlated_rows(100, 2)
    assert np.array_equal(a.score(normal), b.score(normal))
    assert a.score(far_away).min() > np.median(a.score(normal))


def test_run_baselines_same_rows_and_validation_thresholds() -> None:
    train, val = correlated_rows(600, 0), correlated_rows(200, 1)
    test = np.vstack(
        [correlated_rows(200, 2), _correlation_break(20, 3), correlated_rows(20, 4) * 3]
    )
    labels = np.r_[np.zeros(200, int), np.ones(40, int)]
    types = np.array(["none"] * 200 + ["correlation"] * 20 + ["scale"] * 20)
    results = run_baselines(
        train, val, test, labels, quantile=0.99, margin=1.5, anomaly_types=types,
        timestamps=np.arange(240) * 60.0,
    )
    assert [r.name for r in results] == list(BASELINES)
    for result in results:
        baseline = make_baseline(result.name).fit(train)
        expected = float(np.quantile(baseline.score(val), 0.99)) * 1.5
        assert result.threshold == pytest.approx(expected)
        assert result.threshold_rule["quantile"] == 0.99
        assert result.report.n_rows == 240 and result.report.n_anomalies == 40
        assert result.report.to_dict() == evaluate(
            labels, result.scores, result.threshold, types, timestamps=np.arange(240) * 60.0
        ).to_dict()
        assert set(result.report.per_type_recall) == {"correlation", "scale"}
        assert result.to_dict()["name"] == result.name
    by_name = {r.name: r.report for r in results}
    recall = {n: r.per_type_recall["correlation"]["recall"] for n, r in by_name.items()}
    assert recall["pca"] >= 0.5 and recall["zscore"] <= 0.1  # only PCA sees the broken link
    assert by_name["pca"].pr_auc > by_name["zscore"].pr_auc
    model = by_name["pca"]
    md = comparison_markdown("dense_ae v1", model, results)
    assert md.splitlines()[0].startswith("| detector | ROC-AUC | PR-AUC |")
    assert "| dense_ae v1 |" in md and "isolation_forest" in md and md.count("\n") == 5


def test_bad_input_messages() -> None:
    bad = correlated_rows(10, 0).astype(np.float64)
    bad[3, 2] = np.nan
    with pytest.raises(BaselineError, match="pca training rows: contains NaN"):
        PCABaseline().fit(bad)
    fitted = ZScoreBaseline().fit(correlated_rows(10, 0))
    with pytest.raises(BaselineError, match="3 features, the baseline was fitted on 4"):
        fitted.score(np.zeros((2, 3)))
    with pytest.raises(BaselineError, match="unknown baseline 'lof'"):
        make_baseline("lof")
    with pytest.raises(BaselineError, match="variance=0"):
        PCABaseline(variance=0)
