"""Dataset summaries rendered as markdown, for materialization metadata."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ds_assets.telemetry.schema import ANOMALY_TYPE, LABEL, NORMAL_TYPE, feature_columns


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-style table without the optional ``tabulate`` dependency; a ``|`` inside a cell
    is escaped so it cannot split the row (e.g. "max |z| over features")."""

    def cell(value: object) -> str:
        text = format(value, floatfmt) if isinstance(value, float) else str(value)
        return text.replace("|", "\\|")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = [cell(v) for v in row]
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


def png_markdown(png: bytes, alt: str = "plot") -> str:
    """Embed a PNG in markdown metadata (the Dagster UI renders data URIs)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def top_k(frame: pd.DataFrame, by: str, flag: str, k: int = 5) -> pd.DataFrame:
    """The ``k`` groups of ``by`` with the most flagged rows (rows, flagged, rate)."""
    return _top_k(_flag_counts(frame, by, flag), by, k)


def _flag_counts(frame: pd.DataFrame, by: str, flag: str) -> pd.DataFrame | None:
    """Rows and flagged rows per group of ``by``: sums, so chunks of a table add up."""
    if by not in frame.columns or flag not in frame.columns:
        return None
    grouped = frame.groupby(by, observed=True)[flag].agg(["size", "sum"])
    grouped.columns = ["rows", "flagged"]
    return grouped.astype(np.int64)


def _top_k(counts: pd.DataFrame | None, by: str, k: int) -> pd.DataFrame:
    if counts is None:
        return pd.DataFrame(columns=[by, "rows", "flagged", "rate"])
    out = counts.copy()
    if by == ANOMALY_TYPE:  # normal rows are no anomaly type: out before the top k is taken
        out = out[out.index != NORMAL_TYPE]
    out["rate"] = out["flagged"] / out["rows"]
    # ties in the order of the groups' names, however the counts were put together
    out = out.sort_index().sort_values(["flagged", "rows"], ascending=False, kind="stable")
    return out.head(k).reset_index()


def top_k_markdown(frame: pd.DataFrame, flag: str, k: int = 5) -> str:
    """Top-k by region, project, host and (labeled data) anomaly type, as one markdown block."""
    return _top_k_markdown({by: _flag_counts(frame, by, flag) for by in TOP_K_BY}, k)


TOP_K_BY = ("region", "project_id", "host_id", ANOMALY_TYPE)


def _top_k_markdown(counts: dict[str, pd.DataFrame | None], k: int) -> str:
    parts = []
    for by in TOP_K_BY:
        table = _top_k(counts.get(by), by, k)
        if len(table):
            parts.append(f"**by {by}**\n\n{markdown_table(table)}")
    return "\n\n".join(parts) or "no groups"


def hourly_series(frame: pd.DataFrame, metric: str, flag: str) -> pd.DataFrame:
    """Per hour of the day: mean of ``metric`` and the rate of ``flag`` (anomaly rate)."""
    return _hourly(_hourly_sums(frame, metric, flag), metric)


def _hourly_sums(frame: pd.DataFrame, metric: str, flag: str) -> pd.DataFrame:
    """Per hour: the sum and count of ``metric`` (NaN left out, as a mean leaves it out) and
    of ``flag``."""
    stamps = pd.to_datetime(frame["timestamp"], utc=True)  # naive is UTC; any zone to UTC
    hours = stamps.dt.floor("h")
    values = frame[metric].astype("float64")
    parts = pd.DataFrame({"metric_sum": values.fillna(0.0), "metric_n": values.notna(),
                          "flag_sum": frame[flag].astype("float64"),
                          "flag_n": frame[flag].notna()})
    return parts.groupby(hours).sum()


def _hourly(sums: pd.DataFrame, metric: str) -> pd.DataFrame:
    out = pd.DataFrame({
        f"mean_{metric}": sums["metric_sum"] / sums["metric_n"].where(sums["metric_n"] > 0),
        "anomaly_rate": sums["flag_sum"] / sums["flag_n"].where(sums["flag_n"] > 0),
    }, index=pd.DatetimeIndex(sums.index))
    out.index = out.index.strftime("%Y-%m-%d %H:%M")
    return out.reset_index(names="hour")


def hourly_png(series: pd.DataFrame) -> bytes:
    """Two stacked line plots: the metric and the anomaly rate per hour."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 3.6), dpi=90, sharex=True)
    # at each hour's own time, every hour of the span present: an hour without rows is a gap
    # in the line, not two points drawn side by side
    hours = pd.to_datetime(series["hour"])
    full = pd.date_range(hours.min(), hours.max(), freq="h") if len(hours) else hours
    spread = series.set_index(hours).reindex(full)
    top.plot(spread.index, spread.iloc[:, 1], color="tab:blue", marker=".", markersize=3)
    top.set_ylabel(series.columns[1], fontsize=8)
    bottom.plot(spread.index, spread["anomaly_rate"], color="tab:red", marker=".", markersize=3)
    bottom.set_ylabel("anomaly rate", fontsize=8)
    bottom.set_xlabel("hour (UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def histogram_table(values: pd.Series, bins: int = 10) -> pd.DataFrame:
    """Equal-width histogram (bin edges and counts) of a numeric column, NaNs dropped."""
    clean = values.astype("float64").dropna()
    if clean.empty:
        return pd.DataFrame(columns=["low", "high", "rows"])
    counts, edges = np.histogram(clean, bins=bins)
    return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "rows": counts})


