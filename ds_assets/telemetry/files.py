"""Read a declared dataset's files into the platform's row layout, in bounded memory.

A CSV is read in chunks and staged once as Parquet (timestamps parsed, features as float32), so
a day is a filtered Parquet read however large the file is. Errors name the file, the line (as
an editor shows it, header = line 1), the column and the value as written.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import glob
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pandas.tseries.api import guess_datetime_format

from ds_assets.telemetry.declaration import DatasetSpec, LabelSpec, SourceSpec
from ds_assets.telemetry.schema import ANOMALY_TYPE, LABEL, NORMAL_TYPE, TIMESTAMP
from ds_assets.telemetry.sources import SourceError
from ds_serving.atomic import atomic_write_with

CHUNK_ROWS = 500_000
_SEPARATORS = (",", ";", "\t", "|")
_STAGE_VERSION = "2"  # bump when the staged layout or its parsing changes (2: ids as text)
_DECIMAL_COMMA = re.compile(r"(?:^|[;\t|])\s*-?\d+,\d+\s*(?:$|[;\t|])")


# --------------------------------------------------------------------------------------------
# which files


def expand(path: str) -> str:
    """``$VAR``/``${VAR}`` from the environment; an unset variable is an error naming it."""
    expanded = os.path.expandvars(os.path.expanduser(path))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", expanded)
    if unset:
        raise SourceError(f"source path {path!r} uses environment variable(s) {unset}, which "
                          "are not set; export them or write the path out")
    return expanded


def declared_files(source: SourceSpec) -> list[Path]:
    """The files a source path names (a file, a glob, or every CSV/Parquet file under a
    directory, hidden ones left out as a glob leaves them: ``.ipynb_checkpoints/``, macOS's
    ``._x.csv``), minus ``exclude``, sorted by path so reads are reproducible."""
    text = expand(source.path)
    base = Path(text)
    if any(ch in text for ch in "*?["):
        root = Path(glob.escape(text).split("*")[0]).parent if "*" in text else base.parent
        found = [Path(p) for p in glob.glob(text, recursive=True)]
    elif base.is_dir():
        root = base
        found = [p for p in base.rglob("*") if p.suffix.lower() in (".csv", ".parquet")
                 and not any(part.startswith(".") for part in p.relative_to(base).parts)]
    else:
        root = base.parent
        found = [base] if base.is_file() else []
    files = sorted(p for p in found if p.is_file() and not _excluded(p, root, source.exclude))
    if not files:
        excluded = f" (after excluding {source.exclude})" if source.exclude else ""
        raise SourceError(f"source path {source.path!r} ({text}) matches no CSV or Parquet "
                          f"file{excluded}; check the path")
    return files


def _excluded(path: Path, root: Path, patterns: Sequence[str]) -> bool:
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.as_posix()
    return any(fnmatch.fnmatch(rel, p) for p in patterns)


def entity_of(path: Path, files: Sequence[Path]) -> str:
    """A file's entity name when entities are per file: its path below the files' common
    directory, without the suffix (``valve1/3``)."""
    common = Path(os.path.commonpath([str(f.parent) for f in files])) if files else path.parent
    return path.relative_to(common).with_suffix("").as_posix()


# --------------------------------------------------------------------------------------------
# how a CSV is written


def is_parquet(path: Path, source: SourceSpec) -> bool:
    return source.format == "parquet" or (source.format == "auto"
                                          and path.suffix.lower() == ".parquet")


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV is written: separator, decimal mark, and the lines before its header (one for
    the ``sep=;`` line spreadsheets write or read to learn the separator)."""

    separator: str
    decimal: str
    skip: int = 0

    @property
    def first_data_line(self) -> int:
        """The first data row's line as an editor numbers it."""
        return self.skip + 2

    def read_options(self) -> dict[str, Any]:
        return {"sep": self.separator, "decimal": self.decimal, "skiprows": self.skip,
                "encoding": "utf-8-sig"}


# a spreadsheet's separator directive as its own first line: sep=; (sometimes quoted)
_SEP_DIRECTIVE = re.compile(r'^"?sep=([^"\r\n])"?$')


