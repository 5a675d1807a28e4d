"""The synthetic telemetry generator: determinism, schema, ranges, labels and anomaly effects."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ds_assets.telemetry.generator import (
    ANOMALY_TYPES,
    FEATURE_RANGES,
    FEATURES,
    REGIONS,
    DriftConfig,
    GeneratorConfig,
    generate_day,
)

SMALL = GeneratorConfig(n_hosts=4, interval_seconds=300, seed=1, anomaly_rate=0.03)
RICH = GeneratorConfig(n_hosts=20, interval_seconds=60, anomaly_rate=0.02)
RICH_DAYS = ("2026-11-02", "2026-11-03", "2026-11-04")
COLUMNS = ["timestamp", "host_id", "region", "project_id", *FEATURES, "label", "anomaly_type"]


@pytest.fixture(scope="module")
def rich() -> pd.DataFrame:
    """Three days of 20 hosts at 1 min: enough events of every type for statistical checks."""
    return pd.concat([generate_day(d, RICH) for d in RICH_DAYS], ignore_index=True)


def _max_abs_z(frame: pd.DataFrame) -> np.ndarray:
    """Per row, the largest |z| over features, against the normal rows' per-host mean/std."""
    stats = frame[frame["label"] == 0].groupby("host_id")[list(FEATURES)].agg(["mean", "std"])
    z = np.zeros(len(frame))
    for f in FEATURES:
        mean = frame["host_id"].map(stats[(f, "mean")]).to_numpy()
        std = frame["host_id"].map(stats[(f, "std")]).to_numpy()
        z = np.maximum(z, np.abs((frame[f].to_numpy(dtype=np.float64) - mean) / std))
    return z


# --- determinism -------------------------------------------------------------------------------


def test_same_day_and_config_give_identical_frames() -> None:
    a = generate_day("2026-11-01", SMALL)
    pd.testing.assert_frame_equal(a, generate_day("2026-11-01", SMALL))
    pd.testing.assert_frame_equal(a, generate_day(dt.date(2026, 11, 1), SMALL))


def test_days_and_seeds_change_values_but_not_hosts() -> None:
    a = generate_day("2026-11-01", SMALL)
    other_day = generate_day("2026-11-02", SMALL)
    other_seed = generate_day("2026-11-01", replace(SMALL, seed=2))
    for f in FEATURES:
        assert not np.array_equal(a[f], other_day[f]), f
        assert not np.array_equal(a[f], other_seed[f]), f
    hosts = ["host_id", "region", "project_id"]
    pd.testing.assert_frame_equal(
        a[hosts].drop_duplicates().reset_index(drop=True),
        other_day[hosts].drop_duplicates().reset_index(drop=True),
    )
    # A host's attributes depend on (seed, index) only, not on how many hosts are generated.
    wider = generate_day("2026-11-05", replace(SMALL, n_hosts=9))
    first = wider[wider["host_id"].isin(a["host_id"].unique())][hosts].drop_duplicates()
    pd.testing.assert_frame_equal(
        first.reset_index(drop=True), a[hosts].drop_duplicates().reset_index(drop=True)
    )


def test_anomaly_settings_leave_the_normal_signal_untouched() -> None:
    clean = generate_day("2026-11-01", replace(SMALL, anomaly_rate=0.0))
    noisy = generate_day("2026-11-01", replace(SMALL, anomaly_rate=0.2))
    normal = noisy["label"].to_numpy() == 0
    assert 0 < normal.sum() < len(noisy)
    features = list(FEATURES)
    np.testing.assert_array_equal(
        clean.loc[normal, features].to_numpy(), noisy.loc[normal, features].to_numpy()
    )


# --- schema ------------------------------------------------------------------------------------


def test_schema_grid_and_order() -> None:
    frame = generate_day("2026-11-03", SMALL)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 4 * 86_400 // 300
    pd.testing.assert_index_equal(frame.index, pd.RangeIndex(len(frame)))
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert all(frame[f].dtype == np.float32 for f in FEATURES)
    assert frame["label"].dtype == np.int8
    for col in ("host_id", "region", "project_id", "anomaly_type"):
        assert frame[col].map(type).eq(str).all(), col
    day = pd.Timestamp("2026-11-03", tz="UTC")
    assert frame["timestamp"].min() == day
    assert frame["timestamp"].max() == day + pd.Timedelta(seconds=86_400 - 300)
    assert ((frame["timestamp"] - day).dt.total_seconds() % 300 == 0).all()
    assert not frame.duplicated(["host_id", "timestamp"]).any()
    assert frame.equals(frame.sort_values(["host_id", "timestamp"], ignore_index=True))
    assert sorted(frame["host_id"].unique()) == ["host-000", "host-001", "host-002", "host-003"]
    assert set(frame["region"]) <= set(REGIONS)
    assert frame["project_id"].str.fullmatch(r"proj-[a-z]").all()
    assert frame.groupby("host_id")[["region", "project_id"]].nunique().eq(1).all().all()


