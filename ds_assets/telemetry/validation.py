"""Data-quality expectations on raw telemetry, run with great-expectations 1.x directly.

Each named check groups a few expectations so the Dagster UI shows one pass/fail per concern.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    schema: list[Any] = [e.ExpectColumnToExist(column=c) for c in (TIMESTAMP, *ENTITY_COLUMNS)]
    schema += [e.ExpectColumnToExist(column=c) for c in (*features, *([LABEL] if labeled else []))]
    in_types = e.ExpectColumnValuesToBeInTypeList
    schema += [in_types(column=c, type_list=_STR_TYPES) for c in ENTITY_COLUMNS]
    schema += [in_types(column=c, type_list=_FLOAT_TYPES) for c in features]
    if labeled:
        schema.append(e.ExpectColumnValuesToBeInTypeList(column=LABEL, type_list=_INT_TYPES))
    in_range = []
    for c in features:
        low, high = ranges.get(c, FINITE_RANGE)
        in_range.append(e.ExpectColumnValuesToBeBetween(column=c, min_value=low, max_value=high))
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


def _describe(result: Any) -> str:
    config = result.expectation_config
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


def validate_telemetry(
    frame: pd.DataFrame,
    features: Sequence[str],
    *,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    min_rows: int = 1,
) -> dict[str, CheckOutcome]:
    """Run every expectation group on ``frame``; returns one outcome per check name."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("telemetry")
        .add_dataframe_asset(name="raw_telemetry")
        .add_batch_definition_whole_dataframe("partition")
    )
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    outcomes: dict[str, CheckOutcome] = {}
    labeled = LABEL in frame.columns
    for name, expectations in _expectations(features, ranges or {}, min_rows, labeled).items():
        if not expectations:
            outcomes[name] = CheckOutcome(name=name, passed=True, metadata={
                "expectations": 0, "failed": 0,
                "note": "no label column (unlabeled source): nothing to check"})
            continue
        suite = gx.ExpectationSuite(name=name, expectations=expectations)
        result = batch.validate(suite)
        failures = [_describe(r) for r in result.results if not r.success]
        if name == "schema_and_dtypes":
            failures += _timezone_failures(frame)
        outcomes[name] = CheckOutcome(
            name=name,
            passed=not failures,
            failures=failures,
            metadata={"expectations": len(expectations), "failed": len(failures)},
        )
    return outcomes
