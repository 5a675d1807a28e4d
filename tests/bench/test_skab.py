"""SKAB protocol: metric arithmetic, train-only thresholds, file handling, and a tiny real run.

The real SKAB data (GPL-3.0) is never in the repository; the data-backed test reads it from
``SKAB_DIR`` (default: the Makefile's ``../shared/datasets/skab``) and skips without it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.skab import (
    FEATURES,
    NO_REBASELINE_GRID,
    POLICY,
    POLICY_GRID,
    REBASELINE_GRID,
    TRAIN_ROWS,
    Config,
    FileScores,
    Policy,
    ScoreCache,
    SkabError,
    evaluate_policy,
    file_flags,
    format_table,
    leave_one_group_out,
    list_files,
    load_file,
    main,
    run_benchmark,
    run_held_out,
    second_incident_recall,
    select_candidate,
    summarize,
)
from ds_assets.training.detectors import DetectorParams
from ds_serving.smoothing import Rebaseline, Smoothing

REPO = Path(__file__).resolve().parents[2]
SKAB_DIR = Path(os.environ.get("SKAB_DIR", REPO.parent / "shared" / "datasets" / "skab"))


@pytest.fixture
def needs_skab() -> None:
    """Skip without the real data, unless DS_REQUIRE_SKAB is set (CI has it): then fail, so a
    missing dataset cannot turn the real-data tests into silent skips."""
    if (SKAB_DIR / "data").is_dir():
        return
    message = f"SKAB data not found at {SKAB_DIR}; set SKAB_DIR to a SKAB checkout"
    if os.environ.get("DS_REQUIRE_SKAB"):
        pytest.fail(f"DS_REQUIRE_SKAB is set but {message}")
    pytest.skip(message)


needs_skab_data = pytest.mark.usefixtures("needs_skab")


# ---------------------------------------------------------------------------------------------
# metric arithmetic (no data)


def test_summarize_matches_skab_formulas() -> None:
    counts = {"tp": 30, "fp": 10, "fn": 20, "tn": 90}
    m = summarize(counts)
    assert m["f1"] == pytest.approx(30 / (30 + (10 + 20) / 2))
    assert m["far"] == pytest.approx(10 / 100)
    assert m["mar"] == pytest.approx(20 / 50)


def _file(train: np.ndarray, test: np.ndarray, test_labels: np.ndarray, name: str) -> FileScores:
    labels = np.r_[np.zeros(train.size, np.int64), test_labels]
    return FileScores(name, np.r_[train, test].astype(np.float64), labels, train_rows=train.size)


def test_crafted_confusion_summed_over_test_parts_only() -> None:
    # training scores 0..399: the 0.99 quantile is 395.01, so test scores > 395.01 are flagged
    train = np.arange(400.0)
    a = _file(train, np.array([500, 500, 10, 10, 500, 10.0]), np.array([1, 1, 1, 0, 0, 0]), "a")
    b = _file(train, np.array([10, 999, 999.0]), np.array([1, 1, 0]), "b")
    result = evaluate_policy([a, b], Policy(quantile=0.99, margin=1.0))
    # a: TP 2, FN 1, FP 1, TN 2;  b: TP 1, FN 1, FP 1, TN 0
    assert (result["tp"], result["fn"], result["fp"], result["tn"]) == (3, 2, 2, 2)
    assert result["f1"] == pytest.approx(3 / (3 + (2 + 2) / 2))
    assert result["far"] == pytest.approx(2 / 4) and result["mar"] == pytest.approx(2 / 5)
    assert [f["file"] for f in result["per_file"]] == ["a", "b"]
    assert result["per_file"][0]["threshold"] == pytest.approx(395.01, rel=1e-6)
    # the training part never counts, even though rows 396..399 exceed the threshold
    assert sum(result[k] for k in ("tp", "fp", "fn", "tn")) == 9


def test_margin_and_smoothing_change_flags_as_deployed() -> None:
    train = np.arange(400.0)[::-1]  # same 0.99 quantile, low scores right before the test part
    test = np.array([500, 10, 500, 500, 10, 10.0])
    scored = _file(train, test, np.zeros(6, np.int64), "f")
    flags, threshold = file_flags(scored, Policy(quantile=0.99, margin=2.0))
    assert threshold == pytest.approx(2 * 395.01, rel=1e-6)
    assert flags[400:].tolist() == [False] * 6  # 500 < 790
    # 2-of-3 smoothing (causal): row 3 has 500, 10, 500 behind it -> flagged; row 2 has only one
    smoothed, _ = file_flags(scored, Policy(quantile=0.99, smoothing=Smoothing(k=2, n=3)))
    assert smoothed[400:].tolist() == [False, False, True, True, True, False]
    # smoothing history includes the training rows before the test part, as online scoring does
    rising = _file(np.arange(400.0), test, np.zeros(6, np.int64), "g")
    assert file_flags(rising, Policy(smoothing=Smoothing(k=2, n=3)))[0][400]


def test_threshold_depends_on_training_rows_only() -> None:
    rng = np.random.default_rng(0)
    train = rng.random(400)
    one = _file(train, rng.random(50), np.zeros(50, np.int64), "x")
    other = _file(train, rng.random(50) * 1e6, np.ones(50, np.int64), "x")
    policy = Policy(quantile=0.995, margin=1.3)
    assert file_flags(one, policy)[1] == file_flags(other, policy)[1]
    # unscored rows (a temporal model's warm-up, NaN) never raise flags
    warm = FileScores("w", np.r_[np.full(10, np.nan), train[10:], [np.nan, 5.0]],
                      np.zeros(402, np.int64))
    flags, _ = file_flags(warm, Policy())
    assert not flags[:10].any() and flags[-2:].tolist() == [False, True]


# ---------------------------------------------------------------------------------------------
# held-out (leave-one-group-out) policy selection on crafted scores


def test_select_candidate_far_cap_ties_and_unused_files() -> None:
    # [candidates, files, tp/fp/fn/tn]; files 0 and 1 are used, file 2 is held out
    counts = np.array([
        [[10, 5, 0, 15], [10, 5, 0, 15], [0, 0, 0, 0]],  # F1 0.80, FAR 25%: over the cap
        [[8, 0, 2, 20], [8, 0, 2, 20], [0, 0, 0, 0]],    # F1 0.89, FAR 0
        [[8, 0, 2, 20], [8, 0, 2, 20], [0, 0, 0, 0]],    # same as 1: the earlier one wins
        [[10, 1, 0, 19], [10, 1, 0, 19], [0, 0, 0, 0]],  # F1 0.95, FAR 5%: best
    ])
    use = np.array([True, True, False])
    best, info = select_candidate(counts, use, max_far=0.15)
    assert best == 3 and info["tp"] == 20 and info["fp"] == 2 and info["meets_max_far"]
    assert info["candidates_meeting_max_far"] == 3
    assert select_candidate(counts[:3], use)[0] == 1  # tie with 2 -> earlier candidate
    # the held-out file's counts cannot change the choice, whatever they are
    rigged = counts.copy()
    rigged[1, 2] = [1000, 0, 0, 1000]
    rigged[3, 2] = [0, 1000, 1000, 0]
    assert select_candidate(rigged, use)[0] == 3
    # with a cap nothing meets, the best F1 overall is chosen, and the answer says so
    best, info = select_candidate(counts, use, max_far=0.01)
    assert best == 1 and info["meets_max_far"]  # FAR 0 still meets 1%
    best, info = select_candidate(counts[[0]], use, max_far=0.01)
    assert best == 0 and not info["meets_max_far"] and info["candidates_meeting_max_far"] == 0
    # equal F1: the lower FAR wins even when it comes later
    tie = np.array([[[10, 2, 0, 8]], [[10, 0, 2, 10]]])
    assert select_candidate(tie, np.array([True]))[0] == 1
    with pytest.raises(SkabError, match="no files to select on"):
        select_candidate(counts, np.zeros(3, bool))
    with pytest.raises(SkabError, match="counts must be"):
        select_candidate(counts[:, :2], use)


# Training scores 0, 1/400, ..., 399/400 in every file: the 0.9 quantile is 0.898, and
# 0.99 quantile x 1.5 is 1.48.  The test part: 10 rows scoring 2.0, 10 scoring 0.95, 20 at 0.1,
# so LOW flags the first 20 test rows and HIGH only the first 10.  Whether LOW or HIGH is right
# depends only on the labels: "wide" anomalies (first 20 rows) or "narrow" (first 10).
LOW = Policy(quantile=0.9, margin=1.0)
HIGH = Policy(quantile=0.99, margin=1.5)
_TRAIN = np.arange(400) / 400
_TEST = np.r_[np.full(10, 2.0), np.full(10, 0.95), np.full(20, 0.1)]
WIDE = np.r_[np.ones(20, np.int64), np.zeros(20, np.int64)]
NARROW = np.r_[np.ones(10, np.int64), np.zeros(30, np.int64)]


def _group_files(labels: dict[str, np.ndarray], useless: bool = False) -> list[FileScores]:
    test = np.full(_TEST.size, 0.1) if useless else _TEST
    return [_file(_TRAIN, test, y, name) for name, y in labels.items()]


def _logo(labels: dict[str, np.ndarray]) -> dict:
    # two sensor sets: "good" sees the anomalies, "blind" flags nothing in the test parts
    return leave_one_group_out(
        {"good": _group_files(labels), "blind": _group_files(labels, useless=True)},
        grid=(LOW, HIGH), max_far=0.15,
    )


def _chosen(result: dict) -> dict[str, tuple[str, float]]:
    return {g["group"]: (g["chosen"]["sensors"], g["chosen"]["quantile"])
            for g in result["groups"]}


def test_leave_one_group_out_choices_and_summed_counts() -> None:
    labels = {"a/1.csv": WIDE, "a/2.csv": WIDE, "b/1.csv": WIDE, "c/1.csv": NARROW}
    result = _logo(labels)
    # held out a -> chosen on b + c: LOW has F1 30/35 but FAR 10/50 = 20% > 15%, so HIGH;
    # held out b -> on a + c: LOW F1 50/55, FAR 10/70 = 14.3%;  held out c -> on a + b: LOW
    assert _chosen(result) == {"a": ("good", 0.99), "b": ("good", 0.9), "c": ("good", 0.9)}
    a, b, c = result["groups"]
    assert a["on_other_groups"]["meets_max_far"] and a["on_other_groups"]["far"] == 0
    assert b["on_other_groups"]["far"] == pytest.approx(10 / 70)
    # applied to the held-out group: a with HIGH on 2 wide files, b and c with LOW
    assert a["held_out"]["tp"] == 20 and a["held_out"]["fn"] == 20 and a["held_out"]["fp"] == 0
    assert (b["held_out"]["tp"], b["held_out"]["fp"]) == (20, 0)
    assert (c["held_out"]["tp"], c["held_out"]["fp"], c["held_out"]["tn"]) == (10, 10, 20)
    # summed over all 4 files: TP 50, FP 10, FN 20, TN 80 (160 test rows, each counted once)
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (50, 10, 20, 80)
    assert result["f1"] == pytest.approx(50 / (50 + (10 + 20) / 2))
    assert result["far"] == pytest.approx(10 / 90) and result["mar"] == pytest.approx(20 / 70)
    for key in ("tp", "fp", "fn", "tn"):
        assert sum(g["held_out"][key] for g in result["groups"]) == result[key]
        assert sum(f[key] for f in result["per_file"]) == result[key]
    assert [f["file"] for f in result["per_file"]] == list(labels)
    assert [f["group"] for f in result["per_file"]] == ["a", "a", "b", "c"]
    assert result["candidates"] == 4


def test_held_out_labels_never_influence_their_own_policy() -> None:
    base = {"a/1.csv": WIDE, "a/2.csv": WIDE, "b/1.csv": WIDE, "c/1.csv": NARROW}
    before = _logo(base)
    for group in ("a", "b", "c"):
        for flipped in (WIDE, NARROW, np.zeros(40, np.int64), np.ones(40, np.int64)):
            changed = {name: (flipped if name.startswith(group + "/") else y)
                       for name, y in base.items()}
            after = _logo(changed)
            assert _chosen(after)[group] == _chosen(before)[group], (group, flipped)
    # ... while the other groups' labels do matter: with c wide too, a is given LOW
    assert _chosen(_logo({**base, "c/1.csv": WIDE}))["a"] == ("good", 0.9)


def test_leave_one_group_out_input_errors() -> None:
    one_group = {"a/1.csv": WIDE, "a/2.csv": NARROW}
    with pytest.raises(SkabError, match="at least 2 groups"):
        _logo(one_group)
    with pytest.raises(SkabError, match="every set must cover the same files"):
        leave_one_group_out({"x": _group_files({"a/1.csv": WIDE, "b/1.csv": WIDE}),
                             "y": _group_files({"a/1.csv": WIDE})}, grid=(LOW,))


def test_policy_grid_contains_the_tuned_policy() -> None:
    assert POLICY in POLICY_GRID and len(set(POLICY_GRID)) == len(POLICY_GRID) == 36 * 19
    assert len(NO_REBASELINE_GRID) == 36 and POLICY in NO_REBASELINE_GRID
    assert {p.smoothing.rebaseline for p in POLICY_GRID} == set(REBASELINE_GRID)


def test_platform_default_rows_are_the_graph_defaults() -> None:
    """The untuned rows must be what the asset graph does with nothing chosen on SKAB: the
    launchpad's detector defaults and the bundle's first default threshold rule (0.995 x 1,
    fixed before any SKAB run), with no smoothing."""
    from bench.skab import PLATFORM_DEFAULT_CONFIGS
    from ds_assets.assets.detector import BundleConfig, DetectorConfig, TrainingWindowConfig

    bundle = BundleConfig()
    assert [c.name for c in PLATFORM_DEFAULT_CONFIGS] == ["temporal_ae", "dense_ae", "pca"]
    for config in PLATFORM_DEFAULT_CONFIGS:
        assert config.params == DetectorConfig(family=config.name).params()
        assert config.features == FEATURES
        assert (config.policy.quantile, config.policy.margin) == (0.995, 1.0)
        assert config.policy.smoothing == bundle.smoothing()
        # calibrated on rows held out of fitting, like the graph's validation split
        assert config.holdout == TrainingWindowConfig().val_fraction
        assert config.threshold_on_holdout
    with pytest.raises(SkabError, match="threshold_on_holdout needs holdout > 0"):
        Config("x", POLICY, baseline="zscore", threshold_on_holdout=True)


def test_a_holdout_calibrated_threshold_uses_only_the_held_out_training_rows() -> None:
    fit, held = np.full(340, 1.0), np.linspace(2.0, 3.0, 60)
    labels = np.zeros(420, dtype=np.int64)
    scored = FileScores("f", np.r_[fit, held, np.zeros(20)], labels, calibration_from=340)
    np.testing.assert_array_equal(scored.train_scores, held)
    _, median = file_flags(scored, Policy(quantile=0.5))
    assert median == pytest.approx(2.5)  # the median of all 400 training rows would be 1.0


# ---------------------------------------------------------------------------------------------
# files (synthetic SKAB-format CSVs, not SKAB data)


def _write_skab_like(path: Path, n: int, anomaly_from: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=list(FEATURES))
    frame.loc[anomaly_from:, "Volume Flow RateRMS"] += 6.0
    frame.insert(0, "datetime", pd.date_range("2020-03-09 10:00:00", periods=n, freq="s"))
    frame["anomaly"] = (np.arange(n) >= anomaly_from).astype(float)
    frame["changepoint"] = 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep=";", index=False)


@pytest.fixture
def fake_skab(tmp_path: Path) -> Path:
    root = tmp_path / "skab"
    _write_skab_like(root / "data" / "valve1" / "1.csv", 520, 470, 1)
    _write_skab_like(root / "data" / "other" / "2.csv", 480, 440, 2)
    _write_skab_like(root / "data" / "anomaly-free" / "anomaly-free.csv", 600, 600, 3)
    return root


def test_list_files_excludes_anomaly_free_and_sorts(fake_skab: Path) -> None:
    files = list_files(fake_skab)
    assert [f"{p.parent.name}/{p.name}" for p in files] == ["other/2.csv", "valve1/1.csv"]
    assert list_files(fake_skab / "data") == files
    with pytest.raises(SkabError, match="does not exist; set SKAB_DIR"):
        list_files(fake_skab / "nope")
    empty = fake_skab.parent / "empty"
    empty.mkdir()
    with pytest.raises(SkabError, match="no SKAB experiment CSVs"):
        list_files(empty)


def test_load_file_errors_name_the_problem(tmp_path: Path, fake_skab: Path) -> None:
    frame = load_file(fake_skab / "data" / "valve1" / "1.csv")
    assert len(frame) == 520 and frame["datetime"].is_monotonic_increasing
    short = tmp_path / "short.csv"
    pd.read_csv(fake_skab / "data" / "valve1" / "1.csv", sep=";").head(300).to_csv(
        short, sep=";", index=False)
    with pytest.raises(SkabError, match="300 rows; the protocol needs more than 400"):
        load_file(short)
    broken = tmp_path / "broken.csv"
    pd.read_csv(short, sep=";").drop(columns=["Current"]).to_csv(broken, sep=";", index=False)
    with pytest.raises(SkabError, match=r"missing column\(s\) \['Current'\]"):
        load_file(broken)


def test_config_validation() -> None:
    with pytest.raises(SkabError, match="exactly one of params"):
        Config("x", Policy())
    with pytest.raises(SkabError, match="unknown: \\['Speed'\\]"):
        Config("x", Policy(), baseline="zscore", features=("Speed",))


def test_cli_on_synthetic_files_writes_table_and_json(
    fake_skab: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "results.json"
    assert main(["--skab-dir", str(fake_skab), "--out", str(out), "--only", "pca", "zscore"]) == 0
    printed = capsys.readouterr().out
    assert "Conv-AE (SKAB published)" in printed and "pca (ours, held-out policy)" in printed
    assert "pca (ours, policy tuned on test (optimistic))" in printed
    # the headline (held-out) table comes first; the optimistic one has no published rows
    headline, optimistic = printed.split("tuned on these 34 test parts")
    assert "Held-out policy" in headline and "Conv-AE" not in optimistic
    doc = json.loads(out.read_text())
    assert doc["n_files"] == 2 and doc["test_rows"] == (520 - 400) + (480 - 400)
    assert doc["test_anomalies"] == 50 + 40
    assert [r["config"]["name"] for r in doc["tuned_on_test_optimistic"]] == ["pca", "zscore"]
    assert [r["family"] for r in doc["held_out_policy"]] == ["pca", "zscore"]
    # the same selection without re-baselining, reported beside it: never chooses the rule
    without = doc["held_out_policy_without_rebaselining"]
    assert [(r["family"], r["variant"]) for r in without] == [
        ("pca", "no re-baselining"), ("zscore", "no re-baselining")]
    assert all("rebaseline" not in g["chosen"]["smoothing"] for r in without for g in r["groups"])
    assert "pca, no re-baselining (ours, held-out policy)" in printed
    # 2 families x 2 sensor sets x 2 files, plus pca's platform defaults on 2 files; the fixed
    # rows reuse the cached scores
    assert doc["trainings"] == 10
    assert [r["config"]["name"] for r in doc["platform_defaults_untuned"]] == ["pca"]
    assert "pca (ours, platform defaults, untuned)" in headline
    for r in doc["tuned_on_test_optimistic"]:
        assert r["tp"] + r["fp"] + r["fn"] + r["tn"] == doc["test_rows"]
        # a +6 sigma shift of the flow sensor is caught by either detector; 10-of-20 smoothing
        # needs 10 anomalous rows before the first flag, so 9 rows per file are missed
        assert r["tp"] >= 90 - 2 * 9 and r["fp"] <= 0.2 * (r["fp"] + r["tn"])
    for r in doc["held_out_policy"]:
        assert r["tp"] + r["fp"] + r["fn"] + r["tn"] == doc["test_rows"]
        assert [g["group"] for g in r["groups"]] == ["other", "valve1"]
        for g in r["groups"]:
            assert g["chosen"]["sensors"] in ("all_8", "no_temperature")
            assert set(g["chosen"]) == {"sensors", "quantile", "margin", "smoothing"}
        # a 6-sigma shift is easy: whatever the other group picks catches most of it
        assert r["tp"] >= 60 and r["f1"] >= 0.7
    assert [p.name for p in out.parent.iterdir()] == ["results.json"]


# ---------------------------------------------------------------------------------------------
# the real data, 2 files, tiny epochs


@needs_skab_data
def test_protocol_on_two_real_files() -> None:
    files = list_files(SKAB_DIR)
    assert len(files) == 34  # SKAB v0.9: 34 experiments once anomaly-free.csv is excluded
    policy = Policy(quantile=0.99, margin=1.0, smoothing=Smoothing(k=2, n=3))
    configs = [
        Config("temporal_ae", policy, DetectorParams(family="temporal_ae", window=8,
                                                     channels=(8,), latent=4, epochs=1)),
        Config("dense_ae", policy, DetectorParams(family="dense_ae", hidden=(8, 4), epochs=1)),
        Config("pca", policy, DetectorParams(family="pca", explained_variance=0.9)),
    ]
    results = run_benchmark(files[:2], configs)
    test_rows = sum(len(load_file(p)) - TRAIN_ROWS for p in files[:2])
    for r in results:
        m = r.metrics
        assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == test_rows
        assert m["f1"] == pytest.approx(m["tp"] / (m["tp"] + (m["fp"] + m["fn"]) / 2))
        assert 0 <= m["far"] <= 1 and 0 <= m["mar"] <= 1
        assert len(m["per_file"]) == 2
    temporal = results[0].files[0]
    assert np.isnan(temporal.scores[:7]).all() and not np.isnan(temporal.scores[7:]).any()
    table = format_table(results)
    assert "temporal_ae (ours)" in table and "Isolation forest (SKAB published)" in table
    assert not math.isnan(results[2].metrics["f1"])


@needs_skab_data
def test_held_out_selection_on_two_real_groups() -> None:
    files = list_files(SKAB_DIR)
    picked = [next(p for p in files if p.parent.name == g) for g in ("other", "valve1")]
    family = Config("pca", POLICY, DetectorParams(family="pca", explained_variance=0.8))
    cache = ScoreCache([(p.parent.name + "/" + p.name, load_file(p)) for p in picked])
    grid = (Policy(quantile=0.9), Policy(quantile=0.99, smoothing=Smoothing(k=3, n=5)))
    (result,) = run_held_out(picked, [family], grid=grid, cache=cache)
    m = result.metrics
    test_rows = sum(len(load_file(p)) - TRAIN_ROWS for p in picked)
    assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == test_rows
    assert [g["group"] for g in m["groups"]] == ["other", "valve1"] and m["candidates"] == 4
    assert cache.trainings == 4  # 2 sensor sets x 2 files, scored once for all 4 candidates
    fixed = run_benchmark(picked, [Config("pca", grid[0], family.params)], cache=cache)
    assert cache.trainings == 4 and fixed[0].files is cache.scores(fixed[0].config)


def test_second_incident_recall_shows_what_rebaselining_costs() -> None:
    """An incident, then the sensors stay shifted (SKAB's 'other' pattern): without the rule
    the shifted rows keep alarming and a second copy of the incident is caught as the first;
    with it, the raised threshold hides a second copy that comes soon, and it is caught again
    once the threshold has returned (linear, over H rows)."""
    train = np.full(400, 1.0)
    test = np.r_[np.full(50, 1.0), np.full(30, 20.0), np.full(100, 3.0)]  # anomaly, then shift
    labels = np.r_[np.zeros(50, np.int64), np.ones(30, np.int64), np.zeros(100, np.int64)]
    scored = _file(train, test, labels, "valve9/1.csv")
    plain = Policy(quantile=0.9, margin=1.0)
    rule = Policy(quantile=0.9, margin=1.0,
                  smoothing=Smoothing(rebaseline=Rebaseline(2.0, 8.0, 100, alpha=0.5)))
    assert second_incident_recall([scored], plain, 10) == {"first": 1.0, "second": 1.0}
    soon = second_incident_recall([scored], rule, 10)
    late = second_incident_recall([scored], rule, 400)
    assert soon["first"] == 1.0 and soon["second"] < 1.0  # hidden by the raised threshold
    assert late["second"] > soon["second"]  # the threshold has come back
    other = _file(train, test, labels, "other/1.csv")
    with pytest.raises(SkabError, match="no file of group 'valve'"):
        second_incident_recall([other], plain, 10)


def test_the_cross_dataset_loader_trains_skab_on_its_normal_rows_only(tmp_path: Path) -> None:
    """make eval's SKAB series fitted and calibrated on the first 400 rows whatever their
    labels (one real file is mostly anomalous there); the other sources keep normal rows
    only. Labeled rows are left out, and each normal stretch is its own segment."""
    from bench.cross_dataset import skab_series

    root = tmp_path / "skab"
    _write_skab_like(root / "data" / "other" / "2.csv", 600, 450, 2)
    path = root / "data" / "other" / "2.csv"
    frame = pd.read_csv(path, sep=";")
    frame.loc[100:199, "anomaly"] = 1.0  # an anomaly inside the training rows
    frame.to_csv(path, sep=";", index=False)
    [series] = skab_series(root)
    assert len(series.train) == 300
    assert series.train_entities.tolist() == [0] * 100 + [1] * 200
    assert len(series.test) == 200 and series.labels.sum() == 150
