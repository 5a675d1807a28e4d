"""Leave-one-dataset-out evaluation: selection blind to the held-out source, loaders, caching,
per-entity calibration, and a small end-to-end run on generated files (no shared data)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cross_dataset import (
    CONFIGS,
    COUNTS,
    EXTRA_CONFIGS,
    KEEP_MARGIN,
    DetectorConfig,
    EvalError,
    FlagPolicy,
    ScoreCache,
    Scored,
    Series,
    Table,
    evaluate,
    flag_policy_of,
    format_report,
    generator_series,
    gutentag_series,
    main,
    policy_flags,
    score_all,
    score_series,
    select,
    shipped_choice,
)
from ds_assets.training.detectors import DetectorParams
from ds_serving.smoothing import Smoothing

ZSCORE = next(c for c in CONFIGS if c.name == "zscore")
IFOREST = next(c for c in CONFIGS if c.name == "isolation_forest")


def _series(source: str, name: str, n_test: int = 20) -> Series:
    return Series(source, name, ("a",), np.zeros((10, 1), np.float32), np.zeros(10, np.int32),
                  np.zeros((n_test, 1), np.float32), np.zeros(n_test, np.int32),
                  np.zeros(n_test, np.int8), np.full(n_test, "none", object))


def _counts(tp: int, fp: int, fn: int, tn: int) -> list[int]:
    return [tp, fp, fn, tn, 1, int(tp > 0), 0, tp + fp + fn + tn]


def test_selection_never_sees_the_held_out_source() -> None:
    """Candidate 0 is best on a and b; candidate 1 has a higher mean F1 but a FAR over 15 % on a;
    candidate 2 is perfect on c. Selecting on a + b picks 0 whatever c holds."""
    series = [_series("a", "a1"), _series("b", "b1"), _series("c", "c1")]
    candidates = [(ZSCORE, FlagPolicy("quantile", q)) for q in (0.99, 0.995, 0.999)]
    counts = np.array([
        [_counts(8, 2, 2, 88), _counts(7, 1, 3, 89), _counts(1, 30, 9, 60)],
        [_counts(10, 4, 0, 16), _counts(7, 1, 3, 89), _counts(1, 30, 9, 60)],
        [_counts(1, 1, 9, 89), _counts(1, 0, 9, 90), _counts(10, 0, 0, 90)],
    ])
    table = Table(candidates, series, counts)
    assert select(table, ["a", "b"]) == 0 and select(table, ["c"]) == 2
    table.counts[:, 2] = [_counts(10, 0, 0, 90), _counts(0, 90, 10, 0), _counts(0, 0, 10, 90)]
    assert select(table, ["a", "b"]) == 0 and select(table, ["c"]) == 0
    # without the FAR ceiling, or when nothing meets it: the best mean F1 overall
    assert select(table, ["a", "b"], max_far=1.0) == 1
    assert select(table, ["a", "b"], max_far=0.001) == 1
    assert select(table, ["a"], allowed=np.array([False, False, True])) == 2
    with pytest.raises(EvalError, match="no candidate"):
        select(table, ["a"], allowed=np.zeros(3, bool))
    with pytest.raises(EvalError, match="at least one source"):
        select(table, [])
    assert len(COUNTS) == table.counts.shape[2]


def test_a_held_out_sources_rows_do_not_depend_on_its_own_labels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The criterion (FAR cap or not) whose cap the family rows use was chosen on every
    source's held-out F1, the held-out one's included: changing only SKAB's counts changed
    the "chosen on GutenTAG + generator" row for SKAB. It is now chosen without the held-out
    source (nested), and the table ends with the flag-everything reference."""
    import bench.cross_dataset as cd

    series = [_series("skab", "s1"), _series("gutentag", "g1"), _series("generator", "x1")]
    candidates = [(ZSCORE, FlagPolicy("quantile", q)) for q in (0.99, 0.999)]
    other = [_counts(30, 5, 70, 895), _counts(95, 160, 5, 740)]
    monkeypatch.setattr(cd, "vus", lambda *a, **k: {"vus_pr": 0.5, "vus_roc": 0.5})
    monkeypatch.setattr(cd, "kind_recall", lambda *a, **k: {})
    rows = []
    for skab in ([_counts(90, 5, 10, 895), _counts(10, 300, 90, 600)],
                 [_counts(10, 5, 90, 895), _counts(95, 100, 5, 800)]):
        counts = np.array([[skab[i], other[i], other[i]] for i in range(2)], np.int64)
        monkeypatch.setattr(cd, "count_candidates",
                            lambda *a, counts=counts, **k: Table(candidates, series, counts))
        result = evaluate(series, {}, (ZSCORE,), tuple(p for _, p in candidates))
        block = result["per_source"]["skab"]
        rows.append((next(r["policy_text"] for r in block["rows"] if r["row"] == "zscore"),
                     block["rule_chosen_without_it"]))
        assert block["rows"][-1]["row"] == "reference: flag every row"
        assert "nested_held_out_mean_f1" in result["selection"]
    assert rows[0] == rows[1]


