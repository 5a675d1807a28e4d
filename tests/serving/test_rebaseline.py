"""Re-baselining after an alarm episode (``ds_serving.smoothing.Rebaseline``): the rule on a
crafted sequence, batch = stream = causal, validation, manifests, hot-reload adoption, and the
live scorer flagging exactly as dataset scoring does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_assets.assets.detector import BundleConfig
from ds_serving.server import ServerThread
from ds_serving.smoothing import (
    Rebaseline,
    Smoothing,
    SmoothingError,
    StreamingSmoother,
    flag_scores,
    raw_flags,
    smooth_flags,
)
from tests.support.serving import normal_rows, server_config, write_point_bundle
from tests.support.smoothing import assert_streams_like_the_table, dataset_and_live_flags

RULE = Rebaseline(end_ratio=2.0, raise_factor=2.0, horizon=4, alpha=1.0)  # level = score


def test_episode_raises_the_threshold_which_returns_over_the_horizon() -> None:
    # T = 1, level = score (alpha 1). Rows 1-4 are an episode (first flag at row 1, peak 5);
    # at row 4 the level 2 <= 5 / 2 ends it and the threshold becomes 2 x 2 = 4 (excess 3),
    # which returns to 1 in 4 rows (0.75 per row): 1.5 is flagged again at row 9
    scores = np.array([0.5, 3, 5, 4, 2, 1.5, 1.5, 1.5, 1.5, 1.5])
    plain = flag_scores(scores, 1.0, Smoothing())
    assert plain.tolist() == [False] + [True] * 9
    got = flag_scores(scores, 1.0, Smoothing(rebaseline=RULE))
    assert got.tolist() == [False, True, True, True, True, False, False, False, False, True]
    # a bigger second incident is caught while the threshold is still raised (4 - 0.75 at row 6)
    spike = scores.copy()
    spike[6] = 3.5
    assert flag_scores(spike, 1.0, Smoothing(rebaseline=RULE))[5:8].tolist() == [
        False, True, False]  # row 6 starts a new episode; at row 7 its level has halved


def test_rule_and_k_of_n_combine_and_nan_rows_neither_flag_nor_move_the_level() -> None:
    # 2-of-2: the first flag needs two raw flags in a row; NaN (warm-up) rows count as not flagged
    scores = np.array([np.nan, np.nan, 3.0, 3.0, 3.0, 1.0, 1.2, 1.2, 1.2, 1.2, 1.2, 1.2])
    got = flag_scores(scores, 1.0, Smoothing(k=2, n=2, rebaseline=RULE))
    # rows 2-4 raw; flags from row 3; the level 1.0 at row 5 <= 3 / 2 ends the episode with
    # threshold max(1, 2 x 1) = 2 (excess 1, 0.25 per row over rows 6-9): raw again at row 10,
    # flagged at row 11 (2 of 2)
    assert got.tolist() == [False] * 3 + [True, True] + [False] * 6 + [True]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(0, 120), max_size=4),
       k=st.integers(1, 3), r=st.sampled_from([1.5, 2.0, 4.0]),
       h=st.sampled_from([1.0, 2.0, 3.0]), horizon=st.integers(1, 30))
def test_stream_in_any_batches_flags_as_the_whole_table(
    seed: int, cuts: list[int], k: int, r: float, h: float, horizon: int
) -> None:
    """Batch (``flag_scores``) and stream (``StreamingSmoother`` fed in arbitrary pieces) give the
    same flags, per entity, NaN rows included; the rows before any cut never depend on later
    scores (causal)."""
    rng = np.random.default_rng(seed)
    n = 120
    ids = rng.choice(np.array(["a", "b", "c"]), n)
    scores = np.abs(rng.normal(size=n)) + np.where(rng.random(n) < 0.2, 4.0, 0.0)
    scores[rng.random(n) < 0.05] = np.nan
    policy = Smoothing(k=k, n=3, rebaseline=Rebaseline(r, h, horizon, alpha=0.3))
    assert_streams_like_the_table(policy, scores, ids, 1.5, cuts, rng)


@pytest.mark.parametrize(("data", "match"), [
    ({"end_ratio": 1.0, "raise_factor": 2, "horizon": 5}, r"end_ratio must be > 1"),
    ({"end_ratio": 2, "raise_factor": 0.5, "horizon": 5}, r"raise_factor must be >= 1"),
    ({"end_ratio": 2, "raise_factor": 2, "horizon": 0}, r"horizon must be a whole number"),
    ({"end_ratio": 2, "raise_factor": 2, "horizon": 5, "alpha": 0}, r"alpha must be in"),
    ({"end_ratio": 2, "raise_factor": 2}, r"missing \['horizon'\]"),
    ({"end_ratio": float("inf"), "raise_factor": 2, "horizon": 5}, r"end_ratio must be > 1"),
    ({"end_ratio": 2, "raise_factor": 2, "horizon": float("inf")}, r"horizon must be a whole"),
    ({"end_ratio": 2, "raise_factor": 2, "horizon": 5, "decay": "exp"}, r"unknown key\(s\) \["),
])
def test_bad_rebaseline_policies_name_the_value(data: dict, match: str) -> None:
    with pytest.raises(SmoothingError, match=match):
        Smoothing.from_dict({"k": 1, "n": 1, "rebaseline": data})


def test_manifest_round_trip_and_older_manifests_unchanged() -> None:
    policy = Smoothing(k=3, n=5, rebaseline=Rebaseline(4.0, 3.0, 240))
    assert Smoothing.from_dict(policy.to_dict()) == policy
    assert policy.to_dict()["rebaseline"] == {"end_ratio": 4.0, "raise_factor": 3.0,
                                              "horizon": 240, "alpha": 0.1}
    assert Smoothing(k=3, n=5).to_dict() == {"k": 3, "n": 5}  # what bundles held before
    assert Smoothing(rebaseline=RULE).enabled and not Smoothing().enabled
    assert policy.describe() == "3-of-5, re-baseline r 4, h 3, H 240"
    config = BundleConfig(smoothing_k=10, smoothing_n=20, rebaseline_end_ratio=4.0,
                          rebaseline_raise=3.0, rebaseline_horizon=240)
    assert config.smoothing() == Smoothing(10, 20, Rebaseline(4.0, 3.0, 240))
    assert BundleConfig().smoothing() == Smoothing()
    with pytest.raises(SmoothingError, match="end_ratio must be > 1"):
        BundleConfig(rebaseline_end_ratio=0.5).smoothing()


def test_raw_flag_paths_refuse_a_rule_that_needs_scores() -> None:
    policy = Smoothing(rebaseline=RULE)
    with pytest.raises(SmoothingError, match="use flag_scores"):
        smooth_flags(np.ones(3, bool), policy)
    with pytest.raises(SmoothingError, match="use apply_scores"):
        StreamingSmoother(policy).apply(np.ones(3, bool), np.array(["a"] * 3))
    assert raw_flags(np.array([np.nan, 2.0, 0.5]), 1.0).tolist() == [False, True, False]


def test_adoption_keeps_raw_flags_and_starts_episodes_afresh() -> None:
    """Hot reload: the raw-flag tails carry over (k-of-n keeps counting); a re-baselining excess
    belongs to the old model's scores and does not."""
    old = StreamingSmoother(Smoothing(k=2, n=2, rebaseline=RULE))
    ids = np.array(["h"] * 6)
    old.apply_scores(np.array([3.0, 3.0, 3.0, 1.0, 0.5, 0.5]), 1.0, ids)  # episode, then raised
    new = StreamingSmoother(Smoothing(k=2, n=2, rebaseline=RULE))
    new.adopt(old)
    # fresh state at threshold 1: 1.5 is raw at once; the carried raw tail (0.5: not flagged)
    # makes the first row 1 of 2, the next 2 of 2
    assert new.apply_scores(np.array([1.5, 1.5]), 1.0, ids[:2]).tolist() == [False, True]
    plain = StreamingSmoother(Smoothing(k=2, n=2))
    carried = StreamingSmoother(Smoothing(k=2, n=2))
    carried.apply(np.array([True]), np.array(["h"]))
    plain.adopt(carried)
    rebaselined = StreamingSmoother(Smoothing(k=2, n=2, rebaseline=RULE))
    rebaselined.adopt(plain)  # k-of-n tails into re-baselining states
    assert rebaselined.apply_scores(np.array([3.0]), 1.0, np.array(["h"])).tolist() == [True]
    # a model without smoothing keeps no per-entity flags: adopting leaves it (and the old) empty
    off = StreamingSmoother(Smoothing())
    off.adopt(rebaselined)
    assert not off.entity_keys() and not rebaselined.entity_keys()


