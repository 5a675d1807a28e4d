"""Data-quality expectations on raw telemetry, run with great-expectations 1.x directly.

Each named check groups a few expectations so the Dagster UI shows one pass/fail per concern.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from ds_assets.telemetry.schema import ENTITY_COLUMNS, LABEL, TIMESTAMP

FINITE_RANGE = (-1e12, 1e12)
CHECK_NAMES: tuple[str, ...] = (
    "schema_and_dtypes",
    "features_not_null",
    "feature_values_in_range",
    "label_domain",
    "unique_host_timestamp",
    "minimum_row_count",
)
_FLOAT_TYPES = ["float32", "float64"]
_INT_TYPES = ["int8", "int16", "int32", "int64"]
_STR_TYPES = ["object", "str", "string", "StringDtype"]


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def _expectations(
    features: Sequence[str], ranges: Mapping[str, tuple[float, float]], min_rows: int,
    labeled: bool = True,
) -> dict[str, list[Any]]:
    import great_expectations as gx

    e = gx.expectations
    # one expectation for every required column (one per column cost a validation graph each)
    required = [TIMESTAMP, *ENTITY_COLUMNS, *features, *([LABEL] if labeled else [])]
    schema: list[Any] = [e.ExpectTableColumnsToMatchSet(column_set=required, exact_match=False)]
    in_types = e.ExpectColumnValuesToBeInTypeList
    schema += [in_types(column=c, type_list=_STR_TYPES) for c in ENTITY_COLUMNS]
    schema += [in_types(column=c, type_list=_FLOAT_TYPES) for c in features]
    if labeled:
        schema.append(e.ExpectColumnValuesToBeInTypeList(column=LABEL, type_list=_INT_TYPES))
    # every value in [low, high] <=> min >= low and max <= high: two aggregates per column
    # instead of GX's value-by-value Python map (60 % of a day's validation); the rows out of
    # range are counted for the message only when one fails
    in_range: list[Any] = []
    for c in features:
        low, high = ranges.get(c, FINITE_RANGE)
        in_range += [e.ExpectColumnMinToBeBetween(column=c, min_value=low),
                     e.ExpectColumnMaxToBeBetween(column=c, max_value=high)]
    return {
        "schema_and_dtypes": schema,
        "features_not_null": [
            e.ExpectColumnValuesToNotBeNull(column=c)
            for c in (TIMESTAMP, *ENTITY_COLUMNS, *features)
        ],
        "feature_values_in_range": in_range,
        # an unlabeled source (production) has no label to check
        "label_domain": [
            e.ExpectColumnValuesToNotBeNull(column=LABEL),
            e.ExpectColumnValuesToBeInSet(column=LABEL, value_set=[0, 1]),
        ] if labeled else [],
        "unique_host_timestamp": [
            e.ExpectCompoundColumnsToBeUnique(column_list=["host_id", TIMESTAMP])
        ],
        "minimum_row_count": [e.ExpectTableRowCountToBeBetween(min_value=min_rows)],
    }


def _describe(result: Any, frame: pd.DataFrame) -> str:
    config = result.expectation_config
    if "column_set" in config.kwargs:  # name what is missing, not the whole observed list
        missing = [c for c in config.kwargs["column_set"] if c not in frame.columns]
        return (f"missing column(s) {missing}; the frame has {list(map(str, frame.columns))}")
    target = config.kwargs.get("column") or config.kwargs.get("column_list") or "table"
    details = result.result or {}
    parts = [f"{config.type} on {target}"]
    if "unexpected_count" in details:
        parts.append(f"{details['unexpected_count']} unexpected")
        sample = details.get("partial_unexpected_list") or []
        if sample:
            parts.append(f"e.g. {sample[:3]}")
    if "observed_value" in details:
        parts.append(f"observed {details['observed_value']}")
    return ", ".join(str(p) for p in parts)


def _timezone_failures(frame: pd.DataFrame) -> list[str]:
    """GE 1.x cannot express "tz-aware UTC" for pandas timestamps, so check the dtype here."""
    if TIMESTAMP not in frame.columns:
        return []
    tz = getattr(frame[TIMESTAMP].dtype, "tz", None)
    if tz is None or str(tz) != "UTC":
        return [f"timestamp must be timezone-aware UTC, got dtype {frame[TIMESTAMP].dtype}"]
    return []


_GX_LOCK = threading.Lock()


@cache
def _batch_definition() -> Any:
    """One ephemeral GX context and whole-dataframe batch definition per process: building them
    cost more than validating a day."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return (
        context.data_sources.add_pandas("telemetry")
        .add_dataframe_asset(name="raw_telemetry")
        .add_batch_definition_whole_dataframe("partition")
    )