def error_distribution(scored: pd.DataFrame, by: str) -> pd.DataFrame:
    """The champion's hits and misses grouped by ``by`` (anomaly type, region, project).

    Needs labels: rows, labeled anomalies, flagged, true/false positives, missed, recall and
    the false-alarm rate among normal rows of the group.
    """
    return _error_table(_error_counts(scored, by))


def _error_counts(scored: pd.DataFrame, by: str) -> pd.DataFrame | None:
    if LABEL not in scored.columns or by not in scored.columns:
        return None
    y = scored[LABEL].astype(bool)
    f = scored["is_anomaly"].astype(bool)
    frame = pd.DataFrame({by: scored[by], "rows": 1, "anomalies": y, "flagged": f,
                          "tp": y & f, "fp": ~y & f, "fn": y & ~f, "normal": ~y})
    return frame.groupby(by, observed=True).sum().astype(np.int64)


def _error_table(counts: pd.DataFrame | None) -> pd.DataFrame:
    if counts is None:
        return pd.DataFrame()
    g = counts.copy()
    g["recall"] = (g["tp"] / g["anomalies"].where(g["anomalies"] > 0)).round(4)
    g["false_alarm_rate"] = (g["fp"] / g["normal"].where(g["normal"] > 0)).round(6)
    return g.drop(columns="normal").reset_index()


ERRORS_BY = (ANOMALY_TYPE, "region", "project_id")