def sniff(path: Path, source: SourceSpec) -> CsvDialect:
    """The separator and decimal mark: as declared, else from a ``sep=`` first line, else
    detected from the first lines."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        lines = [line for _, line in zip(range(51), handle, strict=False)]
    directive = _SEP_DIRECTIVE.match(lines[0].rstrip("\r\n")) if lines else None
    if directive:
        lines = lines[1:]
    if not lines or not lines[0].strip():
        raise SourceError(f"{path}: file is empty; expected a header row and data rows")
    separator = source.separator or (directive.group(1) if directive else None)
    if separator is None:
        counts = {s: [line.count(s) for line in lines if line.strip()] for s in _SEPARATORS}
        steady = [s for s, c in counts.items() if c[0] > 0 and len(set(c)) == 1]
        candidates = steady or [s for s, c in counts.items() if c[0] > 0]
        separator = max(candidates, key=lambda s: counts[s][0]) if candidates else ","
    elif separator not in lines[0]:
        others = [s for s in _SEPARATORS if s != separator and s in lines[0]]
        hint = f"; its header is separated by {others[0]!r}" if others else ""
        where = "declared separator" if source.separator else "separator of its sep= line"
        raise SourceError(f"{path}: {where} {separator!r} does not occur in the "
                          f"header line {lines[0].strip()[:120]!r}{hint}; fix source.separator "
                          "or drop it to detect")
    decimal = source.decimal
    if decimal is None:
        data = lines[1:]
        decimal = "," if separator != "," and any(_DECIMAL_COMMA.search(
            line.strip().replace(separator, ";")) for line in data) else "."
    return CsvDialect(separator, decimal, 1 if directive else 0)


# --------------------------------------------------------------------------------------------
# rows of one file in the platform's layout


@dataclass(frozen=True)
class FileLayout:
    """What one file contributes: its columns resolved against the declaration."""

    path: Path
    features: list[str]
    label_column: str | None
    entity: str | None  # a fixed entity name, or None when the file has an entity column
    # the format every chunk parses timestamps with (``settled_format``); None: pandas' own
    timestamp_format: str | None = None


def resolve_layout(path: Path, header: Sequence[str], numeric: Sequence[str],
                   spec: DatasetSpec, entity: str | None) -> FileLayout:
    """Check the declared columns exist and pick the features (explicit, or every numeric
    column not used otherwise, minus ``exclude``)."""
    needed = [spec.timestamp.column]
    if spec.entity.column:
        needed.append(spec.entity.column)
    if spec.labels.kind == "column" and spec.labels.column:
        needed.append(spec.labels.column)
    if spec.features.columns is not None:
        needed += spec.features.columns
    missing = [c for c in needed if c not in header]
    if missing:
        raise SourceError(f"{path}: missing column(s) {missing} named in the declaration; the "
                          f"file has {list(header)}")
    unknown = sorted(set(spec.features.exclude) - set(header))
    if unknown:
        raise SourceError(f"{path}: features.exclude names {unknown}, which the file lacks "
                          f"(it has {list(header)})")
    if spec.features.columns is not None:
        features = list(spec.features.columns)
    else:
        used = {spec.timestamp.column, spec.entity.column, spec.labels.column,
                *spec.features.exclude}
        features = [c for c in numeric if c not in used]
        if not features:
            raise SourceError(f"{path}: no numeric column left as a feature (columns "
                              f"{list(header)}, excluded {sorted(c for c in used if c)}); list "
                              "features.columns")
    label = spec.labels.column if spec.labels.kind == "column" else None
    return FileLayout(path=path, features=features, label_column=label, entity=entity)


def to_rows(raw: pd.DataFrame, layout: FileLayout, spec: DatasetSpec, first_line: int,
            ) -> pd.DataFrame:
    """A chunk of a file (its line ``first_line`` is ``raw``'s first row) in the row layout:
    timestamp (UTC), host_id, region, project_id, features (float32), label, anomaly_type."""
    path = layout.path
    out = pd.DataFrame(index=pd.RangeIndex(len(raw)))
    out[TIMESTAMP] = timestamps_utc(raw[spec.timestamp.column], spec, path, first_line,
                                    layout.timestamp_format)
    if layout.entity is not None:
        out["host_id"] = layout.entity
    else:
        ids = raw[str(spec.entity.column)]
        missing = ids.isna() | (ids.astype(str).str.strip() == "")
        if missing.any():
            row = int(np.flatnonzero(missing.to_numpy())[0])
            raise SourceError(f"{path}: line {first_line + row}: entity column "
                              f"{spec.entity.column!r} is empty")
        out["host_id"] = ids.astype(str).to_numpy()
    out["region"] = "unknown"
    out["project_id"] = "unknown"
    for name in layout.features:
        out[name] = _numbers(raw[name], name, path, first_line)
    if layout.label_column is not None:
        out[LABEL] = _labels(raw[layout.label_column], spec.labels, path, first_line)
        out[ANOMALY_TYPE] = np.where(out[LABEL].to_numpy() == 1, "labeled", NORMAL_TYPE)
    return out


# ends in a UTC offset (or Z) after a time of day: 2024-10-27 02:30+01:00, ...T02:30:00Z
_OFFSET = r"\d:\d{2}(?::\d{2}(?:[.,]\d*)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def settled_format(values: pd.Series, spec: DatasetSpec, path: Path, first_line: int,
                   ) -> str | None:
    """The format every chunk of a file parses its timestamps with, decided once from the
    first chunk (whose first row is on ``first_line``): the declared one, or what pandas
    guesses from the first value. (Guessed afresh per chunk, a chunk starting at 01/04/2024 read
    1 April as 4 January after chunks that started at 13/03/2024.) When day-first and
    month-first both fit every value of the first chunk the file cannot tell them apart, and it
    is refused. Numbers in a declared unit are checked once for a unit finer than written."""
    ts = spec.timestamp
    if ts.unit:
        _refuse_finer_unit(values, spec, path, first_line)
    if ts.unit or ts.format:
        return ts.format
    if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return None
    written = values.dropna().astype(str).str.strip()
    written = written[written != ""]
    if written.empty:
        return None
    first = str(written.iloc[0])
    with warnings.catch_warnings():  # pandas notes guesses against the day-first setting
        warnings.simplefilter("ignore", UserWarning)
        month_first = guess_datetime_format(first)
        day_first = guess_datetime_format(first, dayfirst=True)
    if month_first is None or month_first.startswith("%Y"):  # year first: no day/month doubt
        return month_first
    if day_first in (None, month_first):
        return month_first
    fits = [f for f in (day_first, month_first)
            if pd.to_datetime(written, format=f, errors="coerce").notna().all()]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        return month_first  # the read names the first value that fits neither
    raise SourceError(
        f"{path}: timestamps such as {first!r} read alike day-first and month-first in the first "
        f"{len(written):,} rows; declare timestamp.format, {day_first!r} or {month_first!r} "
        "(ds-dataset scaffold: --timestamp-format)")


def timestamps_utc(values: pd.Series, spec: DatasetSpec, path: Path, first_line: int,
                   fmt: str | None = None) -> np.ndarray:
    """UTC instants: values written with an offset keep it, values without one are local
    time in ``timestamp.timezone``, in any mix."""
    column = spec.timestamp.column
    if spec.timestamp.unit:
        return _numeric_timestamps(values, spec, path, first_line)
    fmt = fmt or spec.timestamp.format
    if pd.api.types.is_numeric_dtype(values) and len(values):
        raise SourceError(f"{path}: line {first_line}: column {column!r} holds numbers "
                          f"({values.iloc[0]}), not written dates; declare timestamp.unit "
                          "(s, ms, us or ns after timestamp.origin, 1970-01-01 by default)")
    written = values.astype(str)
    with warnings.catch_warnings():  # pandas' notice that mixed offsets parse as objects
        warnings.simplefilter("ignore", FutureWarning)
        try:
            parsed = pd.to_datetime(written, format=fmt, errors="coerce")
        except (ValueError, TypeError):
            parsed = None
    if parsed is None or not pd.api.types.is_datetime64_any_dtype(parsed):
        # offsets that differ between rows (a daylight-saving change written with them)
        parsed = pd.to_datetime(written, format=fmt, errors="coerce", utc=True)
    failed = parsed.isna().to_numpy() & values.notna().to_numpy()
    local = parsed.dt.tz is None
    if local:
        parsed = parsed.dt.tz_localize(spec.timestamp.timezone, ambiguous="NaT",
                                       nonexistent="NaT")
        lost = parsed.isna().to_numpy() & ~failed & values.notna().to_numpy()
    utc = parsed.dt.tz_convert("UTC")
    if failed.any():  # written in the other form (with or without an offset) than the first
        utc = utc.copy()
        utc[failed] = _other_form(written[failed], not local, spec.timestamp.timezone)
    bad = utc.isna().to_numpy() & (failed | values.isna().to_numpy())
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        form = fmt or "ISO 8601 (or declare timestamp.format)"
        raise SourceError(f"{path}: line {first_line + row}: column {column!r} holds "
                          f"{values.iloc[row]!r}, not a timestamp in {form}")
    if local and lost.any():
        row = int(np.flatnonzero(lost)[0])
        raise SourceError(f"{path}: line {first_line + row}: {values.iloc[row]!r} is an "
                          f"ambiguous or skipped local time in {spec.timestamp.timezone} "
                          "(a daylight-saving change); write the offset or use UTC")
    return utc.to_numpy()


def _other_form(written: pd.Series, naive: bool, timezone: str) -> pd.Series:
    """UTC instants of values the file's format did not parse, each as written: with an
    offset it keeps it, without one it is local time; NaT where it is no timestamp (or a
    skipped local time). ``naive``: the file's own values have an offset, so values without
    one are the other form. The other form parses in any layout; the file's own form only as
    ISO 8601 (another number of decimals, as ``isoformat()`` writes), never as a guess that
    could read a later 13/03 day-first after 01/04 was read month-first."""
    offset = written.str.contains(_OFFSET, regex=True).to_numpy()
    out = pd.Series(pd.NaT, index=written.index, dtype="datetime64[ns, UTC]")
    plain = pd.to_datetime(written[~offset], format="mixed" if naive else "ISO8601",
                           errors="coerce")
    local = plain.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    out[~offset] = local.dt.tz_convert("UTC")
    out[offset] = pd.to_datetime(written[offset], format="ISO8601" if naive else "mixed",
                                 errors="coerce", utc=True)
    return out


def _numeric_timestamps(values: pd.Series, spec: DatasetSpec, path: Path, first_line: int,
                        ) -> np.ndarray:
    """Numbers of ``unit`` after ``origin``: series indexed by sample number or epoch time."""
    ts = spec.timestamp
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy() | ~np.isfinite(numbers.to_numpy(np.float64, na_value=0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise SourceError(f"{path}: line {first_line + row}: column {ts.column!r} holds "
                          f"{values.iloc[row]!r}, not a number of {ts.unit} after {ts.origin} "
                          "(timestamp.unit is declared)")
    origin = _origin(spec)
    try:
        parsed = origin + pd.to_timedelta(numbers.to_numpy(), unit=ts.unit)
    except (OverflowError, pd.errors.OutOfBoundsTimedelta, pd.errors.OutOfBoundsDatetime):
        unit = ts.unit or "ns"
        outside = np.abs(numbers.to_numpy(np.float64) * _UNIT_NS[unit] + origin.value) >= 2**63
        row = int(np.flatnonzero(outside)[0]) if outside.any() else 0
        raise SourceError(f"{path}: line {first_line + row}: column {ts.column!r} holds "
                          f"{values.iloc[row]}, which as {unit} after {ts.origin} falls "
                          "outside the years 1677-2262: is timestamp.unit right (epoch "
                          "milliseconds are ms, not s)?") from None
    return parsed.tz_convert("UTC").to_numpy()


_UNIT_NS = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}


def _origin(spec: DatasetSpec) -> pd.Timestamp:
    """The instant numeric timestamps count from (``timestamp.origin``, local time in
    ``timestamp.timezone`` unless it carries an offset)."""
    origin = pd.Timestamp(spec.timestamp.origin)
    return origin.tz_localize(spec.timestamp.timezone) if origin.tz is None else origin
# epoch numbers read in a finer unit than written land in the first weeks of 1970, silently;
# read in the unit they were written in they land in this span
_PLAUSIBLE_EPOCH = (pd.Timestamp("1990-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))


def _refuse_finer_unit(values: pd.Series, spec: DatasetSpec, path: Path, first_line: int,
                       ) -> None:
    """Epoch seconds declared as ms (or ms as us, ...) read as January 1970 without any error.
    Counted from the epoch, a file whose first value lands in 1970 in the declared unit but in
    1990-2100 in a coarser one is such a mistake (decided on the file's first value only: a
    sample index counted from 1970 grows into later years); a sample index counted from
    another origin is never questioned."""
    ts = spec.timestamp
    unit = ts.unit or "ns"
    if not len(values) or pd.Timestamp(ts.origin).date() != dt.date(1970, 1, 1):
        return
    value = float(pd.to_numeric(values.iloc[:1], errors="coerce").iloc[0])
    try:
        first = (_origin(spec) + pd.Timedelta(value, unit=unit)).tz_convert("UTC")
    except (ValueError, OverflowError, pd.errors.OutOfBoundsTimedelta):
        return  # not a number, or outside 1677-2262: the read names its line
    if first.year != 1970:
        return
    for coarser, ns in _UNIT_NS.items():
        if ns <= _UNIT_NS[unit]:
            break
        if not abs(value * ns) < 2**63:
            continue
        as_coarser = pd.Timestamp(value * ns, unit="ns", tz="UTC")
        if _PLAUSIBLE_EPOCH[0] <= as_coarser < _PLAUSIBLE_EPOCH[1]:
            raise SourceError(
                f"{path}: line {first_line}: column {ts.column!r} holds {values.iloc[0]}, which "
                f"as {unit} after {ts.origin} is {first:%Y-%m-%d %H:%M:%S} UTC; as {coarser} "
                f"it is {as_coarser:%Y-%m-%d %H:%M:%S}: declare timestamp.unit: {coarser} "
                f"(ds-dataset scaffold: --timestamp-unit {coarser}); a sample index counts "
                "from a timestamp.origin other than 1970-01-01")


def _numbers(values: pd.Series, name: str, path: Path, first_line: int) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = (numbers.isna() & values.notna()).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise SourceError(f"{path}: line {first_line + row}: column {name!r} holds "
                          f"{values.iloc[row]!r}, not a number; fix or drop that value "
                          "(an empty cell is a missing value)")
    out = numbers.to_numpy(np.float32)
    infinite = np.isinf(out)  # inf in the file, or beyond float32's range (about 3.4e38)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise SourceError(f"{path}: line {first_line + row}: column {name!r} holds "
                          f"{_label_text(values.iloc[row])!r}, which is not a finite float32 "
                          "number (beyond +-3.4e38); fix or drop that value, or leave the cell "
                          "empty as a missing value")
    return out


def _labels(values: pd.Series, labels: LabelSpec, path: Path, first_line: int) -> np.ndarray:
    missing = values.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise SourceError(f"{path}: line {first_line + row}: label column {labels.column!r} "
                          "is empty; every row needs a label (0/normal or a positive value)")
    numeric = [p for p in labels.positive if not isinstance(p, str)]
    if numeric and len(numeric) == len(labels.positive):
        as_number = pd.to_numeric(values, errors="coerce")
        if as_number.notna().all():
            # a number that is neither normal (0) nor declared positive is a label scheme the
            # declaration does not know (2 = another fault, -1 = unknown): never normal silently
            other = ~as_number.isin([0, *numeric]).to_numpy()
            if other.any():
                row = int(np.flatnonzero(other)[0])
                raise SourceError(
                    f"{path}: line {first_line + row}: label column {labels.column!r} holds "
                    f"{str(values.iloc[row])!r}, neither 0 (normal) nor a positive value ("
                    f"{', '.join(_label_text(p) for p in labels.positive)}); add it to "
                    "labels.positive, fix the row, or write labels.positive as text (e.g. "
                    "['-1']) to make every other value normal")
            return as_number.isin(numeric).to_numpy(np.int64)
    return values.astype(str).str.strip().isin([_label_text(p) for p in labels.positive]
                                               ).to_numpy(np.int64)


def _label_text(value: str | float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------------------------
# staging: a file, once, as Parquet in the row layout


def _chunks(layout_path: Path, spec: DatasetSpec, entity: str | None
            ) -> Iterator[tuple[FileLayout, pd.DataFrame, int]]:
    """Raw chunks of a file with its resolved layout and each chunk's first line number."""
    if is_parquet(layout_path, spec.source):
        parquet = pq.ParquetFile(layout_path)
        schema = parquet.schema_arrow
        header = list(schema.names)
        numeric = [f.name for f in schema if pa.types.is_integer(f.type)
                   or pa.types.is_floating(f.type)]
        fixed = resolve_layout(layout_path, header, numeric, spec, entity)
        line = 1  # a Parquet file has no header line: rows count from 1
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS):
            frame = batch.to_pandas()
            if line == 1:
                fixed = replace(fixed, timestamp_format=settled_format(
                    frame[spec.timestamp.column], spec, layout_path, line))
            yield fixed, frame, line
            line += len(frame)
        return
    dialect = sniff(layout_path, spec.source)
    separator = dialect.separator
    try:
        reader = pd.read_csv(layout_path, chunksize=CHUNK_ROWS, keep_default_na=False,
                             na_values=[""], dtype=_text_columns(layout_path, dialect, spec),
                             **dialect.read_options())
        layout: FileLayout | None = None
        line = dialect.first_data_line
        for frame in reader:
            if layout is None:
                frame.columns = [str(c).strip() for c in frame.columns]
                if frame.empty:
                    break
                if len(frame.columns) == 1 and any(s in frame.columns[0] for s in _SEPARATORS):
                    raise SourceError(f"{layout_path}: one column {frame.columns[0]!r} after "
                                      f"splitting on {separator!r}; declare source.separator")
                numeric = [c for c in frame.columns if mostly_numbers(frame[c])]
                layout = resolve_layout(layout_path, list(frame.columns), numeric, spec,
                                        entity)
                layout = replace(layout, timestamp_format=settled_format(
                    frame[spec.timestamp.column], spec, layout_path, line))
            else:
                frame.columns = [str(c).strip() for c in frame.columns]
            yield layout, frame, line
            line += len(frame)
        if layout is None:
            raise SourceError(f"{layout_path}: a header but no data rows")
    except pd.errors.EmptyDataError:
        raise SourceError(f"{layout_path}: file is empty; expected a header row and data "
                          "rows") from None
    except pd.errors.ParserError as exc:
        raise SourceError(f"{layout_path}: not a valid CSV with separator {separator!r}: "
                          f"{exc}") from None
    except UnicodeDecodeError as exc:
        raise not_utf8(layout_path, exc) from None