def test_the_shipped_default_changes_only_for_more_than_the_machines_spread() -> None:
    """Candidate 1 is selected (mean F1 over a, b a little higher than candidate 0's); with
    candidate 0 shipped today it stays shipped while the gain is within ``KEEP_MARGIN``, and
    gives way to a larger gain or when it breaks the FAR cap."""
    series = [_series("a", "a1"), _series("b", "b1")]
    candidates = [(ZSCORE, FlagPolicy("quantile", q)) for q in (0.99, 0.995)]

    def table(tp_b: int, fp_a: int = 1) -> Table:
        return Table(candidates, series, np.array([
            [_counts(80, fp_a, 20, 899), _counts(80, 1, 20, 899)],
            [_counts(80, 1, 20, 899), _counts(tp_b, 1, 100 - tp_b, 899)],
        ]))

    allowed = np.ones(2, bool)
    close, far = table(81), table(95)  # mean F1 gain ~0.003 and ~0.04
    assert select(close, ["a", "b"]) == 1 and select(far, ["a", "b"]) == 1
    chosen, kept = shipped_choice(close, ["a", "b"], allowed, 1.0, incumbent=0)
    assert chosen == 0 and kept is not None and 0 < kept["mean_f1_gain"] <= KEEP_MARGIN
    assert kept["selected"].startswith("zscore; q 0.995")
    assert shipped_choice(far, ["a", "b"], allowed, 1.0, incumbent=0) == (1, None)
    assert shipped_choice(close, ["a", "b"], allowed, 1.0, incumbent=None) == (1, None)
    assert shipped_choice(close, ["a", "b"], np.array([False, True]), 1.0, 0) == (1, None)
    over_cap = table(81, fp_a=400)  # the incumbent flags 31 % of a's normal rows
    assert shipped_choice(over_cap, ["a", "b"], allowed, 0.15, incumbent=0) == (1, None)


def test_model_bundle_policies_map_to_candidate_policies() -> None:
    """``evaluated_default.POLICY`` holds ``BundleConfig`` fields: each maps to the candidate
    it was chosen as, or to nothing the candidates cover."""
    from bench.cross_dataset import REBASELINE
    from ds_assets.training import evaluated_default

    assert flag_policy_of({"quantile": 0.999, "margin": 1.0}) == FlagPolicy("quantile", 0.999)
    assert flag_policy_of(evaluated_default.POLICY) is not None
    assert flag_policy_of({"threshold_rule": "pot", "risk": 1e-3, "threshold_scope": "entity",
                           "smoothing_k": 3, "smoothing_n": 5}) == FlagPolicy(
        "pot", 1e-3, 1.0, "entity", Smoothing(k=3, n=5))
    assert flag_policy_of({"quantile": 0.99, "rebaseline_end_ratio": 4.0}) == FlagPolicy(
        "quantile", 0.99, smoothing=Smoothing(rebaseline=REBASELINE))
    assert flag_policy_of({"threshold_rule": "best_f1"}) is None
    assert flag_policy_of({"quantile": 0.99, "alert_k": 2}) is None
    assert flag_policy_of({"threshold_rule": "pot", "pot_level": 0.95}) is None


