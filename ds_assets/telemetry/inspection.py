"""Look at a user's file(s) and infer a declaration: columns, dtypes, timestamp, entity, label
kind, interval, gaps and time range. ``ds-dataset scaffold`` prints this and writes the YAML."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ds_assets.telemetry.declaration import DatasetSpec, SourceSpec, TimestampSpec
from ds_assets.telemetry.files import (
    CsvDialect,
    declared_files,
    is_parquet,
    mostly_numbers,
    not_utf8,
    settled_format,
    sniff,
    timestamps_utc,
)
from ds_assets.telemetry.schema import RESERVED
from ds_assets.telemetry.sources import SourceError

SAMPLE_ROWS = 100_000
_TIME_NAMES = re.compile(r"(^|_)(time|timestamp|datetime|date|ts)($|_)", re.I)
_LABEL_NAMES = ("label", "anomaly", "is_anomaly", "anomalous", "outlier", "target", "attack")
# label values read as "anomalous" when the column holds text and --label-positive is not given
_POSITIVE_WORDS = ("1", "true", "yes", "anomaly", "anomalous", "abnormal", "attack", "fault",
                   "failure", "outlier")
_ENTITY_NAMES = ("host_id", "host", "entity", "device", "device_id", "sensor", "sensor_id",
                 "machine", "machine_id", "series", "id")


@dataclass
class Inferred:
    """What inspection found; ``attributes()`` is the declaration it suggests."""

    name: str
    source: dict[str, Any]
    files: list[str]
    columns: dict[str, str]  # name -> dtype of the first file
    timestamp: str
    entity: dict[str, Any]
    features: list[str]
    labels: dict[str, Any]
    first: str
    last: str
    rows_sampled: int
    interval_seconds: float | None
    gaps: int
    notes: list[str] = field(default_factory=list)
    # the timestamp section beyond its column: format, or unit and origin, as given
    timestamp_spec: dict[str, Any] = field(default_factory=dict)

    def attributes(self, family: str) -> dict[str, Any]:
        start = self.first[:10]
        end = (dt.date.fromisoformat(self.last[:10]) + dt.timedelta(days=1)).isoformat()
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "timestamp": {"column": self.timestamp, "timezone": "UTC", **self.timestamp_spec},
            "entity": self.entity,
            "features": {"columns": self.features},
            "labels": self.labels,
            "partitions": {"start": start, "end": end},
            "detector": {"family": family},
        }
        return out


def _read_sample(path: Path, source: SourceSpec) -> tuple[pd.DataFrame, CsvDialect | None]:
    """The first rows of a file, and how it is written (None: Parquet)."""
    if is_parquet(path, source):
        return pd.read_parquet(path).head(SAMPLE_ROWS), None
    dialect = sniff(path, source)
    return _read_csv(path, dialect, SAMPLE_ROWS), dialect


def _read_csv(path: Path, dialect: CsvDialect, rows: int) -> pd.DataFrame:
    """The first ``rows`` rows of a CSV file (0: its header), column names stripped; a file
    that cannot be read so is named with why."""
    try:
        frame = pd.read_csv(path, nrows=rows, **dialect.read_options())
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise SourceError(f"{path}: cannot be read as CSV with separator "
                          f"{dialect.separator!r}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _timestamp_column(frame: pd.DataFrame, given: str | None, path: Path,
                      unit: str | None = None) -> str:
    named = [c for c in frame.columns if _TIME_NAMES.search(c)]
    if unit and not given:
        given = next(iter(named), None)
        if given is None:
            raise SourceError(f"{path}: --timestamp-unit needs --timestamp COLUMN (no column "
                              f"is named like a time among {list(frame.columns)})")
    if given:
        if given not in frame.columns:
            raise SourceError(f"{path}: no column {given!r} (columns {list(frame.columns)})")
        if pd.api.types.is_numeric_dtype(frame[given]) and not unit:
            raise SourceError(
                f"{path}: column {given!r} holds numbers ({frame[given].iloc[0]}); pass "
                "--timestamp-unit s|ms|us|ns (epoch time, or a sample index with "
                "--timestamp-origin)")
        return given
    for column in [*named, *[c for c in frame.columns if c not in named]]:
        if pd.api.types.is_numeric_dtype(frame[column]):
            continue
        sample = frame[column].astype(str).head(200)
        # the first value's layout, then ISO 8601 with any number of decimals (isoformat()
        # writes them only where a time has a fraction)
        for fmt in (None, "ISO8601"):
            with warnings.catch_warnings():  # a column of names is probed too: no notice
                warnings.simplefilter("ignore", UserWarning)
                parsed = pd.to_datetime(sample, format=fmt, errors="coerce")
            if parsed.notna().mean() > 0.95:
                return str(column)
    numbers = [c for c in named if pd.api.types.is_numeric_dtype(frame[c])]
    if numbers:
        raise SourceError(
            f"{path}: column {numbers[0]!r} holds numbers ({frame[numbers[0]].iloc[0]}); if "
            f"they are times pass --timestamp {numbers[0]} --timestamp-unit s|ms|us|ns (epoch "
            "time, or a sample index with --timestamp-origin)")
    raise SourceError(f"{path}: found no timestamp column among {list(frame.columns)}; pass "
                      "--timestamp COLUMN (and --timestamp-format if it is not ISO 8601)")


def inspect_source(
    path: str, name: str, *, timestamp: str | None = None, entity: str | None = None,
    label_column: str | None = None, windows: str | None = None,
    exclude: list[str] | None = None, timestamp_format: str | None = None,
    timestamp_unit: str | None = None, timestamp_origin: str | None = None,
    label_positive: list[str] | None = None,
) -> Inferred:
    """Inspect the first file of ``path`` (sampled) and every file's time range, parsed by the
    reader's own rules (format settled per file, unit and origin)."""
    source = SourceSpec(path=path)
    files = declared_files(source)
    sample, dialect = _read_sample(files[0], source)
    if sample.empty:
        raise SourceError(f"{files[0]}: a header but no data rows")
    ts = _timestamp_column(sample, timestamp, files[0], timestamp_unit)
    given: dict[str, Any] = {"format": timestamp_format, "unit": timestamp_unit,
                             "origin": timestamp_origin}
    given = {k: v for k, v in given.items() if v}
    try:
        spec = DatasetSpec(source=source, timestamp=TimestampSpec(column=ts, **given))
    except ValueError as exc:  # pydantic's, e.g. a format and a unit together
        raise SourceError(f"timestamp options: {exc}") from None
    notes: list[str] = []
    if entity is None:
        entity = next((c for c in sample.columns if c.lower() in _ENTITY_NAMES
                       and not pd.api.types.is_float_dtype(sample[c])), None)
        if entity:
            notes.append(f"entity column {entity!r} guessed from its name")
    labels: dict[str, Any] = {"kind": "none"}
    if windows:
        labels = {"kind": "windows", "windows": windows}
    else:
        label_column = label_column or next(
            (c for c in sample.columns if c.lower() in _LABEL_NAMES), None)
        if label_column:
            if label_column not in sample.columns:
                raise SourceError(f"{files[0]}: no label column {label_column!r}")
            values = sorted({str(v) for v in sample[label_column].dropna().unique()})[:10]
            positive: list[Any] = [1]
            if label_positive:
                positive = list(label_positive)
            elif pd.api.types.is_numeric_dtype(sample[label_column]):
                present = set(sample[label_column].dropna().unique().tolist())
                if not present <= {0, 1}:  # e.g. -1/1: which one is the anomaly?
                    raise SourceError(
                        f"{files[0]}: label column {label_column!r} holds {values}, not 0 "
                        "(normal) and 1 (anomaly); pass --label-positive with the value(s) "
                        "that mark an anomaly (every other value is then normal)")
            else:
                positive = [v for v in values if v.lower() in _POSITIVE_WORDS]
                if not positive:
                    raise SourceError(
                        f"{files[0]}: label column {label_column!r} holds {values}, none of "
                        "them a known anomaly word; pass --label-positive with the value(s) "
                        "that mark an anomaly")
            labels = {"kind": "column", "column": label_column, "positive": positive}
            notes.append(f"labels: column {label_column!r} with values {values}, positive "
                         f"{positive}")
    unknown = [c for c in exclude or [] if c not in sample.columns]
    if unknown:  # a typo would leave the column in the features, silently
        raise SourceError(f"{files[0]}: --exclude names {unknown}, which the file lacks (it "
                          f"has {list(sample.columns)})")
    used = {ts, entity, labels.get("column"), *(exclude or [])}
    for column in sample.columns:  # numbers with a stray token: the reader would refuse it
        values = sample[column]
        if (column not in used and not pd.api.types.is_numeric_dtype(values)
                and mostly_numbers(values)):
            bad = values.notna() & pd.to_numeric(values, errors="coerce").isna()
            row = int(np.flatnonzero(bad.to_numpy())[0])
            line = row + (1 if dialect is None else dialect.first_data_line)
            raise SourceError(
                f"{files[0]}: line {line}: column {column!r} holds {values.iloc[row]!r} among "
                f"numbers; fix the value (or write it empty), or pass --exclude {column} to "
                "leave the column out")
    numeric = [c for c in sample.columns
               if c not in used and pd.api.types.is_numeric_dtype(sample[c])]
    empty = [c for c in numeric if sample[c].isna().all()]  # e.g. a trailing separator's
    reserved = [c for c in numeric if c in RESERVED and c not in empty]
    features = [c for c in numeric if c not in empty and c not in reserved]
    skipped = [c for c in sample.columns if c not in used and c not in numeric]
    if skipped:
        notes.append(f"non-numeric column(s) {skipped} left out of the features")
    if empty:
        notes.append(f"column(s) {empty} hold no value in the first {len(sample):,} rows: left "
                     "out of the features")
    if reserved:
        notes.append(f"column(s) {reserved} carry names the platform reserves "
                     f"({sorted(RESERVED)}): left out of the features; rename them in the "
                     "file to use them")
    headers = _headers(files, source, sample)
    needed = [c for c in (ts, entity, labels.get("column")) if c]
    for file, header in headers.items():
        lacking = [c for c in needed if c not in header]
        if lacking:
            raise SourceError(
                f"{file}: no column(s) {lacking}, which {files[0].name} has (it has "
                f"{header[:12]}); if it is not data of this dataset, move it out or narrow "
                "the path with a glob (a declaration's source.exclude leaves it out too)")
    without = {c: [f for f, h in headers.items() if c not in h] for c in features}
    partial = {c: files_without for c, files_without in without.items() if files_without}
    if partial:
        features = [c for c in features if c not in partial]
        for column, files_without in partial.items():
            notes.append(f"column {column!r} is missing from {len(files_without)} of "
                         f"{len(files)} files (e.g. {files_without[0].name}): left out of the "
                         "features")
    if not features:
        raise SourceError(f"{files[0]}: no numeric column to use as a feature (columns "
                          f"{list(sample.columns)})")
    constant = [c for c in features if sample[c].nunique(dropna=True) == 1]
    if constant:  # kept: a sensor that starts moving is an anomaly worth seeing
        notes.append(f"column(s) {constant} hold one value in the first {len(sample):,} rows: "
                     "kept as features (a change is then flagged); --exclude them if they "
                     "never carry information")
    if len(features) == 1:
        notes.append("one feature: temporal_ae and window_knn score windows of the series "
                     "(fused works too, without its PCA part); dense_ae and pca need two or "
                     "more")
    first, last, step, gaps = _time_range(files, spec, entity)
    # written absolute: materialize may run from another directory (~ and $VARS stay as given)
    written = path if path.startswith(("~", "$")) else str(Path(path).absolute())
    src: dict[str, Any] = {"path": written}
    if dialect is not None and dialect.separator != ",":
        src["separator"] = dialect.separator
    if dialect is not None and dialect.decimal != ".":
        src["decimal"] = dialect.decimal
    entity_decl: dict[str, Any] = {"column": entity} if entity else (
        {"per_file": True} if len(files) > 1 else {})
    if len(files) > 1 and not entity:
        notes.append(f"{len(files)} files and no entity column: one entity per file")
    return Inferred(
        name=name, source=src, files=[str(f) for f in files],
        columns={c: str(t) for c, t in sample.dtypes.items()}, timestamp=ts,
        entity=entity_decl, features=features, labels=labels, first=first, last=last,
        rows_sampled=len(sample), interval_seconds=step, gaps=gaps, notes=notes,
        timestamp_spec=given)


