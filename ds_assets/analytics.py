"""Dataset summaries rendered as markdown, for materialization metadata."""

from __future__ import annotations

import pandas as pd

from ds_assets.schema import ANOMALY_TYPE, LABEL, NORMAL_TYPE, feature_columns


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-style table without the optional ``tabulate`` dependency."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def feature_summary(frame: pd.DataFrame) -> str:
    features = feature_columns(frame)
    stats = frame[features].astype("float64").describe(percentiles=[0.5, 0.99]).T
    stats = stats[["mean", "std", "min", "50%", "99%", "max"]].reset_index(names="feature")
    return markdown_table(stats)


def anomaly_breakdown(frame: pd.DataFrame) -> str:
    if ANOMALY_TYPE not in frame.columns:
        return "no labels"
    counts = (
        frame.loc[frame[ANOMALY_TYPE] != NORMAL_TYPE, ANOMALY_TYPE]
        .value_counts()
        .rename_axis("anomaly_type")
        .reset_index(name="rows")
    )
    return markdown_table(counts) if len(counts) else "no labeled anomalies"


def telemetry_overview(frame: pd.DataFrame) -> dict[str, float | int | str]:
    n = len(frame)
    anomalies = int(frame[LABEL].sum()) if LABEL in frame.columns else 0
    return {
        "rows": n,
        "hosts": int(frame["host_id"].nunique()),
        "anomalous_rows": anomalies,
        "anomaly_rate": round(anomalies / n, 6) if n else 0.0,
        "first_timestamp": str(frame["timestamp"].min()),
        "last_timestamp": str(frame["timestamp"].max()),
    }
