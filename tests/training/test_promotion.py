"""Champion/challenger decisions and the MLflow registry mirror (real MLflow on SQLite)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ds_assets.reporting.evaluation import average_precision
from ds_assets.training.detectors import DetectorParams, train_detector
from ds_assets.training.export import export_onnx
from ds_assets.training.promotion import (
    CHAMPION_ALIAS,
    Burden,
    champion_alias_version,
    decide_promotion,
    fit_rows_end,
    log_bundle,
    log_report,
    model_version_for_bundle,
    promote_bundle,
    rows_after_fit,
)
from ds_serving.bundle import Bundle, champion_version, write_bundle
from tests.support.training import FEATURES, correlated_rows


@pytest.mark.parametrize(
    ("challenger", "champion", "champion_version", "promote", "reason"),
    [
        (0.5, None, None, True, "no current champion"),
        (0.8, 0.7, "1", True, "challenger PR-AUC (labels) 0.8000 > champion 0.7000"),
        (0.7, 0.7, "1", False,
         "challenger PR-AUC (labels) 0.7000 == champion 0.7000"),  # a tie keeps
        (0.6, 0.7, "1", False, "0.6000 < champion 0.7000"),
        (math.nan, 0.7, "1", False, "challenger PR-AUC (labels) is undefined"),
        (0.6, math.nan, "1", True, "champion PR-AUC (labels) is undefined"),
        (0.9, 0.1, "2", False, "already the champion"),
    ],
)
def test_decisions(
    challenger: float, champion: float | None, champion_version: str | None, promote: bool,
    reason: str,
) -> None:
    decision = decide_promotion("2", challenger, champion_version, champion, compared_rows=10)
    assert decision.promote is promote
    assert reason in decision.reason
    assert decision.to_dict()["compared_rows"] == 10


@pytest.mark.parametrize(("flag_rate", "promote"), [(0.02, True), (0.9, True), (0.91, False),
                                                  (1.0, False)])
def test_a_first_model_that_flags_most_normal_rows_is_no_champion(flag_rate: float,
                                                                  promote: bool) -> None:
    """A model that flags nearly every row not known to be anomalous carries no signal: with
    no champion to compare it with, it is refused, saying what to try."""
    decision = decide_promotion("1", 0.5, None, None, compared_rows=60,
                                challenger_burden=Burden(flag_rate, 1.0))
    assert decision.promote is promote
    if not promote:
        assert f"flags {flag_rate:.1%} of the 60 test rows" in decision.reason
        assert "Train on more days" in decision.reason


def test_min_improvement_is_required() -> None:
    assert not decide_promotion("2", 0.705, "1", 0.7, min_improvement=0.01).promote
    assert decide_promotion("2", 0.72, "1", 0.7, min_improvement=0.01).promote


@pytest.mark.parametrize(
    ("mine", "theirs", "pr_aucs", "promote", "reason"),
    [
        # drift: the champion flags a third of the rows; a calm challenger ranks about as well
        ((0.004, 0.1), (0.34, 9.0), (0.80, 0.83), True,
         ">= 2x fewer false alarms) at PR-AUC ({}) 0.8000 vs 0.8300 (within 0.05)"),
        # ... or better: said as such, not as "within" a tolerance
        ((0.004, 0.1), (0.34, 9.0), (0.90, 0.60), True, "0.9000 vs 0.6000 (higher)"),
        # calm but ranks much worse: PR-AUC decides, and refuses
        ((0.004, 0.1), (0.34, 9.0), (0.60, 0.83), False, "0.6000 < champion 0.8300"),
        # a better ranking bought with an alert storm is refused
        ((0.05, 3.0), (0.005, 0.2), (0.90, 0.80), False, "more than 2x the false alarms"),
        # a small rise in false alarms does not block a better ranking
        ((0.008, 0.3), (0.005, 0.2), (0.90, 0.80), True, "0.9000 > champion 0.8000"),
        # both nearly silent: 0 against 0, or 1 row against 2 of 28,800, is no relief, so a
        # worse ranking is refused on PR-AUC
        ((0.0, 0.0), (0.0, 0.0), (0.80, 0.84), False, "0.8000 < champion 0.8400"),
        ((1 / 28800, 0.0), (2 / 28800, 0.01), (0.80, 0.84), False, "0.8000 < champion 0.8400"),
    ],
)
def test_false_alarm_burden_is_part_of_the_rule(
    mine: tuple[float, float], theirs: tuple[float, float], pr_aucs: tuple[float, float],
    promote: bool, reason: str,
) -> None:
    for evidence in ("labels", "injected"):  # one rule, whatever the evidence
        decision = decide_promotion(
            "2", pr_aucs[0], "1", pr_aucs[1], compared_rows=100, evidence=evidence,
            challenger_burden=Burden(*mine), champion_burden=Burden(*theirs))
        assert decision.promote is promote, decision.reason
        assert reason.format(evidence) in decision.reason, decision.reason
        assert f"({evidence})" in decision.reason
        assert decision.to_dict()["evidence"] == evidence


def test_the_champion_is_not_judged_on_rows_it_was_trained_on(tmp_path: Path) -> None:
    ts = pd.Series(pd.date_range("2026-11-01", periods=10, freq="h", tz="UTC"))
    training_set = pd.DataFrame(
        {"timestamp": ts, "split": ["train"] * 5 + ["val"] * 2 + ["test"] * 3}
    )
    end = fit_rows_end(training_set)
    assert pd.Timestamp(end) == ts[6]  # the last validation row, not a test row
    rows = correlated_rows(50)
    trained = train_detector(DetectorParams(family="pca"), rows, rows, FEATURES)

    def bundle(lineage: dict[str, str]) -> Path:
        return write_bundle(tmp_path / "models", "m", export_onnx(trained), kind=trained.kind,
                            features=FEATURES, threshold=1.0, threshold_rule={"rule": "q"},
                            lineage=lineage).path

    # a challenger's test rows from 04:00 to 09:00 overlap the champion's fit window (to 06:00)
    challenger_test = pd.Series(pd.date_range("2026-11-01 04:00", periods=6, freq="h", tz="UTC"))
    unseen = rows_after_fit(bundle({"fit_rows_end": end}), challenger_test)
    assert unseen is not None and unseen.tolist() == [False] * 3 + [True] * 3
    assert rows_after_fit(bundle({}), challenger_test) is None  # older bundles: no window
    naive = challenger_test.dt.tz_localize(None)  # naive times are read as UTC
    assert rows_after_fit(bundle({"fit_rows_end": end}), naive).tolist() == unseen.tolist()
    naive_end = fit_rows_end(training_set.assign(timestamp=ts.dt.tz_localize(None)))
    assert naive_end == end

    labels = np.array([1, 0, 0, 1, 0, 0])
    champion = np.array([0.9, 0.1, 0.1, 0.1, 0.9, 0.2])  # perfect on its own training rows
    challenger = np.array([0.1, 0.9, 0.9, 0.9, 0.1, 0.2])
    champ_all = average_precision(labels, champion)
    ch, champ = (average_precision(labels[unseen], s[unseen]) for s in (challenger, champion))
    n = int(unseen.sum())
    assert n == 3 and ch == pytest.approx(1.0) and champ < champ_all
    assert decide_promotion("2", ch, "1", champ, compared_rows=n, excluded_rows=3).promote
    # every test row inside the champion's window: no verdict, no promotion
    blind = decide_promotion("2", math.nan, "1", math.nan, compared_rows=0, excluded_rows=6)
    assert not blind.promote and "after the champion's training window" in blind.reason
    assert blind.to_dict()["excluded_rows"] == 6


@pytest.fixture
def name(tmp_path: Path) -> str:
    """A registered-model name of its own in the session's MLflow store."""
    return f"reg-{tmp_path.name}"[:60]