def test_live_scorer_flags_like_dataset_scoring_and_stateless_tier_refuses(
    tmp_path: Path,
) -> None:
    """A bundle whose policy re-baselines: single rows streamed to the gRPC scorer get the
    flags ``score_frame`` (the scored_telemetry asset's function) gives the same rows."""
    models = tmp_path / "models"
    rule = Rebaseline(end_ratio=2.0, raise_factor=2.0, horizon=20, alpha=0.3)
    smoothing = Smoothing(k=2, n=3, rebaseline=rule)
    path = write_point_bundle(models, smoothing=smoothing.to_dict())
    rows = normal_rows(240, 5)
    rows[60:100] += 6.0  # an incident, a shifted state after it, then a second incident
    rows[100:] += 1.5
    rows[190:200] += 8.0
    expected, streamed, info = dataset_and_live_flags(models, path, rows)
    deployed = expected["is_anomaly"].to_numpy()
    assert (deployed != expected["raw_is_anomaly"].to_numpy()).any()  # the rule acted
    np.testing.assert_array_equal(streamed, deployed)
    assert '"rebaseline"' in info.smoothing_json
    thread = ServerThread(server_config(models, stateless=True, poll_interval=3600))
    server = thread.start()
    try:
        assert server.runtime is None and server.last_failure is not None
        assert "2-of-3 flag smoothing with re-baselining" in server.last_failure
    finally:
        thread.stop()
