"""Re-ingesting a day never loses its good data to a version that fails the blocking checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from ds_assets.assets.telemetry import partitions_failing_checks
from ds_assets.dataset import Dataset
from ds_assets.definitions import build_definitions
from ds_assets.settings import Settings
from ds_assets.telemetry.sources import LABELED_CSV_FEATURES

DAY = "2026-11-02"


def _csv(path: Path, rows: int, **columns: list[object]) -> Path:
    data: dict[str, list[object]] = {f: [float(i % 7) for i in range(rows)]
                                     for f in LABELED_CSV_FEATURES}
    data["label"] = [0] * rows
    data.update(columns)
    pd.DataFrame(data).to_csv(path, index=False)
    return path


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    texts = []
    while error is not None:
        texts.append(error.message)
        error = error.cause
    return "\n".join(texts)


def _ingester(settings: Settings, instance: dg.DagsterInstance,
              checks: dict[str, Any] | None = None,
              ) -> Callable[[Path], dg.ExecuteInProcessResult]:
    """Ingests a labeled CSV as DAY's raw telemetry (``checks``: the blocking checks' config)."""
    job = build_definitions(settings).resolve_job_def("ingest_telemetry")

    def ingest(path: Path) -> dg.ExecuteInProcessResult:
        ops: dict[str, Any] = {"raw_telemetry": {"config": {
            "source": "labeled_csv", "path": str(path), "interval_seconds": 300}}}
        if checks is not None:
            ops["raw_telemetry_expectations"] = {"config": checks}
        return job.execute_in_process(instance=instance, partition_key=DAY,
                                      raise_on_error=False, run_config={"ops": ops})
    return ingest


def test_a_failing_new_version_is_refused_and_the_stored_day_kept(
    settings: Settings, tmp_path: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    ingest = _ingester(settings, instance)
    assert ingest(_csv(tmp_path / "good.csv", 288)).success
    stored = settings.data_dir / "assets" / "raw_telemetry" / f"{DAY}.parquet"
    good = pd.read_parquet(stored)

    # a token that is not a number: refused by the source, named as written
    bad_token = _csv(tmp_path / "token.csv", 200, f5=["1"] * 199 + ["n/a"])
    result = ingest(bad_token)
    assert not result.success
    message = _failure_text(result)
    assert "column 'f5' must be numeric, row 199 (line 201" in message and "'n/a'" in message

    # numbers that fail a blocking check (a missing value): validated before replacing
    missing = _csv(tmp_path / "missing.csv", 200, f5=[1.0] * 199 + [None])
    result = ingest(missing)
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    assert "fail blocking check(s) ['features_not_null']" in _failure_text(result)
    refused = Path(str(error.user_failure_data.metadata["refused_path"].value))
    assert refused.parent == stored.parent / "_refused" and len(pd.read_parquet(refused)) == 200

    pd.testing.assert_frame_equal(pd.read_parquet(stored), good)  # nothing lost
    # downstream still trusts the day
    assert partitions_failing_checks(instance, [DAY], Dataset.default(settings)) == {}


def test_the_new_version_is_held_to_the_runs_own_check_settings(
    settings: Settings, tmp_path: Path
) -> None:
    """The pre-check used the default min_rows (10) and declared ranges only, not the run's
    check config (nor learned ranges): 50 rows under a run's min_rows of 100 passed it,
    replaced the good 288-row day, and only then failed the blocking check."""
    instance = dg.DagsterInstance.ephemeral()
    ingest = _ingester(settings, instance, checks={"min_rows": 100})
    assert ingest(_csv(tmp_path / "good.csv", 288)).success
    stored = settings.data_dir / "assets" / "raw_telemetry" / f"{DAY}.parquet"
    result = ingest(_csv(tmp_path / "short.csv", 50))
    assert not result.success
    assert "fail blocking check(s) ['minimum_row_count']" in _failure_text(result)
    assert len(pd.read_parquet(stored)) == 288
    assert partitions_failing_checks(instance, [DAY], Dataset.default(settings)) == {}


def test_a_day_whose_checks_crashed_counts_as_failing(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A blocking check that raised left its record PLANNED, not FAILED, and the day then
    read as passing to every later retrain and re-score."""
    import ds_assets.assets.telemetry as telemetry

    def crash(*_: object, **__: object) -> None:
        raise RuntimeError("validation crashed")

    monkeypatch.setattr(telemetry, "validate_telemetry", crash)
    instance = dg.DagsterInstance.ephemeral()
    result = _ingester(settings, instance)(_csv(tmp_path / "good.csv", 288))
    assert not result.success
    failing = partitions_failing_checks(instance, [DAY], Dataset.default(settings))
    assert DAY in failing and "minimum_row_count" in failing[DAY]


def test_a_stored_day_that_failed_its_checks_is_replaced_and_judged_again(
    settings: Settings, tmp_path: Path
) -> None:
    """No good version to keep: failing rows again are stored and fail the checks (the day
    stays left out) instead of being refused as if they threatened a good day; fixed rows
    bring it back."""
    instance = dg.DagsterInstance.ephemeral()
    ingest = _ingester(settings, instance)
    ds = Dataset.default(settings)
    missing = _csv(tmp_path / "missing.csv", 200, f5=[1.0] * 199 + [None])
    assert not ingest(missing).success
    assert partitions_failing_checks(instance, [DAY], ds) == {DAY: ["features_not_null"]}
    again = ingest(_csv(tmp_path / "again.csv", 200, f5=[2.0] * 199 + [None]))
    assert not again.success
    assert "fail blocking check(s)" not in _failure_text(again)  # the checks failed, not a refusal
    assert partitions_failing_checks(instance, [DAY], ds) == {DAY: ["features_not_null"]}
    assert ingest(_csv(tmp_path / "fixed.csv", 200)).success
    assert partitions_failing_checks(instance, [DAY], ds) == {}
