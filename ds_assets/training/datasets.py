"""Training-set assembly and dataset scoring, shared by the asset graph and the demo."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ds_assets.telemetry.schema import (
    ANOMALY_TYPE,
    LABEL,
    LABEL_KNOWN,
    TIMESTAMP,
    feature_columns,
    utc_times,
)

SPLITS = ("train", "val", "test")
SCREENED = "_screened"


class DatasetError(ValueError):
    """Partitions that cannot form a training set; the message names the partition."""


def select_window(available: Sequence[str], n_partitions: int, end: str | None) -> list[str]:
    """The last ``n_partitions`` available partition keys up to and including ``end``."""
    if n_partitions < 1:
        raise DatasetError(f"n_partitions={n_partitions} must be >= 1")
    keys = sorted(k for k in available if end is None or k <= end)
    if not keys:
        raise DatasetError(
            f"no materialized raw_telemetry partitions{f' up to {end}' if end else ''}; "
            "materialize raw_telemetry for some days first"
        )
    return keys[-n_partitions:]


def window_reach(keys: Sequence[str], n_partitions: int, end: str | None) -> str | None:
    """Why a window of the last ``n_partitions`` stored days is not the last ``n_partitions``
    calendar days (days not stored, or left out, between them), or None when it is."""
    if not keys:
        return None
    last = dt.date.fromisoformat(end or keys[-1])
    first_calendar = last - dt.timedelta(days=n_partitions - 1)
    older = [k for k in keys if dt.date.fromisoformat(k) < first_calendar]
    if not older:
        return None
    return (f"the window of {n_partitions} stored day(s) up to {last} reaches back to {keys[0]}: "
            f"{len(older)} of its days are older than {first_calendar}, because days between "
            "are not stored or were left out; the model learns from them as from recent days. "
            "Narrow n_partitions or ingest the missing days")


def build_training_set(
    partitions: Mapping[str, pd.DataFrame],
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    labeled_validation: bool = False,
    screened: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Concatenate partitions and split by time: train | val | test.

    Cut points are timestamps shared by all hosts, so no future row leaks into training.
    Train keeps normal rows only and test every row, for evaluation. Validation keeps normal
    rows only, or with ``labeled_validation`` its labeled anomalies too, so a best-F1 threshold
    can be calibrated on it; early stopping and quantile thresholds then use its normal rows
    (:func:`normal_rows`).

    Days without a label column (production telemetry) train too: their rows get label 0 and
    ``label_known`` False, and train/val keep those not marked in ``screened`` (day -> mask of
    rows screened out as likely anomalous, :mod:`ds_assets.training.contamination`).
    """
    if not partitions:
        raise DatasetError("no partitions given for the training set")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(
            f"val_fraction={val_fraction}, test_fraction={test_fraction}: each must be in (0, 1) "
            "and together below 1"
        )
    screened = screened or {}
    frames = []
    expected: list[str] | None = None
    for key in sorted(partitions):
        frame = partitions[key]
        if frame.empty:
            raise DatasetError(f"raw_telemetry partition {key} is empty")
        features = feature_columns(frame)
        if expected is None:
            expected = features
        elif features != expected:
            raise DatasetError(
                f"raw_telemetry partition {key} has features {features}, earlier partitions "
                f"have {expected}; all partitions in a training window need the same features"
            )
        known = LABEL in frame.columns
        mask = screened.get(key)
        if mask is not None and len(mask) != len(frame):
            raise DatasetError(f"screen of partition {key} covers {len(mask)} rows, the "
                               f"partition has {len(frame)}")
        frames.append(frame.assign(**{
            LABEL: frame[LABEL] if known else 0,
            LABEL_KNOWN: known,
            SCREENED: np.zeros(len(frame), bool) if mask is None else np.asarray(mask, bool),
        }))
    data = pd.concat(frames, ignore_index=True).sort_values(
        [TIMESTAMP, "host_id"], kind="stable", ignore_index=True
    )
    if ANOMALY_TYPE in data.columns:
        data[ANOMALY_TYPE] = data[ANOMALY_TYPE].fillna("unknown")
    times = utc_times(data[TIMESTAMP])
    unique_times = np.unique(times)
    if len(unique_times) < 3:
        raise DatasetError("need at least 3 distinct timestamps to split train/val/test by time")
    val_start = unique_times[int(len(unique_times) * (1 - val_fraction - test_fraction))]
    test_start = unique_times[int(len(unique_times) * (1 - test_fraction))]
    split = np.where(times >= test_start, "test", np.where(times >= val_start, "val", "train"))
    data["split"] = split
    known = data[LABEL_KNOWN].to_numpy(bool)
    keep = (data["split"] == "test") | (known & (data[LABEL] == 0))
    keep |= ~known & ~data[SCREENED].to_numpy(bool)
    if labeled_validation:
        keep |= (data["split"] == "val") & known
    out = data.loc[keep].drop(columns=[SCREENED]).reset_index(drop=True)
    for name in SPLITS:
        if not (out["split"] == name).any():
            raise DatasetError(_empty_split(name, data, val_start, test_start))
    return out