def not_utf8(path: Path, exc: UnicodeDecodeError) -> SourceError:
    """The error for a CSV that is not UTF-8 (a spreadsheet's Latin-1 export, typically)."""
    return SourceError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#x} at offset "
                       f"{exc.start}); save the file as UTF-8, e.g. CSV UTF-8 in a "
                       "spreadsheet's Save As")


def _text_columns(path: Path, dialect: CsvDialect, spec: DatasetSpec,
                  ) -> dict[str, type] | None:
    """The entity column read as text: ids such as 007 stay 007 (as in Parquet and in a label
    windows file), and a chunk of all-digit ids names the same entities as any other chunk."""
    if spec.entity.column is None:
        return None
    try:
        header = pd.read_csv(path, nrows=0, **dialect.read_options()).columns
    except (pd.errors.EmptyDataError, UnicodeDecodeError, pd.errors.ParserError):
        return None  # the read proper reports it
    return {c: str for c in header if str(c).strip() == spec.entity.column}


def mostly_numbers(values: pd.Series) -> bool:
    """A column of numbers, at least half of them parseable (which the read then names rather
    than silently dropping the column from the features)."""
    if pd.api.types.is_numeric_dtype(values):
        return True
    present = values.dropna()
    if present.empty:
        return False
    return bool(pd.to_numeric(present, errors="coerce").notna().mean() >= 0.5)