def _gutentag(root: Path, names: tuple[str, ...] = ("uni-x", "mv-y")) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for name in names:
        channels = 1 if name.startswith("uni") else 2
        n = 600
        (root / name).mkdir(parents=True)
        for file, anomalous in (("train_no_anomaly.csv", False), ("test.csv", True)):
            t = np.arange(n)
            data = {"timestamp": t}
            for ch in range(channels):
                data[f"value-{ch}"] = np.sin(t / 10 + ch) + 0.05 * rng.normal(size=n)
            label = np.zeros(n, int)
            if anomalous:
                label[400:420] = 1
                data["value-0"][400:420] += 3.0
            data["is_anomaly"] = label
            pd.DataFrame(data).to_csv(root / name / file, index=False)
        rows.append({"name": name, "channels": channels, "length": n, "n_anomalies": 1,
                     "anomaly_kinds": "platform", "anomaly_starts": "400",
                     "anomaly_lengths": "20"})
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    return root


def test_gutentag_series_read_through_the_declared_reader(tmp_path: Path) -> None:
    series = gutentag_series(_gutentag(tmp_path / "gt"))
    assert [s.name for s in series] == ["uni-x", "mv-y"]
    mv = series[1]
    assert mv.features == ("value-0", "value-1") and mv.test.shape == (600, 2)
    assert not mv.continuous and mv.labels.sum() == 20
    assert set(mv.kinds[mv.labels == 1]) == {"platform"} and set(mv.kinds[:400]) == {"none"}
    with pytest.raises(EvalError, match=r"no index\.csv; set GUTENTAG_DIR"):
        gutentag_series(tmp_path / "missing")


def test_calibration_rows_are_each_entitys_last_share() -> None:
    s = Series("g", "x", ("a",), np.zeros((40, 1), np.float32),
               np.repeat(np.array([0, 1], np.int32), 20), np.zeros((2, 1), np.float32),
               np.zeros(2, np.int32), np.zeros(2, np.int8), np.full(2, "none", object))
    fit, cal = s.fit_and_calibration()
    assert np.flatnonzero(cal).tolist() == [17, 18, 19, 37, 38, 39] and (fit == ~cal).all()


def test_per_entity_calibration_flags_the_quiet_entitys_anomaly() -> None:
    """Entity 1's scores are 10x entity 0's: one global threshold misses entity 0's anomaly,
    each entity's own threshold catches it."""
    rng = np.random.default_rng(1)
    cal = np.r_[rng.random(200), 10 * rng.random(200)]
    test = np.r_[rng.random(50), 10 * rng.random(50)]
    test[25] = 5.0  # entity 0: five times its normal maximum, half of entity 1's
    scored = Scored(cal, np.repeat([0, 1], 200), test)
    entities = np.repeat([0, 1], 50)
    glob = policy_flags(scored, entities, FlagPolicy("quantile", 0.999))
    own = policy_flags(scored, entities, FlagPolicy("quantile", 0.999, scope="entity"))
    assert not glob[25] and own[25]
    smoothed = policy_flags(scored, entities, FlagPolicy(
        "quantile", 0.999, scope="entity", smoothing=Smoothing(k=2, n=3)))
    assert not smoothed[25]  # one flagged row is not 2 of 3


def test_entity_standardization_uses_each_entitys_own_fitting_rows(tmp_path: Path) -> None:
    """Entity 1 runs 100 above entity 0: standardized, a +5 step on entity 0 stands out; with
    one entity the standardized configuration reuses the plain one's scores."""
    from bench.cross_dataset import ENTITY_NORM, _entity_standardized

    rng = np.random.default_rng(5)
    train = rng.normal(size=(200, 2)).astype(np.float32)
    train[100:] += 100.0
    test = rng.normal(size=(40, 2)).astype(np.float32)
    test[20:] += 100.0
    s = Series("g", "x", ("a", "b"), train, np.repeat([0, 1], 100).astype(np.int32), test,
               np.repeat([0, 1], 20).astype(np.int32), np.zeros(40, np.int8),
               np.full(40, "none", object))
    fit, _ = s.fit_and_calibration()
    z = _entity_standardized(s, fit)
    assert abs(z.train[fit].mean()) < 0.05 and abs(z.test.mean()) < 0.5
    np.testing.assert_allclose(z.train[:85].std(axis=0), 1.0, rtol=1e-5)
    normed = next(c for c in CONFIGS if c.name == "zscore" + ENTITY_NORM)
    assert normed.base == "zscore" and normed.entity_norm
    one = _series("g", "one")
    got = score_all([one], [ZSCORE, normed], ScoreCache(tmp_path), workers=1)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    np.testing.assert_array_equal(got[("g", "one", normed.name)].test,
                                  got[("g", "one", "zscore")].test)


