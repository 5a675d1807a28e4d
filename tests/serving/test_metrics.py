"""Scorer metrics stay finite whatever the scores are."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ds_serving.metrics import SUM_CAP, BatchHistogram, ScorerMetrics


@pytest.mark.parametrize("n", [3, 4096])  # the small-batch loop and the vectorised path
def test_an_infinite_or_huge_score_counts_in_inf_without_poisoning_the_sum(n: int) -> None:
    hist = BatchHistogram("h", "h", (0.5, 1.0, 2.0))
    values = np.full(n, 0.25, np.float32)
    values[0], values[1] = np.inf, np.float32(1e30)
    hist.observe_many(values, scale=2.0)
    family = next(iter(hist.collect()))
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("h_bucket", "+Inf")] == n and samples[("h_bucket", "0.5")] == n - 2
    total = samples[("h_sum", None)]
    assert math.isfinite(total)
    assert total == pytest.approx(2 * SUM_CAP + (n - 2) * 0.125)


def test_the_exposition_has_no_inf_sum_after_a_1e30_feature() -> None:
    registry = CollectorRegistry()
    metrics = ScorerMetrics(registry)
    metrics.scored(np.array([np.inf, 0.5], np.float32), 2, 1, threshold=1.0)
    text = generate_latest(registry).decode()
    sum_line = next(line for line in text.splitlines()
                    if line.startswith("ds_scorer_anomaly_score_threshold_ratio_sum"))
    assert "inf" not in sum_line.lower()


def test_a_score_at_the_threshold_lands_in_one_bucket_whatever_the_batch_size() -> None:
    """Batches of 8 rows or fewer divided in float64, larger ones compared with float32
    bounds: float32(0.3) at threshold 0.3 (not flagged) landed above the 1.0 ratio bucket in
    small batches and at or below it in large ones."""
    def at_one(n: int) -> float:
        histogram = BatchHistogram("h", "doc", (0.5, 1.0, 1.25))
        histogram.observe_many(np.full(n, 0.3, np.float32), 0.3)
        [family] = histogram.collect()
        return next(s.value for s in family.samples if s.labels.get("le") == "1.0")

    assert at_one(8) == 8 and at_one(9) == 9


def test_model_info_has_no_sample_until_a_model_serves() -> None:
    """A server waiting for its first model showed ``ds_scorer_model_info 1.0`` with no
    labels: a served model with an empty name in dashboards and in joins on it."""
    metrics = ScorerMetrics()
    waiting = generate_latest(metrics.registry).decode()
    assert "# TYPE ds_scorer_model_info gauge" in waiting
    assert [ln for ln in waiting.splitlines() if ln.startswith("ds_scorer_model_info")] == []
    assert "ds_scorer_model_loaded 0.0" in waiting
    metrics.set_model("ae", "3", "cpu")
    serving = generate_latest(metrics.registry).decode()
    assert [ln for ln in serving.splitlines() if ln.startswith("ds_scorer_model_info")] == [
        'ds_scorer_model_info{backend="cpu",name="ae",version="3"} 1.0']
    metrics.set_model("ae", "4", "cpu")  # a reload replaces the sample, no stale version stays
    reloaded = generate_latest(metrics.registry).decode()
    assert [ln for ln in reloaded.splitlines() if ln.startswith("ds_scorer_model_info")] == [
        'ds_scorer_model_info{backend="cpu",name="ae",version="4"} 1.0']


@pytest.mark.parametrize("seed", range(40))
def test_batch_counts_and_sum_match_a_plain_count_of_each_value(seed: int) -> None:
    """The vectorised path counts each bound's values without sorting and stops at the batch's
    largest value: the same buckets and sum as counting every value against every bound, with
    NaN, infinities, values on the bounds and out-of-range values mixed in."""
    rng = np.random.default_rng(seed)
    bounds = (0.25, 0.5, 1.0, 1.5, 2.0, 5.0)
    scale = float(rng.choice([1.0, 0.3, 2.5]))
    n = int(rng.integers(9, 5000))
    values = (rng.exponential(0.5, n) * scale).astype(rng.choice([np.float32, np.float64]))
    special = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0] + [b * scale for b in bounds]
    at = rng.choice(n, size=int(rng.integers(0, 12)), replace=False)
    values[at] = rng.choice(special, size=len(at))
    hist = BatchHistogram("h", "h", bounds)
    hist.observe_many(values, scale)
    family = next(iter(hist.collect()))
    got = {(s.name, s.labels.get("le")): s.value for s in family.samples}

    kept = values[~np.isnan(values)]
    scaled_bounds = (np.asarray(bounds) * scale).astype(values.dtype)
    for bound, le in zip(scaled_bounds, bounds, strict=True):
        assert got[("h_bucket", str(le))] == int(np.sum(kept <= bound)), le
    assert got[("h_bucket", "+Inf")] == len(kept)
    cap = SUM_CAP * scale
    expected = float(np.sum(np.clip(kept.astype(np.float64), -cap, cap))) / scale
    assert got[("h_sum", None)] == pytest.approx(expected, rel=1e-6, abs=1e-9)
