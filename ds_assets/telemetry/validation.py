"""Data-quality expectations on raw telemetry, run with great-expectations 1.x directly.

Each named check groups a few expectations so the Dagster UI shows one pass/fail per concern.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from ds_assets.telemetry.schema import ENTITY, ENTITY_COLUMNS, LABEL, TIMESTAMP

FINITE_RANGE = (-1e12, 1e12)
CHECK_NAMES: tuple[str, ...] = (
    "schema_and_dtypes",
    "features_not_null",
    "feature_values_in_range",
    "label_domain",
    "unique_host_timestamp",
    "minimum_row_count",
)
_FLOAT_KINDS = ["float32", "float64"]
_INT_KINDS = ["int8", "int16", "int32", "int64"]
# text ids: a string dtype, or an object column whose values are all strings (or all missing:
# features_not_null names those)
_STR_KINDS = ["string", "str", "empty"]


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
    # and one for every column's kind: GX's per-column type expectation checked each object
    # column value by value in Python (40 % of a day's validation)
    kinds = {c: _STR_KINDS for c in ENTITY_COLUMNS} | {c: _FLOAT_KINDS for c in features}
    if labeled:
        kinds[LABEL] = _INT_KINDS
    kinds_expectation, missing_expectation, within_expectation = _table_expectations()
    schema.append(kinds_expectation(column_kinds=kinds))
    # every value in [low, high] <=> min >= low and max <= high: a min and max per column
    # instead of GX's value-by-value Python map (60 % of a day's validation), all columns from
    # one table metric; the rows out of range are counted for the message only when one fails
    in_range = [within_expectation(ranges={c: list(ranges.get(c, FINITE_RANGE))
                                           for c in features})]
    return {
        "schema_and_dtypes": schema,
        # one table metric for every column (one expectation per column: 6 ms each)
        "features_not_null": [
            missing_expectation(columns=[TIMESTAMP, *ENTITY_COLUMNS, *features])],
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


@cache
def _table_expectations() -> tuple[type, type, type]:
    """GX expectations over many columns from one table metric each (GX's per-column ones cost
    ~5 ms each in GX's own bookkeeping), defined (and registered with GX) on first use:

    - ``ExpectColumnKindsToBeIn``: each named column's kind (its dtype; for an object column
      what its values are, by pandas' ``infer_dtype`` in C) is one of the allowed ones;
    - ``ExpectColumnsToHaveNoMissingValues``: no named column has a missing value;
    - ``ExpectColumnsToBeWithin``: each named column's min and max (missing values skipped) lie
      in its [low, high]."""
    from great_expectations.core.metric_domain_types import MetricDomainTypes
    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.expectations.expectation import BatchExpectation
    from great_expectations.expectations.metrics.metric_provider import metric_value
    from great_expectations.expectations.metrics.table_metric_provider import (
        TableMetricProvider,
    )

    def table_metric(name: str, compute: Callable[[pd.DataFrame], dict[str, Any]]) -> None:
        """Register ``compute`` (the whole batch's frame in, one value per column out) as the
        GX table metric ``name``."""

        class ColumnsMetric(TableMetricProvider):
            metric_name = name

            @metric_value(engine=PandasExecutionEngine)
            def _pandas(cls, execution_engine: Any, metric_domain_kwargs: dict[str, Any],
                        **unused: Any) -> dict[str, Any]:
                df, _, _ = execution_engine.get_compute_domain(
                    metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE)
                return compute(df)

    table_metric("table.column_kinds", _column_kinds)
    table_metric("table.column_missing_counts", _missing_counts)
    table_metric("table.column_min_max", _min_max)

    class ExpectColumnKindsToBeIn(BatchExpectation):
        column_kinds: dict[str, list[str]]
        metric_dependencies = ("table.column_kinds",)
        success_keys = ("column_kinds",)
        args_keys = ("column_kinds",)

        def _validate(self, metrics: dict[str, Any], runtime_configuration: Any = None,
                      execution_engine: Any = None) -> dict[str, Any]:
            observed = metrics["table.column_kinds"]
            wrong = {c: observed[c] for c, allowed in self.column_kinds.items()
                     if c in observed and observed[c] not in allowed}
            return {"success": not wrong, "result": {"observed_value": wrong}}

    class ExpectColumnsToHaveNoMissingValues(BatchExpectation):
        columns: list[str]
        metric_dependencies = ("table.column_missing_counts",)
        success_keys = ("columns",)
        args_keys = ("columns",)

        def _validate(self, metrics: dict[str, Any], runtime_configuration: Any = None,
                      execution_engine: Any = None) -> dict[str, Any]:
            counts = metrics["table.column_missing_counts"]
            missing = {c: counts[c] for c in self.columns if counts.get(c, 0)}
            return {"success": not missing, "result": {"observed_value": missing}}

    class ExpectColumnsToBeWithin(BatchExpectation):
        ranges: dict[str, list[float]]
        metric_dependencies = ("table.column_min_max",)
        success_keys = ("ranges",)
        args_keys = ("ranges",)

        def _validate(self, metrics: dict[str, Any], runtime_configuration: Any = None,
                      execution_engine: Any = None) -> dict[str, Any]:
            observed = metrics["table.column_min_max"]
            outside = {c: observed[c] for c, (low, high) in self.ranges.items()
                       if c in observed and (observed[c][0] < low or observed[c][1] > high)}
            return {"success": not outside, "result": {"observed_value": outside}}

    return ExpectColumnKindsToBeIn, ExpectColumnsToHaveNoMissingValues, ExpectColumnsToBeWithin


def _columns(df: pd.DataFrame) -> Iterator[tuple[str, pd.Series]]:
    """Each column by position with its name (a repeated name comes once per copy)."""
    for i, name in enumerate(df.columns):
        yield str(name), df.iloc[:, i]


def _column_kinds(df: pd.DataFrame) -> dict[str, str]:
    """Each column's dtype, or for an object column what its values are (``infer_dtype``)."""
    out: dict[str, str] = {}
    for name, column in _columns(df):  # a repeated name: any odd copy shows
        kind = (pd.api.types.infer_dtype(column, skipna=True) if column.dtype == object
                else str(column.dtype))
        out[name] = kind if out.get(name, kind) == kind else f"{out[name]}+{kind}"
    return out


def _missing_counts(df: pd.DataFrame) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, column in _columns(df):
        out[name] = out.get(name, 0) + int(column.isna().sum())
    return out


def _min_max(df: pd.DataFrame) -> dict[str, list[float]]:
    """[min, max] of each numeric column, missing values skipped (none: not listed)."""
    out: dict[str, list[float]] = {}
    for name, column in _columns(df):
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            scored = values[~np.isnan(values)]
            if scored.size:
                low, high = out.get(name, (np.inf, -np.inf))
                out[name] = [min(low, float(scored.min())), max(high, float(scored.max()))]
    return out


def _describe(result: Any, frame: pd.DataFrame) -> list[str]:
    """What a failed expectation found, one line per column at fault (never none: an
    expectation that could not run fails its check with GX's reason)."""
    config = result.expectation_config
    reason = _raised(result.exception_info)
    if reason:
        return [f"{config.type} could not run: {reason}"]
    lines = _found(config, result, frame)
    return [line for line in lines if line] or [f"{config.type} failed: {result.result}"]


def _raised(info: Any) -> str:
    """GX's message when an expectation or a metric it needs raised (``exception_info`` is one
    record, or one per metric), else ""."""
    if not isinstance(info, dict):
        return ""
    records = [info] if "raised_exception" in info else list(info.values())
    return "; ".join(str(r.get("exception_message") or "unknown error") for r in records
                     if isinstance(r, dict) and r.get("raised_exception"))


def _found(config: Any, result: Any, frame: pd.DataFrame) -> list[str]:
    if "column_set" in config.kwargs:  # name what is missing, not the whole observed list
        missing = [c for c in config.kwargs["column_set"] if c not in frame.columns]
        return [f"missing column(s) {missing}; the frame has {list(map(str, frame.columns))}"]
    observed = (result.result or {}).get("observed_value") or {}
    if "column_kinds" in config.kwargs:  # missing columns are named by the check above
        return [_wrong_kind(frame, c, kind, config.kwargs["column_kinds"][c])
                for c, kind in observed.items()]
    if "ranges" in config.kwargs:
        return [_out_of_range(frame, c, *config.kwargs["ranges"][c]) for c in observed]
    if "columns" in config.kwargs:
        return [f"{c}: {n} missing value(s), e.g. "
                f"{_rows(frame, np.flatnonzero(frame[c].isna().to_numpy())[:3])}"
                for c, n in observed.items()]
    if "value_set" in config.kwargs and config.kwargs.get("column") in frame.columns:
        column, allowed = config.kwargs["column"], list(config.kwargs["value_set"])
        values = frame[column]
        bad = np.flatnonzero(~values.isin(allowed).to_numpy() & values.notna().to_numpy())
        return [f"{len(bad)} value(s) of {column} outside {allowed}, e.g. "
                f"{_rows(frame, bad[:3])} = {values.iloc[bad[:3]].tolist()}"]
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
    return [", ".join(str(p) for p in parts)]


def _wrong_kind(frame: pd.DataFrame, column: str, kind: str, allowed: Sequence[str]) -> str:
    """A column of the wrong kind, and for text ids the rows that are not text."""
    if allowed != _STR_KINDS:
        return f"column {column} is {kind}, expected one of {list(allowed)}"
    values = frame[column]
    if not isinstance(values, pd.Series) or values.dtype != object:  # (a repeated name)
        return f"column {column} is {kind}, expected text ids (str)"
    missing = values.isna().to_numpy()  # features_not_null names those
    bad = np.flatnonzero([not (m or isinstance(v, str)) for v, m in zip(values, missing,
                                                                         strict=True)])
    return (f"column {column} holds {len(bad)} value(s) that are not text, e.g. "
            f"{_rows(frame, bad[:3], entity=False)} = {[values.iloc[i] for i in bad[:3]]}; ids "
            "must be text")


def _frame_failures(frame: pd.DataFrame) -> list[str]:
    """What GX 1.x cannot express: "tz-aware UTC" for pandas timestamps, and unique column
    names (a repeated name makes every per-column statistic ambiguous)."""
    repeated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if repeated:
        return [f"column name(s) {repeated} appear more than once; each column needs its own "
                "name"]
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
    return (f"{len(bad)} row(s) of {column} outside [{low:g}, {high:g}], e.g. "
            f"{_rows(frame, bad[:3])} = {values[bad[:3]].tolist()}")


def _rows(frame: pd.DataFrame, positions: np.ndarray, entity: bool = True) -> str:
    """Rows by their position in the day and by what finds them in the source file: the
    entity and the time (the day is sorted by entity and time, the file need not be)."""
    names = [str(int(i)) for i in positions]
    times = frame[TIMESTAMP] if TIMESTAMP in frame.columns else None
    if times is not None and pd.api.types.is_datetime64_any_dtype(times):
        ids = frame[ENTITY] if entity and ENTITY in frame.columns else None
        names = [f"{n} ({'' if ids is None else f'{ids.iloc[i]} '}{times.iloc[i]})"
                 for n, i in zip(names, positions, strict=True)]
    return "row(s) " + ", ".join(names)


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
        lines = _describe(r, frame)
        failed[name] += len(lines)
        failures[name] += lines
    own = _frame_failures(frame)
    failures["schema_and_dtypes"] += own
    failed["schema_and_dtypes"] += len(own)
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
            # failed: what is at fault (a column, or a table-wide expectation), a line each
            metadata={"expectations": len(expectations), "failed": failed[name]},
        )
    return outcomes
