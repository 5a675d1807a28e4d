"""File sources: labeled telemetry CSV/Parquet turned into the wide row layout of one day.

The known labeled format is ``f1..f8,label`` (label 0 = normal). Rows without timestamps are
laid out from the partition's midnight at a fixed interval; rows with a ``timestamp`` column
are kept when they fall inside the partition's day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ds_assets.telemetry.schema import ANOMALY_TYPE, LABEL, NORMAL_TYPE, TIMESTAMP

LABELED_CSV_FEATURES: tuple[str, ...] = tuple(f"f{i}" for i in range(1, 9))


class SourceError(ValueError):
    """A source file is missing or does not have the expected columns/values."""


def resolve_path(pattern: str, day: str) -> Path:
    """Expand ``{date}`` in a path pattern with the partition key (YYYY-MM-DD)."""
    try:
        return Path(pattern.format(date=day))
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise SourceError(
            f"source path {pattern!r}: only the placeholder {{date}} is expanded (the "
            f"partition's YYYY-MM-DD); it cannot be formatted ({type(exc).__name__}: {exc}); "
            "write a literal brace as {{ or }}"
        ) from None


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise SourceError(f"source file {path} does not exist")
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    try:
        # only an empty cell is missing: tokens such as 'n/a', 'NA' or 'null' stay as written,
        # so the numeric check names them instead of reporting a NaN the user never wrote
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as exc:
        raise SourceError(f"{path}: file is empty; expected a header row and data rows") from exc
    except pd.errors.ParserError as exc:
        raise SourceError(f"{path}: not a valid CSV: {exc}") from exc


def read_labeled_file(
    path: Path,
    day: str,
    *,
    features: Sequence[str] = LABELED_CSV_FEATURES,
    interval_seconds: int = 60,
    host_id: str | None = None,
    labeled: bool = True,
) -> pd.DataFrame:
    """Read one file into the wide layout for partition ``day``. ``labeled=False`` (production
    telemetry) makes the ``label`` column optional: without it the day has no ``label`` or
    ``anomaly_type`` column, can be scored, drift-reported and alerted, not trained on."""
    raw = _read_table(path)
    expected = [*features, LABEL] if labeled else list(features)
    missing = [c for c in expected if c not in raw.columns]
    if missing:
        raise SourceError(
            f"{path}: missing column(s) {missing}; expected columns {expected} "
            f"(found {list(raw.columns)})"
        )
    if raw.empty:
        raise SourceError(f"{path}: no data rows for partition {day}")
    out = pd.DataFrame(index=pd.RangeIndex(len(raw)))
    start = pd.Timestamp(dt.date.fromisoformat(day), tz="UTC")
    if TIMESTAMP in raw.columns:
        ts = pd.to_datetime(raw[TIMESTAMP], utc=True, errors="coerce")
        if ts.isna().any():
            row = int(np.flatnonzero(ts.isna().to_numpy())[0])
            raise SourceError(f"{path}: row {row} has an unparseable timestamp")
        out[TIMESTAMP] = ts.array  # positional (``out`` has its own index), kept tz-aware
    else:
        if len(raw) * interval_seconds > 86_400:
            raise SourceError(
                f"{path}: {len(raw)} rows at {interval_seconds}s do not fit in one day; add a "
                "'timestamp' column or split the file per day"
            )
        out[TIMESTAMP] = start + pd.to_timedelta(np.arange(len(raw)) * interval_seconds, unit="s")
    out[TIMESTAMP] = pd.to_datetime(out[TIMESTAMP], utc=True)
    out["host_id"] = host_id or path.stem
    # ids as text, a missing one kept missing (astype(str) made it the host "nan", which no
    # check refuses): the blocking not-null check names it
    if "host_id" in raw.columns:
        out["host_id"] = _text(raw["host_id"])
    out["region"] = _text(raw["region"]) if "region" in raw.columns else "unknown"
    out["project_id"] = _text(raw["project_id"]) if "project_id" in raw.columns else "unknown"
    for name in features:
        values = pd.to_numeric(raw[name], errors="coerce")
        bad = values.isna() & raw[name].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise SourceError(
                f"{path}: column {name!r} must be numeric, row {row} (line {row + 2} of a CSV "
                f"with a header) holds {raw[name].iloc[row]!r}; fix or drop that value"
            )
        out[name] = values.astype(np.float32).to_numpy()
        infinite = np.flatnonzero(np.isinf(out[name]))  # inf, or beyond float32's +-3.4e38
        if infinite.size:
            row = int(infinite[0])
            raise SourceError(
                f"{path}: column {name!r} must be finite, row {row} (line {row + 2} of a CSV "
                f"with a header) holds '{float(raw[name].iloc[row]):g}', beyond float32's "
                "+-3.4e38; fix or drop that value"
            )
    if LABEL not in raw.columns:  # an unlabeled source (labeled files were checked above)
        return _in_day(out, start, path, day)
    labels = pd.to_numeric(raw[LABEL], errors="coerce")
    if labels.isna().any():
        row = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise SourceError(f"{path}: column 'label' must be 0 or 1, row {row} holds a non-number")
    fractional = labels % 1 != 0
    if fractional.any():  # an integer cast would quietly turn 0.5 into 0 and 1.7 into 1
        row = int(np.flatnonzero(fractional.to_numpy())[0])
        raise SourceError(
            f"{path}: column 'label' must be 0 or 1, row {row} holds {labels.iloc[row]:g}"
        )
    # Other integers (2, -1) are kept as-is so the blocking label-domain check reports them.
    out[LABEL] = labels.astype(np.int64).to_numpy()
    if ANOMALY_TYPE in raw.columns:
        out[ANOMALY_TYPE] = raw[ANOMALY_TYPE].astype(str).to_numpy()
    else:
        out[ANOMALY_TYPE] = np.where(out[LABEL].to_numpy() == 0, NORMAL_TYPE, "labeled")
    return _in_day(out, start, path, day)


def _in_day(out: pd.DataFrame, start: pd.Timestamp, path: Path, day: str) -> pd.DataFrame:
    """The rows inside the partition's day, in the generator's order (each host's rows in time
    order, as windows and alerts read them)."""
    in_day = (out[TIMESTAMP] >= start) & (out[TIMESTAMP] < start + pd.Timedelta(days=1))
    out = out.loc[in_day]
    if out.empty:
        raise SourceError(f"{path}: no rows fall inside partition {day} (UTC)")
    return out.sort_values(["host_id", TIMESTAMP], kind="stable").reset_index(drop=True)


def _text(values: pd.Series) -> np.ndarray:
    """Ids as text (object), a missing one as None."""
    return values.astype(object).where(values.notna(), None).map(
        lambda v: v if v is None else str(v)).to_numpy(object)
