from __future__ import annotations

import gc
import weakref

import numpy as np
import pandas as pd
import pytest

from ds_assets.telemetry.generator import FEATURE_RANGES, FEATURES, GeneratorConfig, generate_day
from ds_assets.telemetry.validation import CHECK_NAMES, validate_telemetry


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    return generate_day("2026-11-01", GeneratorConfig(n_hosts=2, interval_seconds=600))


def _run(frame: pd.DataFrame, min_rows: int = 10) -> dict[str, bool]:
    outcomes = validate_telemetry(frame, list(FEATURES), ranges=FEATURE_RANGES, min_rows=min_rows)
    return {k: v.passed for k, v in outcomes.items()}


def test_clean_day_passes_every_check(good: pd.DataFrame) -> None:
    assert _run(good) == dict.fromkeys(CHECK_NAMES, True)


def test_each_check_catches_its_problem(good: pd.DataFrame) -> None:
    bad = good.copy()
    bad.loc[3, "cpu_util"] = np.nan
    bad.loc[4, "mem_util"] = 250.0
    bad.loc[5, "label"] = 3
    bad = pd.concat([bad, bad.iloc[[0]]], ignore_index=True)
    outcomes = validate_telemetry(bad, list(FEATURES), ranges=FEATURE_RANGES, min_rows=10)
    passed = {k: v.passed for k, v in outcomes.items()}
    assert passed == {
        "schema_and_dtypes": True,
        "features_not_null": False,
        "feature_values_in_range": False,
        "label_domain": False,
        "unique_host_timestamp": False,
        "minimum_row_count": True,
    }
    assert any("mem_util" in f for f in outcomes["feature_values_in_range"].failures)
    assert outcomes["label_domain"].failures == [
        "1 value(s) of label outside [0, 1], e.g. row(s) 5 (host-000 2026-11-01 00:50:00+00:00) "
        "= [3]"]
    # the suite runs pass/fail only; what failed runs again for the counts and examples
    assert outcomes["features_not_null"].failures == [
        "cpu_util: 1 missing value(s), e.g. row(s) 3 (host-000 2026-11-01 00:30:00+00:00)"]


def test_schema_problems(good: pd.DataFrame) -> None:
    naive = good.drop(columns=["latency_ms"]).copy()
    naive["timestamp"] = naive["timestamp"].dt.tz_localize(None)
    outcomes = validate_telemetry(naive, list(FEATURES), ranges=FEATURE_RANGES)
    failures = " ".join(outcomes["schema_and_dtypes"].failures)
    assert "missing column(s) ['latency_ms']" in failures and "timezone-aware UTC" in failures


def test_minimum_row_count(good: pd.DataFrame) -> None:
    assert _run(good.head(5))["minimum_row_count"] is False


def test_out_of_range_names_rows_and_count(good: pd.DataFrame) -> None:
    bad = good.copy()
    bad.loc[[4, 9], "mem_util"] = 250.0
    bad.loc[7, "cpu_util"] = np.inf
    outcome = validate_telemetry(bad, list(FEATURES), ranges=FEATURE_RANGES)[
        "feature_values_in_range"]
    text = " ".join(outcome.failures)
    # by position in the day and by host and time, which find the rows in any source file
    assert ("2 row(s) of mem_util outside [0, 100], e.g. row(s) 4 (host-000 2026-11-01 "
            "00:40:00+00:00), 9 (host-000 2026-11-01 01:30:00+00:00) = [250.0, 250.0]") in text
    assert "1 row(s) of cpu_util" in text and "inf" in text
    assert outcome.metadata["failed"] == 2  # columns at fault, a line each


def test_validation_keeps_no_frame_alive(good: pd.DataFrame) -> None:
    """The GX context is reused across calls; it must not hold the last day's rows."""
    frame = good.copy()
    ref = weakref.ref(frame)
    validate_telemetry(frame, list(FEATURES), ranges=FEATURE_RANGES)
    del frame
    gc.collect()
    assert ref() is None


def test_column_kinds_name_the_column_and_what_it_holds(good: pd.DataFrame) -> None:
    """One GX expectation checks every column's kind: dtypes, and for object columns what the
    values are (ids that are numbers are not text ids)."""
    bad = good.copy()
    bad["host_id"] = bad["host_id"].astype(object)
    bad.loc[2, "host_id"] = 7  # one number among the text ids
    bad["cpu_util"] = bad["cpu_util"].round().astype("int64")
    bad["label"] = bad["label"].astype("float64")
    outcome = validate_telemetry(bad, list(FEATURES), ranges=FEATURE_RANGES)["schema_and_dtypes"]
    text = " ".join(outcome.failures)
    assert not outcome.passed
    assert ("column host_id holds 1 value(s) that are not text, e.g. row(s) 2 (2026-11-01 "
            "00:20:00+00:00) = [7]; ids must be text") in text
    assert "column cpu_util is int64, expected one of ['float32', 'float64']" in text
    assert "column label is float64" in text
    text_ids = good.assign(host_id=good["host_id"].astype("string"))
    assert _run(text_ids)["schema_and_dtypes"]


def test_an_expectation_that_cannot_run_fails_its_check(
    good: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: a table metric that raises fails the check with GX's reason (it would
    otherwise report nothing wrong and pass)."""
    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("kinds unavailable")

    monkeypatch.setattr(pd.api.types, "infer_dtype", broken)
    outcome = validate_telemetry(good, list(FEATURES), ranges=FEATURE_RANGES)["schema_and_dtypes"]
    assert not outcome.passed
    assert any("could not run" in f and "kinds unavailable" in f for f in outcome.failures)


def test_a_repeated_column_name_fails_instead_of_hiding_a_column(good: pd.DataFrame) -> None:
    twice = pd.concat([good, good[["cpu_util"]]], axis=1)
    twice.iloc[5, -1] = 500.0
    outcomes = validate_telemetry(twice, list(FEATURES), ranges=FEATURE_RANGES)
    assert "column name(s) ['cpu_util'] appear more than once" in " ".join(
        outcomes["schema_and_dtypes"].failures)
    assert not outcomes["feature_values_in_range"].passed