def _added(total: pd.DataFrame | None, part: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per-group sums of two chunks added up (groups keyed by plain values: each chunk's
    categoricals have their own categories)."""
    if part is None:
        return total
    if isinstance(part.index, pd.CategoricalIndex):
        part = part.set_axis(pd.Index(part.index.astype(object), name=part.index.name))
    if total is None:
        return part
    return total.add(part, fill_value=0).astype(part.dtypes.to_dict())


def _numpy(table: pa.Table, column: str) -> np.ndarray:
    return np.asarray(table.column(column).to_numpy())


def _hourly_counts(scored: pa.Table, flags: np.ndarray) -> pd.DataFrame:
    """``_hourly_sums`` of an Arrow table (naive times are UTC, as there)."""
    times = _numpy(scored, "timestamp")
    timed = ~np.isnat(times)  # a row without a time has no hour (``groupby`` drops it)
    if not timed.all():
        times, flags = times[timed], flags[timed]
        scored = scored.filter(pa.array(timed))
    per_hour = int(np.datetime64(1, "h").astype(times.dtype).view(np.int64))  # in its unit
    # integer hours since the epoch, floored as ``dt.floor`` (astype to hours costs 5x more)
    hours = times.view(np.int64) // per_hour
    if len(hours) and np.ptp(hours) < 4 * len(hours):  # a batch spans a few hours
        at = hours - hours.min()  # counted from the first hour: no sort
        distinct = hours.min() + np.arange(at.max() + 1)
    else:
        distinct, at = np.unique(hours, return_inverse=True)
    values = _numpy(scored, "score").astype(np.float64)
    known = ~np.isnan(values)
    sums = pd.DataFrame({
        "metric_sum": np.bincount(at, np.where(known, values, 0.0)),
        "metric_n": np.bincount(at, known).astype(np.int64),
        "flag_sum": np.bincount(at, flags),
        "flag_n": np.bincount(at),
    })
    present = np.flatnonzero(sums["flag_n"].to_numpy())  # hours with rows
    return sums.iloc[present].set_axis(pd.DatetimeIndex(
        distinct[present].astype("datetime64[h]").astype("datetime64[ns]"), tz="UTC",
        name="timestamp"))


def _group_counts(scored: pa.Table, by: str, counts: dict[str, np.ndarray | None]
                  ) -> pd.DataFrame:
    """Per value of ``by`` (rows without one left out, as ``groupby`` leaves them): the
    number of rows (``None``) or of true values of each array, int64, sorted by value."""
    column = scored.column(by).combine_chunks()
    encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
    codes = encoded.indices
    keep = None
    if codes.null_count:
        keep = np.asarray(codes.is_valid())
    at = np.asarray(codes.fill_null(0).to_numpy()).astype(np.intp)
    values = encoded.dictionary.to_pylist()
    if keep is not None:
        at = at[keep]
    columns = {name: np.bincount(at, None if array is None else
                                 (array if keep is None else array[keep]), len(values))
               for name, array in counts.items()}
    frame = pd.DataFrame(columns, index=pd.Index(values, dtype=object, name=by))
    frame = frame[frame["rows"] > 0].astype(np.int64)  # a dictionary may hold unused values
    return frame.groupby(level=0).sum().sort_index()  # a dictionary may repeat a value


class ScoredSummary:
    """What the scoring metadata shows of a scored table, summed a chunk at a time: a day
    streamed through ``score_table`` is summarised without being held whole."""

    def __init__(self) -> None:
        self.rows = 0
        self.flagged = 0
        self._hourly: pd.DataFrame | None = None
        self._top: dict[str, pd.DataFrame | None] = dict.fromkeys(TOP_K_BY)
        self._errors: dict[str, pd.DataFrame | None] = dict.fromkeys(ERRORS_BY)

    @classmethod
    def of(cls, scored: pd.DataFrame) -> ScoredSummary:
        summary = cls()
        summary.add(scored)
        return summary

    def add(self, scored: pd.DataFrame) -> None:
        self.rows += len(scored)
        self.flagged += int(scored["is_anomaly"].sum())
        self._hourly = _added(self._hourly, _hourly_sums(scored, "score", "is_anomaly"))
        for by in TOP_K_BY:
            self._top[by] = _added(self._top[by], _flag_counts(scored, by, "is_anomaly"))
        for by in ERRORS_BY:
            self._errors[by] = _added(self._errors[by], _error_counts(scored, by))

    def add_table(self, scored: pa.Table) -> None:
        """``add`` for a scored Arrow table, the same sums counted in numpy: groups are
        dictionary indices counted with ``bincount`` (no pandas frame or groupby per batch,
        a third of a streamed day's scoring time before). An empty table adds nothing (its
        columns may not even have a type: a column of no values reads as null)."""
        if scored.num_rows == 0:
            return
        names = set(scored.column_names)
        flags = _numpy(scored, "is_anomaly").astype(bool)
        self.rows += len(flags)
        self.flagged += int(flags.sum())
        if "timestamp" in names and "score" in names:
            self._hourly = _added(self._hourly, _hourly_counts(scored, flags))
        labels = _numpy(scored, LABEL).astype(bool) if LABEL in names else None
        for by in TOP_K_BY:
            if by in names:
                self._top[by] = _added(self._top[by], _group_counts(
                    scored, by, {"rows": None, "flagged": flags}))
        for by in ERRORS_BY:
            if by in names and labels is not None:
                self._errors[by] = _added(self._errors[by], _group_counts(scored, by, {
                    "rows": None, "anomalies": labels, "flagged": flags,
                    "tp": labels & flags, "fp": ~labels & flags, "fn": labels & ~flags,
                    "normal": ~labels}))

    @property
    def flag_rate(self) -> float:
        return round(self.flagged / max(self.rows, 1), 6)

    def hourly(self) -> pd.DataFrame:
        """``hourly_series(table, "score", "is_anomaly")`` of the whole table."""
        if self._hourly is None:
            return pd.DataFrame(columns=["hour", "mean_score", "anomaly_rate"])
        return _hourly(self._hourly.sort_index(), "score")

    def top_k_markdown(self, k: int = 5) -> str:
        return _top_k_markdown(self._top, k)

    def errors(self, by: str) -> pd.DataFrame:
        return _error_table(self._errors.get(by))