def _headers(files: list[Path], source: SourceSpec, sample: pd.DataFrame,
             ) -> dict[Path, list[str]]:
    """Each file's column names, from its header or Parquet schema alone (the first file's from
    its ``sample``, already read)."""
    out = {files[0]: list(sample.columns)}
    for path in files[1:]:
        out[path] = (list(pq.read_schema(path).names) if is_parquet(path, source)
                     else list(_read_csv(path, sniff(path, source), 0).columns))
    return out


def _time_range(files: list[Path], spec: DatasetSpec, entity: str | None = None,
                ) -> tuple[str, str, float | None, int]:
    """First and last timestamp over every file (timestamp and entity columns only, in
    chunks, parsed as the reader parses them), the median interval and the gaps (steps over
    twice it) within each entity of each file, in time order (a file may interleave entities
    or be unsorted)."""
    column = spec.timestamp.column
    columns = [column, *([entity] if entity else [])]
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    steps: list[np.ndarray] = []
    for path in files:
        if is_parquet(path, spec.source):
            chunks: Any = [pd.read_parquet(path, columns=columns)]
            line = 1
        else:
            dialect = sniff(path, spec.source)
            chunks = pd.read_csv(path, usecols=columns, chunksize=1_000_000,
                                 **dialect.read_options())
            line = dialect.first_data_line
        fmt: str | None = None
        for at, chunk in enumerate(chunks):
            if at == 0:
                fmt = settled_format(chunk[column], spec, path, line)
            times = pd.Series(timestamps_utc(chunk[column], spec, path, line, fmt))
            line += len(chunk)
            if times.empty:
                continue
            first = times.min() if first is None else min(first, times.min())
            last = times.max() if last is None else max(last, times.max())
            keys = chunk[entity].astype(str).to_numpy() if entity else np.zeros(len(times))
            ordered = pd.DataFrame({"key": keys, "t": times.to_numpy()}).sort_values(
                ["key", "t"], kind="stable")
            step = ordered.groupby("key", sort=False)["t"].diff().dropna()
            steps.append(step.dt.total_seconds().to_numpy())
    if first is None or last is None:
        raise SourceError(f"no timestamps in column {column!r} of {files}")
    every = np.concatenate(steps) if steps else np.array([])
    every = every[every > 0]
    step = float(np.median(every)) if every.size else None
    gaps = int((every > 2 * step).sum()) if step else 0
    return str(first), str(last), step, gaps