@pytest.mark.parametrize("interval", [1800, 3600, 86_400])
def test_coarse_intervals_still_work(interval: int) -> None:
    config = GeneratorConfig(n_hosts=3, interval_seconds=interval, anomaly_rate=0.3)
    frame = generate_day("2026-11-01", config)
    assert len(frame) == 3 * 86_400 // interval
    assert ((frame["label"] == 1) == (frame["anomaly_type"] != "none")).all()


@pytest.mark.parametrize(
    "config",
    [SMALL, replace(SMALL, noise_level=25.0, anomaly_rate=0.45), replace(SMALL, noise_level=0.0)],
)
def test_values_respect_ranges_and_are_finite(config: GeneratorConfig) -> None:
    frame = generate_day("2026-11-07", config)
    values = frame[list(FEATURES)].to_numpy()
    assert np.isfinite(values).all()
    for name, (low, high) in FEATURE_RANGES.items():
        assert frame[name].between(low, high).all(), name
    assert set(FEATURE_RANGES) == set(FEATURES)


# --- labels ------------------------------------------------------------------------------------


def test_labels_types_and_rate(rich: pd.DataFrame) -> None:
    assert ((rich["label"] == 1) == (rich["anomaly_type"] != "none")).all()
    assert set(rich["anomaly_type"]) == {"none", *ANOMALY_TYPES}
    rate = rich["label"].mean()
    assert 0.3 * RICH.anomaly_rate < rate < 3 * RICH.anomaly_rate


def test_rate_zero_gives_no_anomalies() -> None:
    frame = generate_day("2026-11-01", GeneratorConfig(n_hosts=5, anomaly_rate=0.0))
    assert frame["label"].sum() == 0
    assert (frame["anomaly_type"] == "none").all()


def test_restricting_anomaly_types() -> None:
    only = replace(RICH, anomaly_types=("spike", "slow_drift"))
    frame = generate_day("2026-11-01", only)
    assert set(frame["anomaly_type"]) == {"none", "spike", "slow_drift"}


# --- realism and anomaly effects --------------------------------------------------------------


def test_load_driven_features_correlate(rich: pd.DataFrame) -> None:
    normal = rich[rich["label"] == 0]
    per_host = normal.groupby("host_id")[["cpu_util", "request_rate"]].corr()
    cpu_rr = per_host.xs("cpu_util", level=1)["request_rate"]
    assert cpu_rr.median() > 0.6
    assert normal["cpu_util"].corr(normal["request_rate"]) > 0.6
    assert normal["request_rate"].corr(normal["net_out"]) > 0.6


def test_daily_and_weekly_seasonality() -> None:
    config = GeneratorConfig(n_hosts=30, interval_seconds=600, anomaly_rate=0.0)
    weekday = generate_day("2026-11-04", config)  # Wednesday
    weekend = generate_day("2026-11-08", config)  # Sunday
    assert weekend["request_rate"].mean() < 0.9 * weekday["request_rate"].mean()
    eu = weekday[weekday["region"] == "eu-west"]
    hour = eu["timestamp"].dt.hour
    afternoon = eu.loc[hour.between(11, 15), "request_rate"].mean()
    night = eu.loc[hour.between(0, 4), "request_rate"].mean()
    assert afternoon > 1.3 * night


def test_stuck_sensor_repeats_values_exactly() -> None:
    config = replace(RICH, anomaly_rate=0.05, anomaly_types=("stuck_sensor",))
    frame = generate_day("2026-11-02", config)
    stuck = frame["anomaly_type"].to_numpy() == "stuck_sensor"
    starts = np.flatnonzero(stuck & ~np.r_[False, stuck[:-1]])
    ends = np.flatnonzero(stuck & ~np.r_[stuck[1:], False])
    assert len(starts) >= 5
    features = list(FEATURES)
    for start, end in zip(starts, ends, strict=True):
        assert frame.loc[start - 1, "label"] == 0
        segment = frame.loc[start - 1 : end, features]  # the last normal row, then the event
        flat = segment.nunique() == 1  # frozen at the last normal value, exactly
        assert 1 <= flat.sum() <= 3, (start, flat)


def test_spikes_stand_out(rich: pd.DataFrame) -> None:
    z = _max_abs_z(rich)
    spikes = rich["anomaly_type"].to_numpy() == "spike"
    assert spikes.sum() >= 5
    assert z[spikes].mean() > 1.5 * z[rich["label"].to_numpy() == 0].mean()