def stage(path: Path, spec: DatasetSpec, staging_dir: Path, entity: str | None) -> Path:
    """The file in the row layout as Parquet under ``staging_dir``, written once per content
    (size, modification time) and declaration; memory stays at one chunk. Staging it anew
    (the file or the declaration changed) removes its earlier copies: each was the whole
    file again."""
    stat = path.stat()
    source = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    key = hashlib.sha256(json.dumps(
        [_STAGE_VERSION, str(path.resolve()), stat.st_size, stat.st_mtime_ns, entity,
         spec.model_dump(mode="json", exclude={"labels": {"windows"}})]).encode()).hexdigest()
    target = staging_dir / f"{path.stem}.{source}.{key[:16]}.parquet"
    if target.is_file():
        return target

    def write(tmp: Path) -> None:
        writer: pq.ParquetWriter | None = None
        features: list[str] | None = None
        try:
            for layout, raw, line in _chunks(path, spec, entity):
                rows = to_rows(raw, layout, spec, line)
                rows["source_line"] = np.arange(line, line + len(rows), dtype=np.int64)
                table = pa.Table.from_pandas(rows, preserve_index=False)
                if writer is None:
                    features = layout.features
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table.cast(writer.schema))
        finally:
            if writer is not None:
                writer.close()
        if features is None:
            raise SourceError(f"{path}: no data rows")
    staging_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_with(target, write)
    for earlier in staging_dir.glob(f"{glob.escape(path.stem)}.{source}.*.parquet"):
        if earlier != target:  # the same source file staged before it changed
            earlier.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------------------------------------
