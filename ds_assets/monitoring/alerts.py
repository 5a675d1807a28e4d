"""Alert events from scored rows, with the same hysteresis and cooldown as the live scorer.

Why here and not in the asset: the alert logic is ``ds_serving.alerting.AlertTracker`` (shared
with the gRPC scorer, so a day replayed offline raises the alerts the live service raised); this
module only turns its open/close events into one row per alert with what an on-call engineer
needs: entity, start, end, peak score, top contributing features (and declared feature group)
and, on labeled data, the anomaly type that caused it.

Each daily partition starts from fresh alert state (partitions stay independent and
re-runnable): an alert still open at midnight is reported with ``still_open=True`` and, if the
condition persists, opens again on the next day's first rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ds_assets.telemetry.schema import ANOMALY_TYPE, NORMAL_TYPE, TIMESTAMP, utc_times
from ds_serving.alerting import AlertPolicy, AlertTracker, epoch_seconds

ENTITY = "host_id"
REQUIRED = (TIMESTAMP, ENTITY, "score", "is_anomaly")
ALERT_COLUMNS = (
    "entity", "region", "project_id", "start", "end", "still_open", "duration_s", "rows",
    "flagged_rows", "peak_score", "top_features", "top_group", "anomaly_type",
)
UNKNOWN_TYPE = "unknown"  # no labels in the data
FALSE_ALARM_TYPE = "none"  # labeled data, but no labeled anomaly inside the alert


class AlertInputError(ValueError):
    """Scored rows the alert builder cannot use; the message names the column."""


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in ALERT_COLUMNS})
    frame["start"] = pd.Series(dtype="datetime64[ns, UTC]")
    frame["end"] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame


def alert_events(scored: pd.DataFrame, policy: AlertPolicy, top_k: int = 3) -> pd.DataFrame:
    """One row per alert raised on ``scored`` (rows of one or more entities, any order)."""
    missing = [c for c in REQUIRED if c not in scored.columns]
    if missing:
        raise AlertInputError(
            f"scored rows lack column(s) {missing}; alerts need {list(REQUIRED)} "
            "(the output of scored_telemetry)"
        )
    if scored.empty:
        return _empty()
    rows = scored.sort_values([ENTITY, TIMESTAMP], kind="stable", ignore_index=True)
    times = pd.to_datetime(rows[TIMESTAMP], utc=True)
    epoch = epoch_seconds(utc_times(times))
    scores = rows["score"].to_numpy(np.float64)
    flags = rows["is_anomaly"].to_numpy(bool) & ~np.isnan(scores)  # +inf is the most extreme
    entities = rows[ENTITY].astype(str).to_numpy()
    # unscored rows (NaN: temporal warm-up) pass through as NaN, so the tracker treats them
    # exactly as the live scorer does: neither flagged nor normal
    events = AlertTracker(policy).update(entities, flags, scores, epoch)
    # Rows of one entity are contiguous after the sort: its last row bounds an open alert.
    last_row = rows.groupby(ENTITY, sort=False).cumcount(ascending=False).to_numpy() == 0
    entity_end = {e: int(i) for e, i in zip(entities[last_row], np.flatnonzero(last_row),
                                            strict=True)}
    opened: dict[str, int] = {}
    spans: list[tuple[str, int, int, bool]] = []
    for ev in events:
        if ev.kind == "open":
            opened[ev.entity] = ev.position
        else:
            spans.append((ev.entity, opened.pop(ev.entity), ev.position, False))
    spans.extend((e, p, entity_end[e], True) for e, p in opened.items())
    out = [_describe(rows, times, scores, flags, e, start, end, still_open, policy, top_k)
           for e, start, end, still_open in spans]
    if not out:
        return _empty()
    return pd.DataFrame(out, columns=list(ALERT_COLUMNS)).sort_values(
        ["start", "entity"], ignore_index=True
    )


def _describe(
    rows: pd.DataFrame,
    times: pd.Series,
    scores: np.ndarray,
    flags: np.ndarray,
    entity: str,
    open_pos: int,
    end_pos: int,
    still_open: bool,
    policy: AlertPolicy,
    top_k: int,
) -> dict[str, Any]:
    # The rows that opened the alert are the flagged ones among its last n scored rows (the
    # tracker skips unscored ones); they name its features, not its row counts.
    first, seen = open_pos, 0
    while first > 0 and seen < policy.n - 1 and str(rows[ENTITY].iat[first - 1]) == entity:
        first -= 1
        seen += not np.isnan(scores[first])
    span = slice(first, end_pos + 1)
    span_flags = flags[span]
    top = (
        rows["top_feature"].iloc[span][span_flags].value_counts().head(top_k).index.tolist()
        if "top_feature" in rows.columns else []
    )
    # the declared feature group contributing most over the alert's flagged rows
    group = ""
    if "top_group" in rows.columns:
        counts = rows["top_group"].iloc[span][span_flags].value_counts()
        group = str(counts.index[0]) if len(counts) else ""
    if ANOMALY_TYPE in rows.columns:
        types = rows[ANOMALY_TYPE].iloc[span]
        labeled = types[types != NORMAL_TYPE]
        kind = str(labeled.value_counts().index[0]) if len(labeled) else FALSE_ALARM_TYPE
    else:
        kind = UNKNOWN_TYPE
    start, end = times.iat[open_pos], times.iat[end_pos]
    return {
        "entity": entity,
        "region": str(rows["region"].iat[open_pos]) if "region" in rows.columns else "",
        "project_id": str(rows["project_id"].iat[open_pos]) if "project_id" in rows else "",
        "start": start,
        "end": end,
        "still_open": still_open,
        "duration_s": float((end - start).total_seconds()),
        "rows": int(end_pos - open_pos + 1),
        "flagged_rows": int(flags[open_pos:end_pos + 1].sum()),  # of "rows", as it counts
        "peak_score": float(np.nanmax(scores[open_pos : end_pos + 1])),
        "top_features": ",".join(str(t) for t in top),
        "top_group": group,
        "anomaly_type": kind,
    }


def alert_summary(alerts: pd.DataFrame, policy: AlertPolicy) -> dict[str, Any]:
    """Headline numbers for materialization metadata."""
    by_type = alerts["anomaly_type"].value_counts().to_dict() if len(alerts) else {}
    return {
        "alerts": len(alerts),
        "entities_alerting": int(alerts["entity"].nunique()) if len(alerts) else 0,
        "still_open": int(alerts["still_open"].sum()) if len(alerts) else 0,
        "false_alarms": int(by_type.get(FALSE_ALARM_TYPE, 0)),
        "by_anomaly_type": {str(k): int(v) for k, v in by_type.items()},
        "policy": policy.to_dict(),
    }

