"""Feature groups: declared with a dataset, recorded in the bundle, and naming the group that
contributes most in dataset scoring, the evaluation breakdown, alerts and over gRPC alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ds_assets.monitoring.alerts import alert_events
from ds_assets.reporting.evaluation import group_breakdown
from ds_assets.training.dataset_scoring import score_frame
from ds_serving.alerting import AlertPolicy
from ds_serving.bundle import BundleError, load_bundle, promote
from ds_serving.cli import main as ds_scorer
from ds_serving.client import ScorerClient
from ds_serving.groups import FeatureGroupError, FeatureGroups
from ds_serving.scoring import Scorer
from ds_serving.server import ServerThread
from tests.support.serving import FEATURES, MEAN, STD, server_config, write_point_bundle

# cpu, memory, latency, errors: two declared groups and "errors" on its own
GROUPS = {"compute": ["cpu", "memory"], "service": ["latency"]}


def test_groups_add_feature_errors_up_and_name_the_largest() -> None:
    groups = FeatureGroups.build(FEATURES, GROUPS)
    assert groups.names == ("compute", "service", "errors")
    errors = np.array([[1.0, 1.0, 1.5, 0.0],    # compute 2.0 beats latency 1.5
                       [0.1, 0.1, 1.5, 0.0],    # service
                       [0.0, 0.0, 0.0, 9.0],    # errors alone
                       [np.nan] * 4], np.float32)  # no score (temporal warm-up)
    np.testing.assert_allclose(groups.errors(errors)[0], [2.0, 1.5, 0.0])
    assert groups.top(errors).tolist() == ["compute", "service", "errors", None]
    assert groups.to_dict() == GROUPS and groups.any_declared
    assert not FeatureGroups.build(FEATURES, None).any_declared


@pytest.mark.parametrize(("groups", "message"), [
    ({"g": ["disk"]}, "names 'disk', which is not a feature"),
    ({"a": ["cpu"], "b": ["cpu"]}, "'cpu' is in groups 'a' and 'b'"),
    ({"memory": ["cpu"]}, "has the name of a feature outside it"),
    ({"g": []}, "must list one or more features"),
])
def test_groups_that_do_not_fit_the_features_are_refused(
    groups: dict[str, list[str]], message: str,
) -> None:
    with pytest.raises(FeatureGroupError, match=message):
        FeatureGroups.build(FEATURES, groups)


def test_the_bundle_records_groups_and_refuses_bad_ones_before_staging(tmp_path: Path) -> None:
    path = write_point_bundle(tmp_path, feature_groups=GROUPS)
    bundle = load_bundle(path)
    assert bundle.manifest.feature_groups == GROUPS
    assert json.loads((path / "config.json").read_text())["feature_groups"] == GROUPS
    with pytest.raises(BundleError, match="'disk', which is not a feature"):
        write_point_bundle(tmp_path, feature_groups={"g": ["disk"]})
    assert sorted(p.name for p in (tmp_path / "ae").iterdir()) == [path.name]  # nothing staged


def _spiky(n: int = 60) -> pd.DataFrame:
    """Rows of one host where latency spikes from row 30 on."""
    rng = np.random.default_rng(5)
    values = np.asarray(MEAN) + np.asarray(STD) * rng.normal(size=(n, 4)) * 0.1
    values[30:, 2] += 20 * STD[2]
    frame = pd.DataFrame(values.astype(np.float32), columns=FEATURES)
    frame.insert(0, "timestamp", pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC"))
    frame.insert(1, "host_id", "h1")
    frame["label"] = (np.arange(n) >= 30).astype(int)
    frame["anomaly_type"] = np.where(frame["label"] == 1, "spike", "none")
    return frame


def test_dataset_scoring_evaluation_and_alerts_name_the_group(tmp_path: Path) -> None:
    scorer = Scorer.from_bundle(load_bundle(write_point_bundle(tmp_path, feature_groups=GROUPS)),
                                backend="cpu")
    scored = score_frame(scorer, _spiky())
    assert set(scored.loc[30:, "top_group"]) == {"service"}
    plain = score_frame(Scorer.from_bundle(load_bundle(write_point_bundle(tmp_path / "plain")),
                                           backend="cpu"), _spiky())
    assert "top_group" not in plain.columns  # no declared groups: top_feature says it all
    [entry, *_] = group_breakdown(scored["top_group"].to_numpy(), scored["is_anomaly"].to_numpy(),
                                  scored["label"].to_numpy(), scored["anomaly_type"].to_numpy())
    assert entry["group"] == "service" and entry["anomalous_rows"] == 30
    assert entry["anomaly_types"] == {"spike": 30}
    alerts = alert_events(scored, AlertPolicy(k=2, n=3, m=2, cooldown=0.0))
    assert alerts["top_group"].tolist() == ["service"]


def test_grpc_lists_the_groups_and_alerts_carry_the_top_group(tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = write_point_bundle(models, feature_groups=GROUPS)
    promote(models, "ae", path.name)
    thread = ServerThread(server_config(models))
    server = thread.start()
    client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
    try:
        assert json.loads(client.info().feature_groups_json) == GROUPS
        frame = _spiky()
        rows = frame[FEATURES].to_numpy(np.float32)
        times = np.arange(len(rows), dtype=np.float64) * 60
        explained = client.score(rows, ["h1"] * len(rows), times, explain=True)
        [opened] = [a for a in explained.alerts if a.kind == "open"]
        assert opened.top_group == "service"
        # the client's own aggregation of the returned errors agrees with dataset scoring
        groups = FeatureGroups.build(FEATURES, json.loads(client.info().feature_groups_json))
        assert explained.feature_errors is not None
        assert set(groups.top(explained.feature_errors)[30:]) == {"service"}
        plain = client.score(rows, ["h2"] * len(rows), times)
        assert {a.top_group for a in plain.alerts} == {""}  # without explain: no errors, no group
        # `ds-scorer score --explain` writes the group beside the top feature
        frame.to_csv(tmp_path / "rows.csv", index=False)
        out = tmp_path / "scored.csv"
        assert ds_scorer(["score", str(tmp_path / "rows.csv"), "--target",
                          f"127.0.0.1:{server.port}", "--explain", "--out", str(out)]) == 0
        written = pd.read_csv(out)
        assert set(written["top_group"].iloc[30:]) == {"service"}
        assert written["top_group"].tolist() == scored_top(frame, models)
    finally:
        client.close()
        thread.stop(0)


def scored_top(frame: pd.DataFrame, models: Path) -> list[str]:
    """Dataset scoring's top_group for the same rows and the served bundle."""
    [path] = [p for p in (models / "ae").iterdir() if p.name.isdigit()]
    scored = score_frame(Scorer.from_bundle(load_bundle(path), backend="cpu"), frame)
    return [str(g) for g in scored["top_group"]]