@pytest.fixture
def two_bundles(tmp_path: Path, name: str) -> list[Bundle]:
    out = []
    for seed, family in ((0, "pca"), (1, "dense_ae")):
        params = DetectorParams(family=family, seed=seed, hidden=(4, 2), epochs=1)
        trained = train_detector(params, correlated_rows(200), correlated_rows(50, 1), FEATURES)
        # the second has per-entity thresholds, with ids MLflow would refuse as param names
        own = {"entities": {"web01@eu": 2.0, "b,c=d": 1.5}} if seed else {}
        out.append(write_bundle(
            tmp_path / "models", name, export_onnx(trained), kind=trained.kind,
            features=FEATURES, threshold=1.0, threshold_rule={"rule": "quantile", **own},
            smoothing={"k": 2, "n": 3},
        ))
    return out


def test_bundles_are_logged_registered_and_promoted(
    two_bundles: list[Bundle], tmp_path: Path, mlflow_uri: str, name: str
) -> None:
    uri = mlflow_uri
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(name, artifact_location=(tmp_path / "art").as_uri())
    models_dir = tmp_path / "models"
    versions = []
    runs = []
    for bundle in two_bundles:
        run = client.create_run(experiment)
        runs.append(run.info.run_id)
        versions.append(log_bundle(uri, run.info.run_id, bundle, name,
                                   params={"family": bundle.manifest.kind},
                                   metrics={"threshold": 1.0, "nan_is_skipped": math.nan}))
    assert versions == ["1", "2"]
    assert model_version_for_bundle(uri, name, "2") == "2"
    assert model_version_for_bundle(uri, name, "9") is None
    assert champion_alias_version(uri, name) is None

    logged = client.get_run(runs[0]).data
    assert logged.params["bundle_version"] == "1" and logged.params["smoothing.k"] == "2"
    assert logged.params["threshold_rule.rule"] == "quantile"
    assert logged.metrics["threshold"] == 1.0 and "nan_is_skipped" not in logged.metrics
    second = client.get_run(runs[1]).data.params  # registered, its thresholds in the manifest
    assert second["threshold_rule.rule"] == "quantile"
    assert not any(k.startswith("threshold_rule.entities") for k in second)
    artifacts = {a.path for a in client.list_artifacts(runs[0])}
    assert {"model", "bundle"} <= artifacts
    # the registered model is the bundle's ONNX graph, byte for byte
    onnx_dir = mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri(name, versions[0]),
        dst_path=str(tmp_path / "dl"),
    )
    assert (Path(onnx_dir) / "model.onnx").read_bytes() == two_bundles[0].model_bytes()

    first = decide_promotion("1", 0.6, None, None)
    assert promote_bundle(models_dir, name, first, tracking_uri=uri) == "1"
    assert champion_version(models_dir, name) == "1"
    assert champion_alias_version(uri, name) == "1"

    worse = decide_promotion("2", 0.5, "1", 0.6)
    assert promote_bundle(models_dir, name, worse, tracking_uri=uri) is None
    assert champion_version(models_dir, name) == "1"
    assert champion_alias_version(uri, name) == "1"

    better = decide_promotion("2", 0.9, "1", 0.6)
    assert promote_bundle(models_dir, name, better, tracking_uri=uri,
                          mlflow_version="2") == "2"
    assert champion_version(models_dir, name) == "2"
    alias = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    assert str(alias.version) == "2" and "0.9000 > champion 0.6000" in alias.tags["promotion"]
    pointer = json.loads((models_dir / name / "champion.json").read_text())
    assert pointer["details"]["champion_pr_auc"] == 0.6

    # an earlier attempt moved champion.json but died before the alias: the next run repairs it
    client.set_registered_model_alias(name, CHAMPION_ALIAS, "1")
    again = decide_promotion("2", 0.9, "2", None)
    assert not again.promote and "already the champion" in again.reason
    assert promote_bundle(models_dir, name, again, tracking_uri=uri) == "2"
    assert champion_alias_version(uri, name) == "2" and champion_version(models_dir, name) == "2"

    log_report(uri, runs[1], {"pr_auc": 0.9, "path": tmp_path})
    report_path = client.download_artifacts(runs[1], "report/evaluation_report.json",
                                             str(tmp_path / "rep"))
    assert json.loads(Path(report_path).read_text())["pr_auc"] == 0.9


