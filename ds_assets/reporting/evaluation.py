"""Detector evaluation metrics, in numpy only.

Why numpy only: the metrics run inside the Dagster code location and in ad-hoc scripts, and
we want them to be small, dependency-free and exact.  scikit-learn is the reference
implementation in the tests (``roc_auc_score`` / ``average_precision_score``), not a runtime
dependency.

Three kinds of metric live here:

* ranking metrics (ROC-AUC, PR-AUC, best F1) that judge the scores themselves, independent of
  any threshold;
* counts and rates at the *deployed* threshold (precision/recall/F1, FAR/MAR as SKAB defines
  them).  The deployed rule, as in ``ds_serving``, is ``flag = score > threshold`` (strictly
  greater), so :func:`evaluate` uses exactly that unless it is handed the deployed (smoothed)
  flags;
* event-wise numbers (detection delay, false alarms per hour) over runs of anomalous rows.

:func:`best_f1` is different: it searches thresholds on the very labels it is scored against,
so it is an optimistic "oracle" number, useful only to see how much a better threshold could
buy.  It uses ``score >= threshold`` because its thresholds are observed scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ds_serving.alerting import epoch_seconds

#: The anomaly type of normal rows (``telemetry.schema.NORMAL_TYPE``; repeated here so this
#: module imports nothing but numpy and ds_serving).
NORMAL_TYPE = "none"


# --------------------------------------------------------------------------------------------
# validation and shared helpers


def _check_labels_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (labels, scores) pair and return them as int64 / float64 1-D arrays.

    Silent garbage (a label of 2, a NaN score, misaligned arrays) would otherwise produce a
    plausible-looking but wrong metric, so every problem is a ValueError naming it.
    """
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape[0] != s.shape[0]:
        raise ValueError(
            f"labels and scores must have the same length, got {y.shape[0]} and {s.shape[0]}"
        )
    if y.size == 0:
        raise ValueError("no rows to evaluate: labels and scores are empty")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"labels must be numeric 0/1, got dtype {y.dtype}")
    if s.dtype.kind not in "biuf":
        raise ValueError(f"scores must be numeric, got dtype {s.dtype}")
    bad = np.unique(y[(y != 0) & (y != 1)])
    if bad.size:
        raise ValueError(f"labels contain values other than 0/1: {bad[:5].tolist()}")
    s = s.astype(np.float64)
    n_nan = int(np.isnan(s).sum())
    if n_nan:
        raise ValueError(f"scores contain {n_nan} NaN value(s)")
    return y.astype(np.int64), s


def _check_same_length(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.ndim != 1 or b.ndim != 1 or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} and {name_b} must be 1-D and the same length, "
            f"got shapes {a.shape} and {b.shape}"
        )