def test_a_configuration_that_cannot_fit_a_series_is_refused_there_not_fatal() -> None:
    """A window longer than a series' calibration rows (SKAB keeps 60) makes that series score
    nothing, with the reason, instead of stopping the whole evaluation."""
    train = np.sin(np.arange(100)[:, None] / 5 + np.arange(2)).astype(np.float32)
    config = DetectorConfig("t/w32", "temporal_ae", DetectorParams(
        family="temporal_ae", window=32, channels=(4,), latent=2, epochs=1))
    series = Series("g", "x", ("a", "b"), train, np.zeros(100, np.int32), train[:20],
                    np.zeros(20, np.int32), np.zeros(20, np.int8), np.full(20, "none", object))
    scored = score_series(series, config)  # 15 calibration rows < 32
    assert scored.refused.startswith("window=32 is longer than every entity's validation rows")
    assert np.isnan(scored.test).all() and len(scored.calibration) == 15


def test_a_temporal_model_reaches_into_training_only_for_continuous_series() -> None:
    rng = np.random.default_rng(2)
    train = np.sin(np.arange(300)[:, None] / 5 + np.arange(2)).astype(np.float32)
    test = train[:50] + 0.01 * rng.normal(size=(50, 2)).astype(np.float32)
    config = DetectorConfig("t", "temporal_ae", DetectorParams(
        family="temporal_ae", window=8, channels=(4,), latent=2, epochs=2, patience=1))
    base = Series("g", "x", ("a", "b"), train, np.zeros(300, np.int32), test,
                  np.zeros(50, np.int32), np.zeros(50, np.int8), np.full(50, "none", object))
    joined = score_series(base, config)
    apart = score_series(Series(**{**base.__dict__, "continuous": False}), config)
    assert np.isfinite(joined.test).all()
    assert np.isnan(apart.test[:7]).all() and np.isfinite(apart.test[7:]).all()
    assert np.isfinite(joined.calibration).all() and len(joined.calibration) == 45


def test_refused_families_score_nothing_and_the_cache_round_trips(tmp_path: Path) -> None:
    uni = _series("g", "u")
    dense = next(c for c in CONFIGS if c.name == "dense_ae")
    refused = score_series(uni, dense)
    assert "no smaller code" in refused.refused and np.isnan(refused.test).all()
    cache = ScoreCache(tmp_path)
    got = score_all([uni], [dense, ZSCORE], cache, workers=1)
    again = ScoreCache(tmp_path).load(uni, ZSCORE)
    assert again is not None
    np.testing.assert_array_equal(again.test, got[("g", "u", "zscore")].test)
    assert again.refused == "" and ScoreCache(tmp_path).load(uni, dense).refused
    assert not list(tmp_path.glob("*.tmp*"))


