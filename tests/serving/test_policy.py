"""The scoring policy: parsed once from the manifest, one decision for every caller."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ds_assets.training.dataset_scoring import score_frame
from ds_serving.alerting import AlertPolicy
from ds_serving.bundle import MANIFEST_FILE, BundleError, load_bundle, write_bundle
from ds_serving.policy import PolicyError, ScoringPolicy
from ds_serving.scoring import Scorer
from ds_serving.smoothing import Smoothing, flag_scores
from tests.support.graphs import sum_graph

FEATURES = ["f1", "f2"]


def _bundle(tmp_path: Path, **policy: object) -> Path:
    return write_bundle(tmp_path / "models", "p", sum_graph(2), kind="sum", features=FEATURES,
                        threshold=1.0, threshold_rule={"rule": "fixed"},
                        **policy).path  # type: ignore[arg-type]


def test_the_manifest_is_parsed_once_into_a_typed_policy(tmp_path: Path) -> None:
    path = _bundle(tmp_path, smoothing={"k": 2, "n": 3},
                   alerting={"k": 1, "n": 2, "m": 3, "cooldown": 5.0})
    policy = load_bundle(path).manifest.policy
    assert policy == ScoringPolicy(1.0, {"rule": "fixed"}, Smoothing(2, 3),
                                   AlertPolicy(1, 2, 3, 5.0))
    assert policy.to_dict()["smoothing"] == {"k": 2, "n": 3} and not policy.is_what_if


def test_a_manifest_with_an_unworkable_policy_is_refused_at_load(tmp_path: Path) -> None:
    path = _bundle(tmp_path)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["smoothing"] = {"k": 4, "n": 3}
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"scoring policy: smoothing.k must be between 1 and n=3"):
        load_bundle(path)


def test_flags_are_the_deployed_decision_and_nan_is_never_flagged() -> None:
    policy = ScoringPolicy(1.0, smoothing=Smoothing(2, 3))
    scores = np.array([2, 0, 2, 2, np.nan, 0, 3, 3], np.float32)
    hosts = np.array(["a", "b"] * 4)
    np.testing.assert_array_equal(policy.flags(scores, hosts),
                                  flag_scores(scores, 1.0, Smoothing(2, 3), hosts))
    np.testing.assert_array_equal(policy.raw_flags(scores), np.nan_to_num(scores) > 1.0)
    assert not policy.raw_flags(np.array([np.nan]))[0]


@pytest.mark.parametrize("rebaseline", [None, {"end_ratio": 4.0, "raise_factor": 3.0,
                                                "horizon": 10}])
def test_a_row_without_a_score_is_never_flagged_by_smoothing(rebaseline: object) -> None:
    """k-of-n counted an unscored row (a temporal model's warm-up, or a window grown by a hot
    reload) as not flagged, but flagged the row itself when the rows before made k."""
    policy = ScoringPolicy(1.0, smoothing=Smoothing.from_dict(
        {"k": 1, "n": 3, **({"rebaseline": rebaseline} if rebaseline else {})}))
    scores = np.array([5.0, np.nan, np.nan, 0.2, 5.0], np.float32)
    assert policy.flags(scores, ["h"] * 5).tolist() == [True, False, False, False, True]


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("smoothing", "smoothing", {"k": 2.7, "n": 3}, r"smoothing.k must be a whole number of rows"),
    ("smoothing", "smoothing", {"k": 1, "n": "3"}, r"smoothing.n must be a whole number"),
    ("smoothing", "smoothing", {"k": 1, "n": 1, "rebaseline": {}},
     r"smoothing.rebaseline: .* missing \['end_ratio', 'horizon', 'raise_factor'\]"),
    ("smoothing", "smoothing", {"k": 1, "n": 1, "rebaseline": {
        "end_ratio": 2, "raise_factor": 1, "horizon": 2.5}}, r"horizon must be a whole number"),
    ("alerting", "alerting", {"k": 2.9, "n": 3, "m": 1}, r"alerting.k must be a whole number"),
    ("alerting", "alerting", {"cooldown": float("nan")},
     r"alerting.cooldown must be a finite number of seconds >= 0, got nan"),
])
def test_a_manifest_policy_runs_as_written_or_is_refused(
    tmp_path: Path, section: str, key: str, value: object, message: str,
) -> None:
    """Counts were truncated (k 2.7 ran as 2), an empty rebaseline section turned it off and a
    NaN cooldown never let an alert reopen: the bundle ran another policy than it records."""
    path = _bundle(tmp_path)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest[key] = value
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        load_bundle(path)
    assert AlertPolicy.from_dict({"k": 2.0, "n": 3}) == AlertPolicy(k=2, n=3)  # JSON's 2.0


def test_a_score_the_graph_cannot_compute_is_the_most_extreme_not_missing(
    tmp_path: Path,
) -> None:
    """Finite features near float32's maximum make an autoencoder's error inf - inf = NaN. A
    NaN score means "no score" (warm-up) to flags, alerts and metrics, so the grossest outlier
    was never flagged; the graph's NaN is +inf, alike in dataset scoring and the live scorer."""
    from ds_serving.decoding import Decoded
    from ds_serving.runtime import ModelRuntime
    from tests.support.serving import FEATURES as POINT_FEATURES
    from tests.support.serving import normal_rows, write_point_bundle

    path = write_point_bundle(tmp_path / "models")
    rows = normal_rows(6, 1)
    rows[2:5] = 3e38
    live = ModelRuntime.load(path, backend="cpu").score(
        Decoded(rows=rows, entities=np.array(["h"] * 6, object), times=None))
    assert np.isposinf(live.scores[2:5]).all() and live.flags[2:5].all()
    assert not live.flags[[0, 1, 5]].any()
    frame = pd.DataFrame(rows, columns=POINT_FEATURES).assign(host_id="h")
    scored = score_frame(Scorer.from_bundle(load_bundle(path), backend="cpu"), frame)
    assert np.isposinf(scored["score"].to_numpy()[2:5]).all()
    assert scored["is_anomaly"].tolist() == live.flags.tolist()


def test_dataset_scoring_applies_the_bundles_smoothing_without_being_told(
    tmp_path: Path,
) -> None:
    bundle = load_bundle(_bundle(tmp_path, smoothing={"k": 2, "n": 2}))
    frame = pd.DataFrame({"f1": [2.0, 0, 2, 2], "f2": [0.0] * 4, "host_id": ["h"] * 4})
    scored = score_frame(Scorer.from_bundle(bundle, backend="cpu"), frame)
    assert scored["raw_is_anomaly"].tolist() == [True, False, True, True]
    assert scored["is_anomaly"].tolist() == [False, False, False, True]


def test_a_what_if_is_validated_and_says_what_it_changed() -> None:
    policy = ScoringPolicy(1.0)
    assert policy.what_if(alert_k=None) is policy
    changed = policy.what_if(alert_k=2, threshold=3.0)
    assert changed.alerting.k == 2 and changed.threshold == 3.0
    assert changed.overrides == {"alert_k": 2, "threshold": 3.0} and changed.is_what_if
    assert "what-if" in changed.describe() and changed.to_dict()["what_if"]
    with pytest.raises(PolicyError, match=r"alerting.k must be between 1 and n=5"):
        policy.what_if(alert_k=9)
    with pytest.raises(PolicyError, match=r"unknown what-if field\(s\) \['alert_z'\]"):
        policy.what_if(alert_z=1)
    with pytest.raises(PolicyError, match="threshold must be a number"):
        ScoringPolicy(float("nan"))