def test_top_mode_keeps_what_explain_would_name_without_the_error_table(tmp_path: Path) -> None:
    """score_rows(top=True) reduces each chunk to its top feature and group: the same names as
    the full feature errors give, at a fraction of the memory (dataset scoring uses it)."""
    from ds_serving.scoring import score_rows

    groups = {"load": FEATURES[:2], "rest": FEATURES[2:]}
    scorer = Scorer.from_bundle(load_bundle(write_point_bundle(
        tmp_path, feature_groups=groups)), backend="cpu")
    rows = normal_rows_with_spikes()
    full = score_rows(scorer, rows, explain=True, chunk_rows=7)
    reduced = score_rows(scorer, rows, top=True, chunk_rows=7)
    assert full.feature_errors is not None and reduced.feature_errors is None
    assert reduced.top_feature is not None and reduced.top_group is not None
    np.testing.assert_array_equal(reduced.scores, full.scores)
    np.testing.assert_array_equal(reduced.top_feature, np.argmax(full.feature_errors, axis=1))
    np.testing.assert_array_equal(reduced.top_group, scorer.groups.top(full.feature_errors))
    assert set(reduced.top_group) <= {"load", "rest"}


def normal_rows_with_spikes() -> np.ndarray:
    from tests.support.serving import normal_rows

    rows = normal_rows(50, 3)
    rows[::5, 0] += 40.0 * np.asarray(STD)[0]
    rows[2::5, 3] += 40.0 * np.asarray(STD)[3]
    return rows
