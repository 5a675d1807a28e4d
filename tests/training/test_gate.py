"""The promotion gate without labels: injected anomalies and false-alarm burden decide, with
the same rule as the labeled gate; the contamination screens that let unlabeled days train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ds_assets.training.contamination import (
    champion_screen,
    check_enough_left,
    trim_top,
)
from ds_assets.training.datasets import DatasetError
from ds_assets.training.detectors import DetectorParams, train_detector
from ds_assets.training.export import export_onnx
from ds_assets.training.gate import ModelRun, injected_test_rows, judge
from ds_serving.bundle import write_bundle
from ds_serving.scoring import Scorer, score_rows
from tests.support.training import FEATURES, correlated_rows


def _frame(values: np.ndarray, hosts: int = 2) -> pd.DataFrame:
    n = len(values) // hosts
    frame = pd.DataFrame(values[: n * hosts], columns=FEATURES)
    frame.insert(0, "host_id", np.repeat([f"h{i}" for i in range(hosts)], n))
    frame.insert(0, "timestamp", np.tile(pd.date_range("2026-11-20", periods=n, freq="5min",
                                                       tz="UTC"), hosts))
    return frame.sort_values(["timestamp", "host_id"], ignore_index=True)


def _bundle(tmp_path: Path, train: np.ndarray, quantile: float = 0.995) -> Path:
    """A PCA bundle fitted on ``train``, thresholded at a quantile of its own training scores."""
    trained = train_detector(DetectorParams(family="pca"), train, train[::4], FEATURES)
    graph = export_onnx(trained)
    scores = score_rows(Scorer(graph, features=FEATURES, threshold=float("inf")), train).scores
    return write_bundle(tmp_path / "models", "m", graph, kind=trained.kind, features=FEATURES,
                        threshold=float(np.quantile(scores, quantile)),
                        threshold_rule={"rule": "quantile", "quantile": quantile}).path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("gate")
    normal = correlated_rows(4000, seed=1)
    # "blind": fitted on the features shuffled independently, so it knows no correlation
    rng = np.random.default_rng(0)
    blind = np.column_stack([rng.permutation(normal[:, j]) for j in range(normal.shape[1])])
    # "drifted": fitted before a shift of every feature by 3 of its standard deviations
    return {"good": _bundle(tmp, normal), "blind": _bundle(tmp, blind),
            "before_drift": _bundle(tmp, normal - 3 * normal.std(axis=0))}


@pytest.fixture(scope="module")
def test_rows() -> pd.DataFrame:
    return _frame(correlated_rows(1200, seed=7))  # unlabeled: no label column


def _runs(models: dict[str, Path], rows: pd.DataFrame, *names: str) -> list[ModelRun]:
    injected = injected_test_rows(rows, FEATURES)
    return [ModelRun.of(models[n], rows, injected) for n in names]


def test_a_worse_candidate_is_refused_without_labels(models: dict[str, Path],
                                                      test_rows: pd.DataFrame) -> None:
    injected = injected_test_rows(test_rows, FEATURES)
    worse, champion = _runs(models, test_rows, "blind", "good")
    decision = judge(worse, champion, test_rows, injected)
    assert not decision.promote and decision.evidence == "injected"
    assert "PR-AUC (injected)" in decision.reason
    d = decision.details or {}
    assert d["labeled_anomalies"] == 0 and d["injected"]["events"] == 8
    assert d["challenger"]["injected_pr_auc"] < d["champion"]["injected_pr_auc"]
    # the better one, judged the other way round, is promoted
    better = judge(champion, worse, test_rows, injected)
    assert better.promote, better.reason


def test_drift_relief_promotes_the_calm_model(models: dict[str, Path],
                                              test_rows: pd.DataFrame) -> None:
    """The old model flags the drifted rows wholesale; the adapted one ranks the injected
    anomalies as well with far fewer false alarms: promoted on the burden clause."""
    injected = injected_test_rows(test_rows, FEATURES)
    adapted, old = _runs(models, test_rows, "good", "before_drift")
    decision = judge(adapted, old, test_rows, injected)
    d = decision.details or {}
    assert d["champion"]["flag_rate"] > 0.5 > 0.05 > d["challenger"]["flag_rate"]
    assert decision.promote, decision.reason


def test_labeled_anomalies_are_the_evidence_when_there_are_some(
        models: dict[str, Path], test_rows: pd.DataFrame) -> None:
    rows = test_rows.copy()
    rows["label"] = 0
    rows.loc[rows.index[::50], "label"] = 1
    rows.loc[rows.index[::50], FEATURES] += 8.0  # real, labeled anomalies
    injected = injected_test_rows(rows, FEATURES)
    good, blind = _runs(models, rows, "good", "blind")
    decision = judge(good, blind, rows, injected)
    assert decision.evidence == "labels" and "PR-AUC (labels)" in decision.reason
    d = decision.details or {}
    assert d["labeled_anomalies"] == len(rows.index[::50])
    assert decision.challenger_pr_auc == d["challenger"]["labeled_pr_auc"]


def test_trim_top_drops_the_share_of_unlabeled_rows_only() -> None:
    scores = np.arange(100, dtype=float)
    unlabeled = np.arange(100) >= 50
    keep = trim_top(scores, unlabeled, 0.1)
    assert (~keep).sum() == 5 and not keep[95:].any() and keep[:95].all()
    scores[90:] = np.nan  # unscored rows (temporal warm-up) are kept
    assert trim_top(scores, unlabeled, 0.1)[90:].all()
    assert trim_top(scores, unlabeled, 0.0).all()
    # +inf (a score the graph could not compute) is the most anomalous row, trimmed first
    scores[60] = np.inf
    keep = trim_top(scores, unlabeled, 0.1)
    assert not keep[60] and (~keep).sum() == 4 and keep[:60].all()


def test_the_champion_screens_a_day_it_describes_not_a_drifted_one(
        models: dict[str, Path], test_rows: pd.DataFrame) -> None:
    day = test_rows.copy()
    day.loc[day.index[100:110], FEATURES] += 10.0  # an anomaly episode on both hosts
    mask, report = champion_screen(models["good"], day)
    assert report["used"] and mask[100:110].all()
    assert report["excluded_rows"] == int(mask.sum()) >= report["flagged_rows"] >= 10
    mask, report = champion_screen(models["before_drift"], day)
    assert not report["used"] and not mask.any() and report["flag_rate"] > 0.05
    assert "does not describe this day" in report["reason"]
    mask, report = champion_screen(None, day)
    assert not report["used"] and not mask.any()
    # a dataset that dropped a feature the champion needs: screened by the candidate alone
    mask, report = champion_screen(models["good"], day.drop(columns=[FEATURES[-1]]))
    assert not report["used"] and not mask.any()
    assert f"needs feature(s) {[FEATURES[-1]]} the day lacks" in report["reason"]


def test_a_window_screened_to_too_little_is_refused_with_its_numbers() -> None:
    check_enough_left(60, 100, 0.5, "training_set")
    with pytest.raises(DatasetError, match=r"left 40 of 100 unlabeled rows \(40.0% < the "
                                           r"minimum 50%\)"):
        check_enough_left(40, 100, 0.5, "training_set")


def test_a_candidate_waits_in_its_own_pointer(tmp_path: Path) -> None:
    from ds_assets.training.shadow import close_candidate, open_candidate, pending_candidate

    assert pending_candidate(tmp_path, "m") is None
    opened = open_candidate(tmp_path, "m", "3", "2", "2026-11-11", 2, {"reason": "r"})
    assert pending_candidate(tmp_path, "m") == opened
    assert not (tmp_path / "m" / "champion.json").exists()  # nothing serves it
    close_candidate(tmp_path, "m")
    assert pending_candidate(tmp_path, "m") is None
    with pytest.raises(ValueError, match="shadow days=0 must be >= 1"):
        open_candidate(tmp_path, "m", "3", "2", "2026-11-11", 0, {})


def test_the_shadow_verdict_is_the_gate_on_the_shadow_days(
        models: dict[str, Path], test_rows: pd.DataFrame) -> None:
    from ds_assets.training.shadow import shadow_rows, verdict

    days = {"a": test_rows.iloc[:600], "b": test_rows.iloc[600:]}
    rows = shadow_rows(days, ["b", "a"])
    assert rows["timestamp"].is_monotonic_increasing and len(rows) == len(test_rows)
    assert not verdict(models["blind"], models["good"], rows).promote  # worse: dropped
    assert verdict(models["good"], models["before_drift"], rows).promote
