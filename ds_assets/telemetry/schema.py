"""The wide telemetry row layout shared by every source, check and model."""

from __future__ import annotations

import numpy as np
import pandas as pd

TIMESTAMP = "timestamp"
ENTITY_COLUMNS: tuple[str, ...] = ("host_id", "region", "project_id")
ENTITY = ENTITY_COLUMNS[0]  # the id per-entity state, thresholds and alerts are kept by
LABEL = "label"
# training sets only: False on rows of unlabeled days (their label 0 means "not screened out",
# not "known normal"), so metrics and gates never read them as labeled
LABEL_KNOWN = "label_known"
ANOMALY_TYPE = "anomaly_type"
NORMAL_TYPE = "none"
RESERVED: frozenset[str] = frozenset({TIMESTAMP, *ENTITY_COLUMNS, LABEL, LABEL_KNOWN,
                                       ANOMALY_TYPE, "split"})


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """Every column that is not a timestamp, entity, label or split column, in frame order."""
    return [c for c in frame.columns if c not in RESERVED]


def utc_times(values: pd.Series) -> np.ndarray:
    """Timestamps as naive UTC ``datetime64[ns]``: ``to_numpy()`` of a tz-aware column makes an
    object array of ``Timestamp``s (about 1 us a row, and ``np.unique``/sorting on it compares
    Python objects)."""
    return pd.to_datetime(values, utc=True).to_numpy("datetime64[ns]")