def test_evaluate_end_to_end_on_generated_sources(tmp_path: Path) -> None:
    series = [*gutentag_series(_gutentag(tmp_path / "gt")), *generator_series(hosts=2, seed=3)]
    # two "sources" need a third to hold out against: split GutenTAG into two by name
    series = [Series(**{**s.__dict__, "source": "skab"}) if s.name == "uni-x" else s
              for s in series]
    configs = (ZSCORE, IFOREST)
    policies = (FlagPolicy("quantile", 0.99), FlagPolicy("quantile", 0.999, 1.5),
                FlagPolicy("pot", 1e-3, smoothing=Smoothing(k=3, n=5)))
    scored = score_all(series, configs, ScoreCache(tmp_path / "c"), workers=1)
    result = evaluate(series, scored, configs, policies)
    assert set(result["per_source"]) == {"skab", "gutentag", "generator"}
    for held, block in result["per_source"].items():
        default = block["rows"][0]
        assert held not in default["chosen_on"] and len(default["chosen_on"]) == 2
        assert 0.0 <= default["f1"] <= 1.0 and default["rows"] > 0
    gen = result["per_source"]["generator"]
    assert set(gen["kind_recall_default"]) <= {
        "spike", "level_shift", "stuck_sensor", "noise_burst", "correlation_break",
        "slow_drift"}
    shipped = result["shipped_default"]
    assert shipped["chosen_on"] == ["skab", "gutentag", "generator"]
    assert shipped["kept"] is None  # the shipped default (a temporal AE) is not a candidate
    assert shipped["policy"]["scope"] == "global" and not shipped["detector"]["entity_norm"]
    key = f"{shipped['criterion']}, {shipped['calibrations']}"
    assert key in result["selection"]["held_out_mean_f1"]
    assert len(result["selection"]["held_out_mean_f1"]) == 4  # 2 criteria x 2 calibrations
    text = format_report(result)
    assert "== skab held out" in text and "published: Conv-AE" in text
    json.dumps(result, default=str)