def _group_ends(sorted_values: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal values in a sorted array.

    Compares with ``!=`` rather than ``np.diff``: ``inf - inf`` is NaN, which would split a run
    of tied infinite scores into separate groups.
    """
    change = np.flatnonzero(sorted_values[1:] != sorted_values[:-1])
    return np.r_[change, sorted_values.size - 1]


def _cumulative_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP and FP counts for ``score >= t`` at every distinct score ``t``, highest ``t`` first.

    Grouping equal scores is what makes ties count as one threshold (all tied rows are flagged
    together), matching sklearn's ``_binary_clf_curve``.
    """
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    ends = _group_ends(s_sorted)
    tps = np.cumsum(y[order])[ends]
    fps = (ends + 1) - tps
    return tps, fps, s_sorted[ends]


# --------------------------------------------------------------------------------------------
# ranking metrics


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC via the Mann-Whitney U statistic, with average ranks for tied scores.

    The rank form is exact and O(n log n), and equals the trapezoidal area under the ROC curve
    (a tie between a positive and a negative counts one half).  Returns NaN when only one class
    is present, because the AUC is undefined there, not 0 or 1.
    """
    y, s = _check_labels_scores(labels, scores)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ends = _group_ends(s[order])
    starts = np.r_[0, ends[:-1] + 1]
    # 1-based ranks starts+1 .. ends+1 share their mean
    average_rank = (starts + ends + 2) / 2.0
    ranks = np.empty(y.size, dtype=np.float64)
    ranks[order] = np.repeat(average_rank, ends - starts + 1)
    u = float(ranks[y == 1].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """PR-AUC as average precision: ``sum_k (R_k - R_{k-1}) * P_k`` over distinct thresholds.

    Same definition as ``sklearn.metrics.average_precision_score`` (step-wise, no linear
    interpolation, which would be optimistic; tied scores form one step).  PR-AUC is the
    headline metric because anomalies are rare and ROC-AUC hides false positives at low
    contamination.  Returns NaN when there are no positives (recall is undefined).
    """
    y, s = _check_labels_scores(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    tps, fps, _ = _cumulative_counts(y, s)
    precision = tps / (tps + fps)  # tps + fps >= 1 at every group end
    recall = tps / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold reaching it (flag = ``score >= threshold``).

    An *oracle*: the threshold is chosen on the labels being scored, so it overstates what the
    deployed threshold can do; report it only as an upper reference.  Vectorised: one sort and
    a cumulative sum give TP/FP at every distinct score.  With several thresholds tied for the
    best F1 the highest one (fewest flags) is returned.  Without positives every F1 is 0, and
    ``(0.0, nan)`` is returned.
    """
    y, s = _check_labels_scores(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        return 0.0, float("nan")
    tps, fps, thresholds = _cumulative_counts(y, s)
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (TP + FP + P); denominator >= P > 0
    f1 = 2.0 * tps / (tps + fps + n_pos)
    i = int(np.argmax(f1))
    return float(f1[i]), float(thresholds[i])


# --------------------------------------------------------------------------------------------
# counts and rates at a fixed threshold


def confusion_counts(labels: np.ndarray, flags: np.ndarray) -> dict[str, int]:
    """TP/FP/FN/TN of boolean ``flags`` against 0/1 ``labels``, as plain ints (JSON-ready)."""
    y = np.asarray(labels)
    f = np.asarray(flags)
    _check_same_length("labels", y, "flags", f)
    yb = y.astype(bool)
    fb = f.astype(bool)
    return {
        "tp": int(np.count_nonzero(yb & fb)),
        "fp": int(np.count_nonzero(~yb & fb)),
        "fn": int(np.count_nonzero(yb & ~fb)),
        "tn": int(np.count_nonzero(~yb & ~fb)),
    }


def precision_recall_f1(counts: Mapping[str, int]) -> tuple[float, float, float]:
    """Precision, recall and F1 from confusion counts; 0.0 wherever a ratio is undefined.

    0.0 (sklearn's ``zero_division=0``) rather than NaN so a detector that flags nothing scores
    as useless instead of disappearing from dashboards; plain-Python arithmetic, so no numpy
    division warnings.
    """
    tp, fp, fn = int(counts["tp"]), int(counts["fp"]), int(counts["fn"])
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return precision, recall, f1


def alarm_rates(counts: Mapping[str, int]) -> tuple[float, float]:
    """False alarm rate ``FP / (FP + TN)`` and missed alarm rate ``FN / (FN + TP)``.

    The two rates SKAB reports next to F1: FAR is what operators feel (share of normal rows
    that raise a flag), MAR what the business loses (share of anomalous rows never flagged).
    NaN where undefined (no normal rows, or no anomalous rows), never a made-up 0.
    """
    tp, fp, fn, tn = (int(counts[k]) for k in ("tp", "fp", "fn", "tn"))
    far = fp / (fp + tn) if fp + tn else float("nan")
    mar = fn / (fn + tp) if fn + tp else float("nan")
    return far, mar


def skab_f1(counts: Mapping[str, int]) -> float:
    """SKAB's F1 ``TP / (TP + (FP + FN) / 2)``; algebraically the usual F1, NaN on 0/0."""
    tp, fp, fn = int(counts["tp"]), int(counts["fp"]), int(counts["fn"])
    denominator = tp + (fp + fn) / 2
    return tp / denominator if denominator else float("nan")


def precision_at_k(labels: np.ndarray, scores: np.ndarray, k: int | None = None) -> float:
    """Precision among the ``k`` highest scores; ``k`` defaults to the number of anomalies.

    With ``k`` = number of true anomalies this equals recall at that cut (R-precision): a
    threshold-free "if we investigated as many rows as there are anomalies, how many would be
    real" number.  Ties at the cut are broken by row order (stable sort), so the value is
    deterministic.  NaN when there are no anomalies and no ``k`` is given.
    """
    y, s = _check_labels_scores(labels, scores)
    if k is None:
        k = int(y.sum())
        if k == 0:
            return float("nan")
    if not 1 <= k <= y.size:
        raise ValueError(f"k={k} must be between 1 and the number of rows ({y.size})")
    top = np.argsort(-s, kind="mergesort")[:k]
    return float(y[top].sum()) / k


def per_type_recall(
    anomaly_types: np.ndarray, flags: np.ndarray
) -> dict[str, dict[str, float | int]]:
    """Recall per anomaly type, for every type except ``"none"``, sorted by type name.

    Overall recall can hide a detector that catches every spike and no drift; this breaks it
    down.  Each entry is ``{"rows": n, "detected": k, "recall": k / n}``.
    """
    types = np.asarray(anomaly_types)
    f = np.asarray(flags)
    _check_same_length("anomaly_types", types, "flags", f)
    types = types.astype(str)
    fb = f.astype(bool)
    out: dict[str, dict[str, float | int]] = {}
    for name in sorted(set(types.tolist()) - {NORMAL_TYPE}):
        mask = types == name
        rows = int(np.count_nonzero(mask))
        detected = int(np.count_nonzero(fb & mask))
        out[name] = {"rows": rows, "detected": detected, "recall": detected / rows}
    return out


# --------------------------------------------------------------------------------------------
# event-wise metrics


# --------------------------------------------------------------------------------------------
# volume under the surface (VUS): range-aware, threshold-free


@dataclass(frozen=True)
class VolumeUnderSurface:
    """VUS-ROC and VUS-PR (Paparrizos et al., VLDB 2022): range-aware ROC-AUC and AP averaged
    over buffer widths 0..``window`` around each anomaly range, threshold-free. Unlike
    point-adjusted F1 they do not reward random scores; unlike point-wise AUC they credit a
    flag just before or after a labeled range (labels are rarely exact to the row)."""

    vus_roc: float
    vus_pr: float
    window: int
    thresholds: int


def _label_ranges(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last row (inclusive) of each run of anomalous rows."""
    starts, ends = _runs(y)
    return starts, ends - 1


def _merged(starts: np.ndarray, ends: np.ndarray, half: int, n: int) -> tuple[np.ndarray, ...]:
    """The ranges widened by ``half`` rows on both sides, overlapping ones merged (as the
    reference implementation merges them: two ranges join unless a gap remains)."""
    lo = np.maximum(starts - half, 0)
    hi = np.minimum(ends + half, n - 1)
    new = np.ones(starts.size, dtype=bool)
    new[1:] = ends[:-1] + half < starts[1:] - half
    group = np.cumsum(new) - 1
    return lo[new], np.maximum.reduceat(hi, np.flatnonzero(new)), group


def volume_under_surface(labels: np.ndarray, scores: np.ndarray, window: int = 100,
                         thresholds: int = 250) -> VolumeUnderSurface:
    """VUS-ROC and VUS-PR of ``scores`` against 0/1 ``labels``; ``window`` is the largest
    buffer (the reference implementation's ``slidingWindow``: about one period of the series),
    ``thresholds`` the number of score quantiles the curves are drawn through. Checked against
    TSB-AD's ``generate_curve(..., version="opt")`` (tests/reporting fixtures).

    For each buffer width ``w``, rows up to ``w // 2`` before and after a labeled range count
    as partly anomalous (``sqrt(1 - distance / w)``); a range's buffer counts only where it is
    flagged, and recall is scaled by the share of (widened) ranges flagged at all."""
    y, s = _check_labels_scores(labels, scores)
    if window < 0 or thresholds < 1:
        raise ValueError(f"window must be >= 0 and thresholds >= 1, got {window}, {thresholds}")
    n = y.size
    starts, ends = _label_ranges(y)
    if not starts.size:
        raise ValueError("VUS needs at least one anomalous row in the labels")
    positives = float(y.sum())
    order = np.argsort(-s, kind="stable")
    ranked = s[order]  # descending
    cut = ranked[np.linspace(0, n - 1, thresholds).astype(int)]
    # rows with score >= each threshold: the first k of ``ranked`` (ties included)
    k = np.searchsorted(-ranked, -cut, side="right")
    hits_orig = np.concatenate([[0.0], np.cumsum(y[order])])[k]
    rows = np.arange(n)
    aucs, aps = [], []
    for w in range(window + 1):
        half = w // 2
        ramp = np.zeros(n)
        for first, last in zip(starts.tolist(), ends.tolist(), strict=True):
            after = np.arange(last + 1, min(last + half + 1, n))
            ramp[after] += np.sqrt(1 - (after - last) / w)
            before = np.arange(max(first - half, 0), first)
            ramp[before] += np.sqrt(1 - (first - before) / w)
        ramp = np.minimum(ramp, 1.0) * ~y.astype(bool)  # labeled rows count 1 themselves
        hits_ramp = np.concatenate([[0.0], np.cumsum(ramp[order])])[k]
        lo, hi, _ = _merged(starts, ends, half, n)
        # a widened range is found when its highest score reaches the threshold
        seg = np.searchsorted(lo, rows, side="right") - 1
        inside = (seg >= 0) & (rows <= hi[np.maximum(seg, 0)])
        best = np.full(lo.size, -np.inf)
        np.maximum.at(best, seg[inside], s[inside])
        found = (best[None, :] >= cut[:, None]).sum(axis=1)
        tp = hits_orig + hits_ramp
        labeled = positives + hits_ramp
        p_new = (positives + labeled) / 2
        tpr = np.minimum(tp / p_new, 1.0) * found / lo.size
        fpr = (k - tp) / (n - p_new)
        precision = tp / k
        tpr_c = np.concatenate([[0.0], tpr, [1.0]])
        fpr_c = np.concatenate([[0.0], fpr, [1.0]])
        aucs.append(float(np.dot(np.diff(fpr_c), (tpr_c[1:] + tpr_c[:-1]) / 2)))
        aps.append(float(np.dot(np.diff(np.concatenate([[0.0], tpr])), precision)))
    return VolumeUnderSurface(vus_roc=float(np.mean(aucs)), vus_pr=float(np.mean(aps)),
                              window=window, thresholds=thresholds)


@dataclass(frozen=True)
class EventStats:
    """Anomalies seen as events (maximal runs of anomalous rows of one entity), not rows.

    Operators experience events: how long after an incident starts does the first flag come,
    and how many separate false alarms interrupt them per hour of normal operation.
    """

    n_events: int
    detected: int
    mean_delay_rows: float
    median_delay_rows: float
    mean_delay_seconds: float
    median_delay_seconds: float
    false_alarm_episodes: int
    normal_hours: float
    false_alarms_per_hour: float
    n_rows: int = 0

    @property
    def event_recall(self) -> float:
        return self.detected / self.n_events if self.n_events else float("nan")

    @property
    def false_alarms_per_1000_rows(self) -> float:
        return 1000 * self.false_alarm_episodes / self.n_rows if self.n_rows else float("nan")

    @property
    def false_alarms_per_entity_day(self) -> float:
        """Per day of one entity's normal operation: what one on-call person per host sees."""
        return 24 * self.false_alarms_per_hour

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["event_recall"] = self.event_recall
        data["false_alarms_per_1000_rows"] = self.false_alarms_per_1000_rows
        data["false_alarms_per_entity_day"] = self.false_alarms_per_entity_day
        return data


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) positions of the runs of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def event_metrics(
    labels: np.ndarray,
    flags: np.ndarray,
    timestamps: np.ndarray | None = None,
    entities: np.ndarray | None = None,
) -> EventStats:
    """Detection delay per anomaly event and false-alarm episodes per hour of normal time.

    Rows are grouped by ``entities`` (one entity when None) and ordered by ``timestamps``
    within each entity (input order when None).  An event is a maximal run of label-1 rows;
    its delay is the time from its first row to its first flagged row (events never flagged
    are missed and have no delay).  A false-alarm episode is a maximal run of flagged rows
    that touches no anomalous row.  Normal hours are each entity's normal rows times its
    median sampling interval, so gaps in the data do not count as monitored time.  Without
    timestamps the second-based numbers are NaN.
    """
    y = np.asarray(labels).astype(bool)
    f = np.asarray(flags).astype(bool)
    _check_same_length("labels", y, "flags", f)
    seconds = None if timestamps is None else epoch_seconds(np.asarray(timestamps))
    if seconds is not None:
        _check_same_length("timestamps", seconds, "labels", y)
        if np.isnan(seconds).any():
            raise ValueError("timestamps contain NaN/NaT values")
    keys = np.zeros(y.size, np.int8) if entities is None else np.asarray(entities)
    _check_same_length("entities", keys, "labels", y)
    _, inverse = np.unique(keys, return_inverse=True)
    delays_rows: list[int] = []
    delays_seconds: list[float] = []
    n_events = episodes = 0
    normal_seconds = 0.0
    for group in range(int(inverse.max()) + 1 if y.size else 0):
        rows = np.flatnonzero(inverse == group)
        if seconds is not None:
            rows = rows[np.argsort(seconds[rows], kind="stable")]
        yg, fg = y[rows], f[rows]
        starts, ends = _runs(yg)
        n_events += starts.size
        for start, end in zip(starts, ends, strict=True):
            hit = np.flatnonzero(fg[start:end])
            if hit.size:
                delays_rows.append(int(hit[0]))
                if seconds is not None:
                    tg = seconds[rows]
                    delays_seconds.append(float(tg[start + hit[0]] - tg[start]))
        cum_anomalous = np.concatenate([[0], np.cumsum(yg)])
        f_starts, f_ends = _runs(fg)
        episodes += int(np.count_nonzero(cum_anomalous[f_ends] - cum_anomalous[f_starts] == 0))
        if seconds is not None and rows.size > 1:
            steps = np.diff(seconds[rows])
            steps = steps[steps > 0]
            interval = float(np.median(steps)) if steps.size else 0.0
            normal_seconds += interval * int(np.count_nonzero(~yg))
    hours = normal_seconds / 3600.0 if seconds is not None else float("nan")

    def _stat(values: list[int] | list[float], fn: Any) -> float:
        return float(fn(values)) if values else float("nan")

    return EventStats(
        n_events=n_events,
        detected=len(delays_rows),
        mean_delay_rows=_stat(delays_rows, np.mean),
        median_delay_rows=_stat(delays_rows, np.median),
        mean_delay_seconds=_stat(delays_seconds, np.mean),
        median_delay_seconds=_stat(delays_seconds, np.median),
        false_alarm_episodes=episodes,
        normal_hours=hours,
        false_alarms_per_hour=episodes / hours if hours > 0 else float("nan"),
        n_rows=int(y.size),
    )


# --------------------------------------------------------------------------------------------
# the report


def json_safe(value: Any) -> Any:
    """NaN/inf floats -> None (strict JSON has neither), numpy scalars -> Python, recursively."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table; a ``|`` inside a cell (the z-score's "max |z|") is escaped, so it cannot
    split the row."""
    def cells(values: list[str]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    lines = [cells(header), "|" + "---|" * len(header)]
    lines += [cells(row) for row in rows]
    return "\n".join(lines)


def _fmt(value: float, spec: str = ".4f") -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


#: Event-wise numbers copied into :meth:`EvaluationReport.metrics`.
EVENT_METRICS = (
    "event_recall",
    "mean_delay_seconds",
    "median_delay_seconds",
    "false_alarms_per_hour",
    "false_alarms_per_entity_day",
    "false_alarms_per_1000_rows",
)


@dataclass(frozen=True)
class EvaluationReport:
    """Every number about one detector on one labelled split, with the threshold it used."""

    n_rows: int
    n_anomalies: int
    contamination: float
    threshold: float
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f1: float
    roc_auc: float
    pr_auc: float
    best_f1_oracle: float
    best_f1_threshold: float
    per_type_recall: dict[str, dict[str, float | int]]
    precision_at_k: float = float("nan")
    far: float = float("nan")
    mar: float = float("nan")
    events: dict[str, Any] | None = None

    def metrics(self) -> dict[str, float]:
        """A flat ``name -> float`` dict for MLflow ``log_metrics`` and Dagster metadata.

        NaN is kept as NaN (not dropped, not 0) so an undefined metric stays visibly undefined.
        Per-type recall appears as ``recall_<type>``.
        """
        flat = {
            name: float(getattr(self, name))
            for name in (
                "precision",
                "recall",
                "f1",
                "roc_auc",
                "pr_auc",
                "best_f1_oracle",
                "contamination",
                "precision_at_k",
                "far",
                "mar",
            )
        }
        for name, entry in self.per_type_recall.items():
            flat[f"recall_{name}"] = float(entry["recall"])
        if self.events is not None:
            for name in EVENT_METRICS:
                value = self.events.get(name)  # reports stored before a metric existed
                flat[name] = float("nan") if value is None else float(value)
        return flat

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict; NaN (and +-inf) become None."""
        return {f.name: json_safe(getattr(self, f.name)) for f in fields(self)}

    def to_markdown(self) -> str:
        """Headline metrics, the confusion matrix and per-type recall as markdown tables."""
        headline = _markdown_table(
            ["metric", "value"],
            [
                ["rows", str(self.n_rows)],
                ["anomalies", f"{self.n_anomalies} ({self.contamination:.2%})"],
                ["threshold (deployed rule: flag = score > threshold)", f"{self.threshold:.6g}"],
                ["precision", _fmt(self.precision)],
                ["recall", _fmt(self.recall)],
                ["F1", _fmt(self.f1)],
                ["false alarm rate FP/(FP+TN)", _fmt(self.far)],
                ["missed alarm rate FN/(FN+TP)", _fmt(self.mar)],
                [f"precision@k (k = {self.n_anomalies} true anomalies)", _fmt(self.precision_at_k)],
                ["ROC-AUC", _fmt(self.roc_auc)],
                ["PR-AUC (average precision)", _fmt(self.pr_auc)],
                ["best F1 (oracle: threshold chosen on test labels)", _fmt(self.best_f1_oracle)],
                [
                    "best-F1 threshold (oracle, flag = score >= threshold)",
                    _fmt(self.best_f1_threshold, ".6g"),
                ],
            ],
        )
        confusion = _markdown_table(
            ["", "flagged", "not flagged"],
            [
                ["actual anomaly", f"{self.tp} (TP)", f"{self.fn} (FN)"],
                ["actual normal", f"{self.fp} (FP)", f"{self.tn} (TN)"],
            ],
        )
        if self.per_type_recall:
            per_type = _markdown_table(
                ["anomaly type", "rows", "detected", "recall"],
                [
                    [name, str(e["rows"]), str(e["detected"]), _fmt(float(e["recall"]))]
                    for name, e in self.per_type_recall.items()
                ],
            )
        else:
            per_type = "_no anomaly types to break down_"
        sections = [
            "#### Headline metrics",
            headline,
            "#### Confusion matrix",
            confusion,
            "#### Recall per anomaly type",
            per_type,
        ]
        if self.events is not None:
            sections += ["#### Events (runs of anomalous rows per entity)", self._events_table()]
        return "\n\n".join(sections)

    def _events_table(self) -> str:
        e = {k: (float("nan") if v is None else v) for k, v in (self.events or {}).items()}
        return _markdown_table(
            ["metric", "value"],
            [
                ["anomaly events", str(e["n_events"])],
                ["events detected (at least one flag)", f"{e['detected']} "
                 f"({_fmt(float(e['event_recall']), '.2%')})"],
                ["detection delay, mean (s)", _fmt(float(e["mean_delay_seconds"]), ".1f")],
                ["detection delay, median (s)", _fmt(float(e["median_delay_seconds"]), ".1f")],
                ["detection delay, mean / median (rows)",
                 f"{_fmt(float(e['mean_delay_rows']), '.1f')} / "
                 f"{_fmt(float(e['median_delay_rows']), '.1f')}"],
                ["false-alarm episodes", str(e["false_alarm_episodes"])],
                ["normal hours monitored", _fmt(float(e["normal_hours"]), ".2f")],
                ["false alarms per hour", _fmt(float(e["false_alarms_per_hour"]), ".3f")],
                ["false alarms per entity-day",
                 _fmt(float(e.get("false_alarms_per_entity_day", math.nan)), ".2f")],
                ["false alarms per 1,000 rows",
                 _fmt(float(e.get("false_alarms_per_1000_rows", math.nan)), ".3f")],
            ],
        )


def evaluate(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    anomaly_types: np.ndarray | None = None,
    *,
    flags: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
    entities: np.ndarray | None = None,
) -> EvaluationReport:
    """Evaluate scores against 0/1 labels at the deployed threshold.

    Rows are flagged with ``scores > threshold`` -- strictly greater, the rule ``ds_serving``
    applies in production, so the counts here are the counts a deployment would see.  Ranking
    metrics (ROC-AUC, PR-AUC, oracle best F1) ignore the threshold.  ``anomaly_types`` (same
    length, ``"none"`` for normal rows) adds per-type recall; without it that breakdown is
    empty.  ``flags`` overrides ``scores > threshold`` when the deployed policy post-processes
    raw flags (k-of-n smoothing), so the counts are the ones the deployment produces.
    ``timestamps`` and/or ``entities`` add event-wise metrics (detection delay, false alarms
    per hour); see :func:`event_metrics`.

    Raises ValueError for mismatched lengths, empty input, labels other than 0/1 and NaN
    scores, naming the problem.
    """
    y, s = _check_labels_scores(labels, scores)
    threshold = float(threshold)
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    if flags is None:
        flags = s > threshold
    else:
        flags = np.asarray(flags).astype(bool)
        _check_same_length("flags", flags, "labels", y)
    counts = confusion_counts(y, flags)
    far, mar = alarm_rates(counts)
    events = None
    if timestamps is not None or entities is not None:
        events = event_metrics(y, flags, timestamps, entities).to_dict()
    precision, recall, f1 = precision_recall_f1(counts)
    oracle_f1, oracle_threshold = best_f1(y, s)
    if anomaly_types is None:
        by_type: dict[str, dict[str, float | int]] = {}
    else:
        types = np.asarray(anomaly_types)
        _check_same_length("anomaly_types", types, "labels", y)
        by_type = per_type_recall(types, flags)
    n_anomalies = int(y.sum())
    return EvaluationReport(
        n_rows=int(y.size),
        n_anomalies=n_anomalies,
        contamination=n_anomalies / int(y.size),
        threshold=threshold,
        tp=counts["tp"],
        fp=counts["fp"],
        fn=counts["fn"],
        tn=counts["tn"],
        precision=precision,
        recall=recall,
        f1=f1,
        roc_auc=roc_auc(y, s),
        pr_auc=average_precision(y, s),
        best_f1_oracle=oracle_f1,
        best_f1_threshold=oracle_threshold,
        per_type_recall=by_type,
        precision_at_k=precision_at_k(y, s) if n_anomalies else float("nan"),
        far=far,
        mar=mar,
        events=events,
    )


def group_breakdown(top_groups: np.ndarray, flags: np.ndarray, labels: np.ndarray,
                    anomaly_types: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per feature group: the flagged rows it contributed most to, how many were labeled
    anomalies, and the anomaly types it explained most often (detected rows only)."""
    groups = np.asarray(top_groups, dtype=object)
    flagged = np.asarray(flags, bool) & np.array([g is not None for g in groups])
    y = np.asarray(labels).astype(bool)
    rows: list[dict[str, Any]] = []
    for name in sorted({str(g) for g in groups[flagged]}):
        mine = flagged & (groups == name)
        entry: dict[str, Any] = {"group": name, "flagged_rows": int(mine.sum()),
                                 "anomalous_rows": int((mine & y).sum())}
        if anomaly_types is not None:
            types = np.asarray(anomaly_types)[mine & y]
            values, counts = np.unique(types.astype(str), return_counts=True)
            entry["anomaly_types"] = {str(v): int(c) for v, c in
                                      sorted(zip(values, counts, strict=True),
                                             key=lambda vc: -vc[1])}
        rows.append(entry)
    return sorted(rows, key=lambda r: -r["flagged_rows"])