# a day, or everything


@dataclass
class ReadReport:
    """What reading found beyond the rows: facts for metadata, never silently fixed."""

    files: list[str] = field(default_factory=list)
    rows_out_of_order: int = 0
    duplicates_dropped: int = 0
    gaps: dict[str, Any] = field(default_factory=dict)
    windows_applied: int = 0

    def as_metadata(self) -> dict[str, Any]:
        return {"files": self.files, "rows_out_of_order_sorted": self.rows_out_of_order,
                "duplicates_dropped": self.duplicates_dropped, "gaps": self.gaps,
                "label_windows_applied": self.windows_applied}


def read_rows(spec: DatasetSpec, staging_dir: Path, dataset: str, day: str | None = None,
              ) -> tuple[pd.DataFrame, ReadReport]:
    """Every declared file's rows (of one UTC ``day`` when given), labeled, sorted per entity
    and time, checked for duplicates; the report says what was out of order and where the
    gaps are."""
    files = declared_files(spec.source)
    report = ReadReport(files=[str(f) for f in files])
    parts = []
    for path in files:
        entity = (entity_of(path, files) if spec.entity.per_file
                  else None if spec.entity.column else dataset)
        staged = stage(path, spec, staging_dir, entity)
        part = _read_staged(staged, day)
        if not part.empty:
            part["source_file"] = str(path)
            parts.append(part)
    if not parts:
        where = f" inside partition {day} (UTC)" if day else ""
        raise SourceError(f"no rows{where} in {[str(f) for f in files]}")
    features = [c for c in parts[0].columns if c not in _NON_FEATURES]
    for part in parts[1:]:
        other = [c for c in part.columns if c not in _NON_FEATURES]
        if other != features:
            raise SourceError(f"{part['source_file'].iloc[0]} has features {other}, "
                              f"{parts[0]['source_file'].iloc[0]} has {features}; list "
                              "features.columns so every file gives the same ones")
    rows = pd.concat(parts, ignore_index=True)
    if spec.labels.kind == "windows":
        report.windows_applied = apply_windows(rows, spec, files)
    report.rows_out_of_order = _out_of_order(rows)
    rows = rows.sort_values(["host_id", TIMESTAMP, "source_line"], kind="stable",
                            ignore_index=True)
    rows, report.duplicates_dropped = _duplicates(rows, spec)
    report.gaps = gap_report(rows)
    return rows.drop(columns=["source_line", "source_file"]), report