def test_main_refuses_a_missing_source_directory(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--sources", "gutentag", "generator", "--gutentag-dir", str(tmp_path / "no"),
                 "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "r.json")])
    assert code == 2 and "no index.csv" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_the_fused_detector_is_scored_as_one_graph_through_the_shipped_path() -> None:
    """The fused family trains, exports and scores like any family (no score-level step):
    each entity's first W - 1 test rows are its warm-up (a new entity), every later row is
    scored."""
    rng = np.random.default_rng(3)
    train_entities, test_entities = np.repeat([0, 1], 300), np.repeat([0, 1], 60)
    series = Series("generator", "fused", ("a", "b"), rng.normal(size=(600, 2)).astype(np.float32),
                    train_entities, rng.normal(size=(120, 2)).astype(np.float32), test_entities,
                    np.zeros(120, np.int8), np.full(120, "none", object), continuous=False)
    config = DetectorConfig("fused", "fused", DetectorParams(family="fused", epochs=2))
    scored = score_series(series, config)
    assert not scored.refused
    warm = np.isnan(scored.test)
    assert config.params is not None
    assert [int(warm[test_entities == e].sum()) for e in (0, 1)] == [config.params.window - 1] * 2
    assert np.isfinite(scored.test[~warm]).all() and np.isfinite(scored.calibration).any()


def test_vus_leaves_out_what_a_configuration_could_not_score() -> None:
    """A refused configuration (no score at all) was ranked as a constant, VUS-ROC ~0.5, and
    averaged with the series it did score."""
    from bench.cross_dataset import vus

    scored_series = _series("gutentag", "g1", n_test=60)
    refused_series = _series("gutentag", "g2", n_test=60)
    labels = np.zeros(60, np.int8)
    labels[30:35] = 1
    scored_series = scored_series.__class__(**{**scored_series.__dict__, "labels": labels})
    refused_series = refused_series.__class__(**{**refused_series.__dict__, "labels": labels})
    perfect = labels.astype(np.float32)
    scored = {("gutentag", "g1", "zscore"): Scored(np.zeros(1), np.zeros(1), perfect, "", 0.0),
              ("gutentag", "g2", "zscore"): Scored(np.zeros(1), np.zeros(1),
                                                   np.full(60, np.nan, np.float32), "x", 0.0)}
    both = vus([scored_series, refused_series], scored, ZSCORE)
    alone = vus([scored_series], scored, ZSCORE)
    assert both == alone and alone["vus_roc"] > 0.9


def test_the_extra_nearest_window_configurations_score_through_the_shipped_path() -> None:
    """``--extra window_knn`` adds the nearest-window detector at its default scales and at 16
    rows; both score a one-feature series (no univariate refusal), each entity's first
    W - 1 test rows unscored."""
    rng = np.random.default_rng(4)
    train_entities, test_entities = np.repeat([0, 1], 400), np.repeat([0, 1], 80)
    series = Series("gutentag", "knn", ("a",), rng.normal(size=(800, 1)).astype(np.float32),
                    train_entities, rng.normal(size=(160, 1)).astype(np.float32), test_entities,
                    np.zeros(160, np.int8), np.full(160, "none", object), continuous=False)
    configs = EXTRA_CONFIGS["window_knn"]
    assert [c.name for c in configs] == ["window_knn", "window_knn/16"]
    assert not {c.name for c in configs} & {c.name for c in CONFIGS}  # outside the pool
    for config in configs:
        scored = score_series(series, config)
        assert not scored.refused, scored.refused
        assert config.params is not None
        warm = np.isnan(scored.test)
        assert [int(warm[test_entities == e].sum()) for e in (0, 1)] == [
            config.params.window - 1] * 2


def test_level_adaptation_flags_as_a_bundle_policy_with_it_would() -> None:
    """``--extra adapt`` policies: the evaluation's shortcut (the plain policy on
    ``with_adaptation``'s scores, computed once per rate) flags exactly as the scoring policy
    a bundle carries (``smoothing.adapt`` referenced to the median calibration score)."""
    from bench.cross_dataset import EXTRA_POLICIES, calibrated, with_adaptation
    from ds_serving.smoothing import Adaptation

    rng = np.random.default_rng(3)
    calibration = rng.gamma(4.0, 0.25, 400)
    test = rng.gamma(4.0, 0.25, 600) * np.where(np.arange(600) > 200, 8.0, 1.0)
    entities = np.array(["a", "b"])[np.arange(600) % 2]
    scored = Scored(calibration, np.zeros(400, np.int32), test)
    policies = [p for p in EXTRA_POLICIES["adapt"] if p.rule == "quantile" and p.value == 0.99
                and p.margin == 1.5 and p.scope == "global"]
    assert {p.adapt for p in policies} == {0.001, 0.003, 0.01} and len(policies) == 12
    for policy in policies:
        deployed = calibrated(scored, policy, {})
        bundle = deployed.what_if(smoothing=Smoothing(
            policy.smoothing.k, policy.smoothing.n, policy.smoothing.rebaseline,
            Adaptation(policy.adapt, float(np.median(calibration)))))
        expected = bundle.flags(test, entities)
        np.testing.assert_array_equal(policy_flags(scored, entities, policy), expected)
        adapted = with_adaptation(scored, entities, policy.adapt)
        np.testing.assert_array_equal(
            policy_flags(scored, entities, policy, deployed, adapted), expected)
        plain = policy_flags(scored, entities, replace(policy, adapt=0.0))
        assert expected.sum() < plain.sum() and not (expected & ~plain).any()
    assert flag_policy_of({"quantile": 0.99, "adapt_rate": 0.003}) == FlagPolicy(
        "quantile", 0.99, adapt=0.003)
    assert FlagPolicy("quantile", 0.99, adapt=0.003).to_dict()["adapt_rate"] == 0.003
    assert "level adaptation rate 0.003" in FlagPolicy("quantile", 0.99, adapt=0.003).describe()


def test_level_adaptation_a_bundle_would_refuse_flags_nothing() -> None:
    """A median calibration score of 0 gives no bundle (``bundling.adaptation`` refuses it):
    the candidate flags nothing on that series instead of scoring without adaptation."""
    from bench.cross_dataset import EXTRA_POLICIES

    scored = Scored(np.zeros(100), np.zeros(100, np.int32), np.r_[np.zeros(50), np.ones(50)])
    entities = np.zeros(100, np.int32)
    policy = FlagPolicy("quantile", 0.99, adapt=0.003)
    assert not policy_flags(scored, entities, policy).any()
    assert policy_flags(scored, entities, FlagPolicy("quantile", 0.99)).sum() == 50
    assert {p.scope for p in EXTRA_POLICIES["adapt"]} == {"global"}