def _empty_split(name: str, data: pd.DataFrame, val_start: Any, test_start: Any) -> str:
    """Why a split has no row to learn or calibrate from, and what would give it some."""
    rows = data["split"] == name
    val, test = (f"{pd.Timestamp(t):%Y-%m-%d %H:%M:%S} UTC" for t in (val_start, test_start))
    span = {"train": f"before {val}", "val": f"from {val} to {test}",
            "test": f"from {test}"}[name]
    if not rows.any():
        return (f"the {name} split ({span}) holds no row; use more partitions or rows")
    anomalous = int((data.loc[rows, LABEL_KNOWN] & (data.loc[rows, LABEL] != 0)).sum())
    return (f"the {name} split ({span}) holds {int(rows.sum()):,} rows, none usable as normal: "
            f"{anomalous:,} are labeled anomalous and the rest were screened out. More days "
            "of the same labels cannot help when the anomalies fill that part of the time: add "
            "days with normal rows there, or change val_fraction / test_fraction")


def split_rows(training_set: pd.DataFrame, split: str) -> pd.DataFrame:
    return training_set.loc[training_set["split"] == split].reset_index(drop=True)


def normal_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows labelled normal (all rows when there is no label column)."""
    if LABEL not in rows.columns:
        return rows
    return rows.loc[rows[LABEL] == 0].reset_index(drop=True)  # unlabeled rows carry label 0


def check_same_training_set(lineage: Mapping[str, object], training_set: pd.DataFrame) -> None:
    """Refuse to evaluate a bundle on a training_set other than the one it was trained from.

    The test split is held out only relative to that bundle's own train/val rows; after the
    training window changes, "test" rows may be rows the model learned from.
    """
    days = sorted({str(d) for d in training_set[TIMESTAMP].dt.date.unique()})
    rows = {s: int((training_set["split"] == s).sum()) for s in SPLITS}
    want_days, want_rows = lineage.get("partitions"), lineage.get("rows")
    if (want_days is not None and list(want_days) != days) or (  # type: ignore[call-overload]
        want_rows is not None and dict(want_rows) != rows  # type: ignore[call-overload]
    ):
        raise DatasetError(
            f"the bundle was trained on partitions {want_days} (rows {want_rows}), but "
            f"training_set now holds {days} (rows {rows}): its test rows may not be held out "
            "from this model. Re-materialize the detector and bundle from this training_set "
            "(the train_detector job) before evaluating"
        )


#: a step over this many times an entity's median interval is a gap (a hole in its series)
GAP_FACTOR = 1.5


def contiguous_segments(frame: pd.DataFrame, entity: str = "host_id") -> np.ndarray:
    """One id per row: the entity plus a counter that moves on at every gap in its time series.

    Training rows are normal rows only, so a removed anomaly leaves a hole in a host's series; a
    temporal window must not span it (it would learn a jump that never happens). Each host's
    regular interval is its median time step, and a step over GAP_FACTOR times it starts a new
    segment: clock jitter or one short step (a clock correction) is no gap. (With the smallest
    step as the interval, a step 1 ms short made every normal step a gap and the host gave no
    window.) Rows must be time-ordered within each entity.
    """
    if entity not in frame.columns:
        raise DatasetError(f"rows have no {entity!r} column to build per-entity windows from")
    times = frame[TIMESTAMP].to_numpy("datetime64[ns]").astype(np.int64)
    hosts = frame[entity].astype(str).to_numpy()
    codes, _ = pd.factorize(hosts)
    order = np.argsort(codes, kind="stable")  # each host's rows together, in time order
    code = codes[order]
    step = np.diff(times[order], prepend=times[order][:1]).astype(np.float64)
    step[np.r_[True, code[1:] != code[:-1]]] = np.nan  # a host's first row has no step
    positive = pd.Series(np.where(step > 0, step, np.nan))
    interval = positive.groupby(code).transform("median").to_numpy()
    gap = step > GAP_FACTOR * interval  # NaN compares False
    segment = np.empty(len(frame), dtype=np.int64)
    segment[order] = pd.Series(gap.astype(np.int64)).groupby(code).cumsum().to_numpy()
    return np.char.add(np.char.add(hosts.astype(str), "#"), segment.astype(str))