_NON_FEATURES = frozenset({TIMESTAMP, "host_id", "region", "project_id", LABEL, ANOMALY_TYPE,
                           "source_line", "source_file"})


def _read_staged(staged: Path, day: str | None) -> pd.DataFrame:
    dataset = pads.dataset(staged, format="parquet")
    if day is None:
        return dataset.to_table().to_pandas()
    start = pd.Timestamp(day, tz="UTC")
    field_ = pads.field(TIMESTAMP)
    table = dataset.to_table(filter=(field_ >= pa.scalar(start, type=pa.timestamp("ns", "UTC")))
                             & (field_ < pa.scalar(start + pd.Timedelta(days=1),
                                                   type=pa.timestamp("ns", "UTC"))))
    return table.to_pandas()


def _out_of_order(rows: pd.DataFrame) -> int:
    """Rows whose timestamp goes back within their entity and file, in file order."""
    ordered = rows.sort_values(["source_file", "host_id", "source_line"], kind="stable")
    back = ordered.groupby(["source_file", "host_id"], sort=False)[TIMESTAMP].diff()
    return int((back < pd.Timedelta(0)).sum())


def _duplicates(rows: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, int]:
    repeated = rows.duplicated(["host_id", TIMESTAMP], keep="last")
    if not repeated.any():
        return rows, 0
    if spec.duplicates == "keep_last":
        return rows.loc[~repeated].reset_index(drop=True), int(repeated.sum())
    first = rows.loc[repeated].iloc[0]
    twin = rows.loc[(rows["host_id"] == first["host_id"]) & (rows[TIMESTAMP] == first[TIMESTAMP])]
    lines = [f"{Path(f).name} line {n}" for f, n in zip(twin["source_file"], twin["source_line"],
                                                        strict=True)]
    shown = ", ".join(lines[:5]) + (f" and {len(lines) - 5} more" if len(lines) > 5 else "")
    hint = "fix the files or declare duplicates: keep_last"
    if len(lines) > 2:  # many rows at one instant: a date-only column, not a repeated row
        hint = (f"{len(lines)} rows at one instant look like a timestamp column without the "
                "time of day: declare the column that holds it (keep_last would keep one row "
                "of them)")
    raise SourceError(f"{int(repeated.sum())} row(s) repeat an entity's timestamp, e.g. entity "
                      f"{first['host_id']!r} at {first[TIMESTAMP]} on {shown}; {hint}")


