"""Per-entity thresholds: carried by the manifest's threshold section, applied by the one scoring
policy alike in dataset scoring and the live scorer, the global one for everything else."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_assets.training.dataset_scoring import score_frame, score_table
from ds_assets.training.datasets import DatasetError
from ds_serving.bundle import MANIFEST_FILE, BundleError, load_bundle, promote
from ds_serving.client import ScorerClient, encode_request
from ds_serving.metrics import ScorerMetrics
from ds_serving.policy import PolicyError, ScoringPolicy
from ds_serving.scoring import Scorer
from ds_serving.server import ServerThread
from ds_serving.smoothing import Rebaseline, Smoothing, StreamingSmoother, flag_scores
from tests.support.serving import FEATURES, normal_rows, server_config, write_point_bundle

OWN = {"a": 0.5, "b": 2.0}


def test_each_row_is_flagged_against_its_own_entitys_threshold() -> None:
    policy = ScoringPolicy(1.0, entity_thresholds=OWN)
    ids = np.array(["a", "b", "c", "a", "b", "c"], dtype=object)
    scores = np.array([0.7, 1.5, 1.5, 0.4, 2.5, 0.9], np.float32)
    np.testing.assert_array_equal(policy.thresholds(ids), [0.5, 2.0, 1.0, 0.5, 2.0, 1.0])
    np.testing.assert_array_equal(policy.raw_flags(scores, ids),
                                  [True, False, True, False, True, False])
    assert policy.thresholds(None) == 1.0  # no ids: the global threshold
    assert policy.raw_flags(scores).tolist() == (scores > 1.0).tolist()
    assert policy.threshold_of(7) == 1.0 and ScoringPolicy(1.0, entity_thresholds={"7": 3.0}
                                                            ).threshold_of(7) == 3.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(0, 90), max_size=4),
       rebaseline=st.booleans())
def test_a_table_and_a_stream_flag_as_each_entity_alone(
    seed: int, cuts: list[int], rebaseline: bool
) -> None:
    """Per-entity thresholds with smoothing (and re-baselining): the whole table, the same rows
    streamed in arbitrary pieces, and each entity flagged on its own with its own threshold
    agree."""
    rng = np.random.default_rng(seed)
    n = 90
    ids = rng.choice(np.array(["a", "b", "c"], dtype=object), n)
    scores = (np.abs(rng.normal(size=n)) * 1.5).astype(np.float32)
    scores[rng.random(n) < 0.05] = np.nan
    smoothing = Smoothing(2, 3, Rebaseline(2.0, 2.0, 10, alpha=0.3) if rebaseline else None)
    policy = ScoringPolicy(1.0, smoothing=smoothing, entity_thresholds=OWN)
    whole = policy.flags(scores, ids)
    for entity in ("a", "b", "c"):
        mine = ids == entity
        np.testing.assert_array_equal(
            whole[mine], flag_scores(scores[mine], policy.threshold_of(entity), smoothing))
    smoother = StreamingSmoother(smoothing)
    parts = [smoother.apply_scores(scores[a:b], policy.thresholds(ids[a:b]), ids[a:b])
             for a, b in itertools.pairwise([0, *sorted(cuts), n])]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_the_manifest_carries_them_and_bad_ones_are_refused(tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = write_point_bundle(models, threshold=1.0,
                              threshold_rule={"rule": "quantile", "entities": OWN})
    policy = load_bundle(path).manifest.policy
    assert policy.entity_thresholds == OWN and policy.threshold == 1.0
    assert policy.threshold_rule == {"rule": "quantile"}
    assert policy.threshold_section() == {"value": 1.0, "rule": "quantile", "entities": OWN}
    assert "the entity's own threshold (2 entities; 1 for others)" in policy.describe()
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["threshold"]["entities"] = {"a": "high"}
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"threshold.entities: entity 'a' has threshold 'high'"):
        load_bundle(path)
    for bad in ([1.0], [], 0, ""):
        with pytest.raises(PolicyError, match=r"threshold.entities must map entity ids"):
            ScoringPolicy.from_sections(1.0, {"entities": bad})


def test_a_what_if_threshold_is_one_threshold_for_every_entity() -> None:
    policy = ScoringPolicy(1.0, entity_thresholds=OWN)
    changed = policy.what_if(threshold=3.0)
    assert not changed.per_entity and changed.overrides == {"threshold": 3.0}
    assert policy.what_if(alert_k=2).entity_thresholds == OWN


def test_the_score_ratio_metric_uses_each_rows_threshold() -> None:
    metrics = ScorerMetrics()
    metrics.scored(np.array([1.0, 4.0], np.float32), 2, 1, np.array([2.0, 2.0]))
    buckets = {s.labels["le"]: s.value for s in next(iter(metrics.score_ratio.collect())).samples
               if s.name.endswith("_bucket")}
    assert buckets["0.5"] == 1 and buckets["1.0"] == 1 and buckets["2.0"] == 2  # 0.5 and 2.0


def test_dataset_scoring_and_the_live_scorer_flag_alike(tmp_path: Path) -> None:
    """A point model with per-entity thresholds and no smoothing: ``score_frame``,
    ``score_table`` and single rows streamed to the gRPC scorer give the same flags, and each
    host is flagged against its own threshold; requests without entity ids are refused, and
    GetModelInfo shows the thresholds."""
    models = tmp_path / "models"
    rows = normal_rows(120, 5)
    hosts = np.array(["quiet", "noisy", "new"])[np.arange(len(rows)) % 3]
    probe = write_point_bundle(tmp_path / "probe")
    scores = Scorer.from_bundle(load_bundle(probe), backend="cpu").score(rows).scores
    own = {"quiet": float(np.quantile(scores, 0.2)), "noisy": float(np.quantile(scores, 0.9))}
    path = write_point_bundle(models, threshold=float(np.quantile(scores, 0.5)),
                              threshold_rule={"rule": "quantile", "entities": own})
    promote(models, "ae", path.name)
    frame = pd.DataFrame(rows, columns=FEATURES).assign(host_id=hosts)
    scorer = Scorer.from_bundle(load_bundle(path), backend="cpu")
    expected = score_frame(scorer, frame)
    flags = expected["is_anomaly"].to_numpy()
    thresholds = np.array([own.get(h, float(np.quantile(scores, 0.5))) for h in hosts])
    np.testing.assert_array_equal(flags, expected["score"].to_numpy() > thresholds)
    assert flags[hosts == "quiet"].mean() > flags[hosts == "noisy"].mean()
    day = tmp_path / "day.parquet"
    frame.to_parquet(day)
    out = tmp_path / "scored.parquet"
    score_table(scorer, day, out, batch_rows=7)  # hosts first seen in later batches too
    np.testing.assert_array_equal(pd.read_parquet(out)["is_anomaly"].to_numpy(), flags)
    with pytest.raises(DatasetError, match=r"rows have no 'host_id' column, and .* flags each "
                                           r"entity against its own threshold \(2 calibrated"):
        score_frame(scorer, frame.drop(columns="host_id"))
    with ServerThread(server_config(models)) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        streamed = [r.flags[0] for r in client.score_stream(
            encode_request(rows[i: i + 1], hosts[i: i + 1]) for i in range(len(rows)))]
        info = client.info()
        with pytest.raises(grpc.RpcError) as refused:
            client.score(rows[:2])
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "keeps per-entity state (a threshold per entity, 2 calibrated)" in str(
            refused.value.details())
        client.close()
    np.testing.assert_array_equal(np.array(streamed), flags)
    assert json.loads(info.threshold_json)["entities"] == own