def test_promoting_an_unregistered_bundle_says_what_to_do(
    two_bundles: list[Bundle], tmp_path: Path, mlflow_uri: str, name: str
) -> None:
    uri = mlflow_uri
    with pytest.raises(LookupError, match="no registered MLflow model version; log it"):
        promote_bundle(tmp_path / "models", name, decide_promotion("1", 0.5, None, None),
                       tracking_uri=uri)


def test_a_bundle_mlflow_could_not_register_is_withdrawn(
    two_bundles: list[Bundle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A local version MLflow does not know could never be promoted: it leaves the registry,
    the error names the version and MLflow's reason, and the champion cannot be withdrawn."""
    from ds_assets.resources.registry import ModelRegistry
    from ds_assets.training import promotion
    from ds_serving.bundle import BundleError, list_versions, promote, withdraw_version

    models_dir = tmp_path / "models"

    def unreachable(*_args: object, **_kwargs: object) -> str:
        raise ConnectionError("tracking server unreachable")

    monkeypatch.setattr(promotion, "log_bundle", unreachable)
    registry = ModelRegistry(models_dir=str(models_dir), model_name=name,
                             mlflow_tracking_uri="http://127.0.0.1:9")
    with pytest.raises(RuntimeError, match=r"v2 in MLflow .* failed \(ConnectionError: tracking"):
        registry.register(two_bundles[1], "run-id", params={}, metrics={})
    assert list_versions(models_dir, name) == ["1"]
    assert [p.name for p in (models_dir / name).iterdir() if p.name.startswith(".")] == [
        ".withdrawn-version-2"]  # a marker keeps the number taken, nothing else is left
    # MLflow may still name v2 (the failed attempt's run): the next bundle is v3
    again = write_bundle(models_dir, name, two_bundles[0].model_bytes(), kind="pca",
                         features=FEATURES, threshold=1.0, threshold_rule={"rule": "quantile"})
    assert again.manifest.version == "3"

    promote(models_dir, name, "1")
    with pytest.raises(BundleError, match="is the champion"):
        withdraw_version(models_dir, name, "1")
    assert list_versions(models_dir, name) == ["1", "3"]