def gap_report(rows: pd.DataFrame) -> dict[str, Any]:
    """Per dataset: the typical interval, how many steps differ from it (irregular) and the
    gaps longer than twice it, with the largest; nothing is filled."""
    step = rows.groupby("host_id", sort=False)[TIMESTAMP].diff().dropna()
    if step.empty:
        return {"interval_seconds": None, "irregular_steps": 0, "gaps": 0}
    seconds = step.dt.total_seconds().to_numpy()
    median = float(np.median(seconds))
    gaps = seconds > 2 * median
    report: dict[str, Any] = {
        "interval_seconds": median,
        "irregular_steps": int((np.abs(seconds - median) > 0.01 * median).sum()),
        "gaps": int(gaps.sum()),
    }
    if gaps.any():
        at = int(np.argmax(seconds))
        end = rows.loc[step.index[at]]
        report["largest_gap"] = {"entity": str(end["host_id"]), "seconds": float(seconds[at]),
                                 "ends_at": str(end[TIMESTAMP])}
    return report


def read_windows(path: Path) -> pd.DataFrame:
    """A labels windows file: ``start``, ``end`` (inclusive), optional ``entity`` or ``file``."""
    if not path.is_file():
        raise SourceError(f"labels.windows file {path} does not exist")
    dialect = sniff(path, SourceSpec(path=str(path)))
    windows = pd.read_csv(path, dtype=str, keep_default_na=False, **dialect.read_options())
    windows.columns = [str(c).strip() for c in windows.columns]
    missing = [c for c in ("start", "end") if c not in windows.columns]
    if missing:
        raise SourceError(f"{path}: missing column(s) {missing}; a windows file has start,end "
                          f"and optionally entity or file (found {list(windows.columns)})")
    for column in ("start", "end"):
        parsed = pd.to_datetime(windows[column], errors="coerce", utc=True)
        if parsed.isna().any():
            row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
            raise SourceError(f"{path}: line {dialect.first_data_line + row}: column "
                              f"{column!r} holds {windows[column].iloc[row]!r}, not a timestamp")
        windows[column] = parsed
    backwards = windows["end"] < windows["start"]
    if backwards.any():
        row = int(np.flatnonzero(backwards.to_numpy())[0])
        raise SourceError(f"{path}: line {dialect.first_data_line + row}: end is before start")
    return windows