def _out_of_range(frame: pd.DataFrame, column: str, low: float, high: float) -> str:
    if column not in frame.columns:
        return ""  # schema_and_dtypes names the missing column
    values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero((values < low) | (values > high))
    if not len(bad):
        return ""
    return (f"{len(bad)} row(s) of {column} outside [{low:g}, {high:g}], e.g. row(s) "
            f"{bad[:3].tolist()} = {values[bad[:3]].tolist()}")


def _validate(frame: pd.DataFrame, expectations: list[Any], result_format: str) -> list[Any]:
    """One GX validation of ``expectations`` over the whole frame; the results in order."""
    import great_expectations as gx

    with _GX_LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        try:
            result = batch.validate(gx.ExpectationSuite(name="raw_telemetry",
                                                        expectations=expectations),
                                    result_format=result_format)
        finally:  # the cached engine would otherwise hold the day's frame until the next call
            manager = batch.data.execution_engine.batch_manager
            manager.batch_data_cache.pop(batch.id, None)
            manager.reset_batch_cache()
    return list(result.results)


def validate_telemetry(
    frame: pd.DataFrame,
    features: Sequence[str],
    *,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    min_rows: int = 1,
) -> dict[str, CheckOutcome]:
    """Run every expectation group on ``frame`` (one suite, one pass over the batch); returns
    one outcome per check name.

    The suite runs with pass/fail results only (GX's unexpected-value lists and counts were
    half of a clean day's validation); the expectations that fail run again with their
    details, for the messages."""
    groups = _expectations(features, ranges or {}, min_rows, LABEL in frame.columns)
    suite_expectations: list[Any] = []
    for name, expectations in groups.items():
        for expectation in expectations:
            expectation.meta = {"check": name, "index": len(suite_expectations)}
            suite_expectations.append(expectation)
    results = _validate(frame, suite_expectations, "BOOLEAN_ONLY")
    failing = {(r.expectation_config.meta or {})["index"] for r in results if not r.success}
    if failing:
        again = [x for i, x in enumerate(suite_expectations) if i in failing]
        results = [r for r in results if r.success] + _validate(frame, again, "SUMMARY")
    failures: dict[str, list[str]] = {name: [] for name in groups}
    failed = dict.fromkeys(groups, 0)
    for r in results:
        if r.success:
            continue
        config = r.expectation_config
        name = (config.meta or {})["check"]
        failed[name] += 1
        failures[name].append(_describe(r, frame))
        if name == "feature_values_in_range":
            column = config.kwargs["column"]
            low, high = (ranges or {}).get(column, FINITE_RANGE)
            detail = _out_of_range(frame, column, low, high)
            if detail and detail not in failures[name]:
                failures[name].append(detail)
    timezone = _timezone_failures(frame)
    failures["schema_and_dtypes"] += timezone
    failed["schema_and_dtypes"] += len(timezone)
    outcomes: dict[str, CheckOutcome] = {}
    for name, expectations in groups.items():
        if not expectations:
            outcomes[name] = CheckOutcome(name=name, passed=True, metadata={
                "expectations": 0, "failed": 0,
                "note": "no label column (unlabeled source): nothing to check"})
            continue
        outcomes[name] = CheckOutcome(
            name=name,
            passed=not failures[name],
            failures=failures[name],
            metadata={"expectations": len(expectations), "failed": failed[name]},
        )
    return outcomes