def test_magnitude_anomalies_are_more_unusual_than_normal_rows(rich: pd.DataFrame) -> None:
    # stuck_sensor and slow_drift are subtle by design (a flat line, a ramp from zero), so they
    # are not required to stand out on a per-row univariate |z|.
    z = _max_abs_z(rich)
    kinds = rich["anomaly_type"].to_numpy()
    normal = z[kinds == "none"].mean()
    for kind in ("spike", "level_shift", "noise_burst", "correlation_break"):
        assert z[kinds == kind].mean() > normal, kind


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_hosts", 0),
        ("interval_seconds", 7),
        ("interval_seconds", 0),
        ("interval_seconds", 172_800),
        ("seed", -1),
        ("anomaly_rate", 0.5),
        ("anomaly_rate", -0.1),
        ("anomaly_types", ()),
        ("anomaly_types", ("meteor",)),
        ("noise_level", -1.0),
    ],
)
def test_config_errors_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        GeneratorConfig(**{field: value})  # type: ignore[arg-type]


def test_config_accepts_a_list_of_types_and_stays_hashable() -> None:
    config = GeneratorConfig(anomaly_types=["spike"])  # type: ignore[arg-type]
    assert config.anomaly_types == ("spike",)
    assert hash(config) == hash(GeneratorConfig(anomaly_types=("spike",)))


@pytest.mark.parametrize("day", ["11/01/2026", "2026-13-01", "20261101", "", "2026-11-01T00:00"])
def test_bad_day_string(day: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        generate_day(day, SMALL)


# --- drift injection ---------------------------------------------------------------------------

DRIFT = DriftConfig(start="2026-11-03", features=("latency_ms", "cpu_util"), mean_shift=6.0,
                    scale=2.0, seasonal_amplitude=3.0, seasonal_period_hours=6.0)


def test_drift_leaves_days_before_its_start_and_other_columns_untouched() -> None:
    drifted = replace(SMALL, drift=DRIFT)
    pd.testing.assert_frame_equal(generate_day("2026-11-02", SMALL),
                                  generate_day("2026-11-02", drifted))
    plain, after = generate_day("2026-11-03", SMALL), generate_day("2026-11-03", drifted)
    untouched = [c for c in after.columns if c not in DRIFT.features]
    pd.testing.assert_frame_equal(plain[untouched], after[untouched])  # labels included
    pd.testing.assert_frame_equal(after, generate_day("2026-11-03", drifted))  # deterministic


def test_drift_shifts_mean_variance_and_adds_a_seasonal_pattern() -> None:
    base = GeneratorConfig(n_hosts=6, interval_seconds=60, seed=3, anomaly_rate=0.0)
    plain = generate_day("2026-11-04", base)
    for effect, cfg in {
        "mean": DriftConfig(start="2026-11-04", features=("latency_ms",), mean_shift=6.0),
        "scale": DriftConfig(start="2026-11-04", features=("latency_ms",), scale=3.0),
        "seasonal": DriftConfig(start="2026-11-04", features=("latency_ms",),
                                seasonal_amplitude=5.0, seasonal_period_hours=6.0),
    }.items():
        after = generate_day("2026-11-04", replace(base, drift=cfg))
        delta = (after["latency_ms"] - plain["latency_ms"]).to_numpy(np.float64)
        if effect == "mean":  # a constant per-host offset of 6 noise stds, all positive
            per_host = pd.Series(delta).groupby(after["host_id"]).agg(["min", "max"])
            assert (per_host["min"] > 0).all()
            assert np.allclose(per_host["min"], per_host["max"], rtol=1e-3)
        elif effect == "scale":  # the noise doubles on top of itself: delta = 2 x noise
            assert np.corrcoef(delta, plain["latency_ms"] - plain.groupby("host_id")[
                "latency_ms"].transform(lambda s: s.rolling(5, center=True, min_periods=1)
                                        .mean()))[0, 1] > 0.5
        else:  # a 6-hour sinusoid: four full cycles a day, zero mean
            one_host = delta[: 1440]
            assert abs(one_host.mean()) < 0.05 * one_host.std()
            spectrum = np.abs(np.fft.rfft(one_host))
            assert int(np.argmax(spectrum[1:])) + 1 == 4


def test_drift_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"drift\.features"):
        DriftConfig(start="2026-11-01", features=("cpu",))
    with pytest.raises(ValueError, match=r"drift\.scale"):
        DriftConfig(start="2026-11-01", scale=0.0)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        DriftConfig(start="01/11/2026")
    config = GeneratorConfig(drift={"start": "2026-11-01", "mean_shift": 1.0})  # type: ignore[arg-type]
    assert config.drift == DriftConfig(start="2026-11-01", mean_shift=1.0)


# --- scale -------------------------------------------------------------------------------------


def test_a_million_rows() -> None:
    frame = generate_day("2026-11-01", GeneratorConfig(n_hosts=700))
    assert len(frame) == 1_008_000
    assert frame["label"].sum() > 0


def test_generator_benchmark_reports_rows_and_the_floor_ratio(tmp_path: Path) -> None:
    from bench.generator import main as bench_main

    out = tmp_path / "generator.json"
    assert bench_main(["--hosts", "2", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["rows"] == 2 * 1440 and result["features"] == 8
    assert result["anomalous_rows"] > 0
    assert result["rows_per_s"] > 0 and result["ratio_to_floor"] > 0
