"""VUS-ROC / VUS-PR: equal to the reference implementation (TSB-AD) on fixed cases, and the
properties that make them worth reporting beside point-wise metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ds_assets.reporting.evaluation import average_precision, volume_under_surface

CASES = json.loads((Path(__file__).parent / "fixtures" / "vus_tsb_ad.json").read_text())["cases"]


def _labels(n: int, ranges: list[list[int]]) -> np.ndarray:
    y = np.zeros(n, dtype=int)
    for first, last in ranges:
        y[first:last + 1] = 1
    return y


@pytest.mark.parametrize("case", CASES, ids=[f"n{c['n']}-w{c['window']}" for c in CASES])
def test_equals_the_tsb_ad_reference(case: dict) -> None:
    """Ranges at both ends, merging buffers, tied scores, window 0 and few thresholds."""
    got = volume_under_surface(_labels(case["n"], case["ranges"]), np.asarray(case["scores"]),
                               case["window"], case["thresholds"])
    assert got.vus_roc == pytest.approx(case["vus_roc"], abs=1e-12)
    assert got.vus_pr == pytest.approx(case["vus_pr"], abs=1e-12)


def test_a_detection_just_before_the_range_earns_credit_point_metrics_deny() -> None:
    y = _labels(1000, [[500, 519]])
    rng = np.random.default_rng(0)
    early = rng.random(1000) * 0.1
    early[494:514] += 1.0  # the right length, six rows early
    exact = rng.random(1000) * 0.1
    exact[500:520] += 1.0
    noise = rng.random(1000)
    vus = {k: volume_under_surface(y, s, window=20) for k, s in
           {"early": early, "exact": exact, "noise": noise}.items()}
    assert vus["exact"].vus_pr > vus["early"].vus_pr > 2 * vus["noise"].vus_pr
    # point-wise AP holds the six early rows fully against the early detector
    assert vus["early"].vus_pr > average_precision(y, early) + 0.05


def test_random_scores_stay_near_the_base_rate_in_vus_pr() -> None:
    """VUS-PR is the headline: on random scores it stays near the anomaly rate (2 % here);
    VUS-ROC of random scores sits above 0.5 (0.66 here: the buffers' credit), so it is
    read beside a baseline, never alone."""
    y = _labels(5000, [[1000, 1049], [3000, 3049]])
    random = volume_under_surface(y, np.random.default_rng(1).random(5000), window=40)
    assert random.vus_pr < 0.05
    signal = np.random.default_rng(1).random(5000) + y
    assert volume_under_surface(y, signal, window=40).vus_roc > random.vus_roc + 0.25


def test_labels_without_anomalies_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one anomalous row"):
        volume_under_surface(np.zeros(10, int), np.arange(10.0))
    with pytest.raises(ValueError, match="window must be >= 0"):
        volume_under_surface(np.ones(10, int), np.arange(10.0), window=-1)
