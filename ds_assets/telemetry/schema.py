"""The wide telemetry row layout shared by every source, check and model."""

from __future__ import annotations

import pandas as pd

TIMESTAMP = "timestamp"
ENTITY_COLUMNS: tuple[str, ...] = ("host_id", "region", "project_id")
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
