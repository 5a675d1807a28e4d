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

from ds_assets.detectors import DetectorParams
from ds_assets.skab import (
    FEATURES,
    TRAIN_ROWS,
    Config,
    FileScores,
    Policy,
    SkabError,
    evaluate_policy,
    file_flags,
    format_table,
    list_files,
    load_file,
    main,
    run_benchmark,
    summarize,
)
from ds_serving.smoothing import Smoothing

REPO = Path(__file__).resolve().parents[1]
SKAB_DIR = Path(os.environ.get("SKAB_DIR", REPO.parent / "shared" / "datasets" / "skab"))


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
    assert "Conv-AE (SKAB published)" in printed and "pca (ours)" in printed
    doc = json.loads(out.read_text())
    assert doc["n_files"] == 2 and doc["test_rows"] == (520 - 400) + (480 - 400)
    assert doc["test_anomalies"] == 50 + 40
    assert [r["config"]["name"] for r in doc["results"]] == ["pca", "zscore"]
    for r in doc["results"]:
        assert r["tp"] + r["fp"] + r["fn"] + r["tn"] == doc["test_rows"]
        # a +6 sigma shift of the flow sensor is caught by either detector; 10-of-20 smoothing
        # needs 10 anomalous rows before the first flag, so 9 rows per file are missed
        assert r["tp"] >= 90 - 2 * 9 and r["fp"] <= 0.2 * (r["fp"] + r["tn"])
    assert [p.name for p in out.parent.iterdir()] == ["results.json"]


# ---------------------------------------------------------------------------------------------
# the real data, 2 files, tiny epochs


@pytest.mark.skipif(
    not (SKAB_DIR / "data").is_dir(),
    reason=f"SKAB data not found at {SKAB_DIR}; set SKAB_DIR to a SKAB checkout to run this",
)
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