def apply_windows(rows: pd.DataFrame, spec: DatasetSpec, files: Sequence[Path]) -> int:
    """Label every row inside a window (of its entity or file when the window names one);
    returns how many windows matched at least one row."""
    path = Path(expand(str(spec.labels.windows)))
    windows = read_windows(path)
    label = np.zeros(len(rows), dtype=np.int64)
    times = rows[TIMESTAMP]
    matched = 0
    names = {Path(f).name: str(f) for f in files} | {Path(f).stem: str(f) for f in files}
    for window in windows.itertuples(index=False):
        inside = (times >= window.start) & (times <= window.end)
        who = getattr(window, "entity", "") or ""
        if who:
            inside &= rows["host_id"] == who
        source = getattr(window, "file", "") or ""
        if source:
            inside &= rows["source_file"] == names.get(source, source)
        if inside.any():
            matched += 1
        label |= inside.to_numpy(np.int64)
    rows[LABEL] = label
    rows[ANOMALY_TYPE] = np.where(label == 1, "labeled", NORMAL_TYPE)
    return matched



def days_with_rows(spec: DatasetSpec, staging_dir: Path, dataset: str) -> list[str]:
    """The UTC days (YYYY-MM-DD) that hold at least one row, staging every file once."""
    files = declared_files(spec.source)
    days: set[str] = set()
    for path in files:
        entity = (entity_of(path, files) if spec.entity.per_file
                  else None if spec.entity.column else dataset)
        staged = stage(path, spec, staging_dir, entity)
        parquet = pq.ParquetFile(staged)
        for group in range(parquet.num_row_groups):  # a row group at a time: bounded memory
            times = parquet.read_row_group(group, columns=[TIMESTAMP]).column(TIMESTAMP)
            nanos = times.cast(pa.int64()).to_numpy()
            days.update(str(d) for d in np.unique(nanos.astype("datetime64[ns]")
                                                  .astype("datetime64[D]")))
    return sorted(days)
