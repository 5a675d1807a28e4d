"""Report plots rendered to PNG bytes with matplotlib's Agg backend.

Why bytes and the object API (``Figure`` + ``FigureCanvasAgg``) instead of ``pyplot``: the
plots are drawn inside Dagster step workers and tests, where pyplot's global figure registry
and GUI backend selection would leak state between runs; the bytes go straight into Dagster
metadata (base64 markdown), the HTML report and MLflow.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ds_assets.reporting.evaluation import _check_labels_scores, _cumulative_counts

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ds_assets.monitoring.drift import DriftResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DPI = 100


def _literal(text: str) -> str:
    """Text matplotlib shows as written: a ``$`` (in a host or dataset name) starts math mode
    otherwise, and an unmatched one failed the whole report."""
    return text.replace("$", r"\$")


def _figure(width: float, height: float) -> Figure:
    # matplotlib is imported where a plot is drawn, not by the code location (0.7 s)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every distinct score threshold, highest threshold first.

    The same step points :func:`reporting.evaluation.average_precision` sums over, so the plot
    and the PR-AUC in the table describe the same curve.
    """
    y, s = _check_labels_scores(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("a PR curve needs at least one anomalous row")
    tps, fps, _ = _cumulative_counts(y, s)
    return tps / n_pos, tps / (tps + fps)


def pr_curve_png(
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]],
    operating_point: tuple[float, float] | None = None,
    title: str = "Precision-recall on the test split",
) -> bytes:
    """PR curves for (name, labels, scores) triples on one axes; the first is the model.

    ``operating_point`` = (recall, precision) at the deployed threshold, drawn as a marker so
    the reader sees where on its curve the model actually runs.
    """
    if not curves:
        raise ValueError("pr_curve_png needs at least one (name, labels, scores) curve")
    fig = _figure(6.0, 4.5)
    ax = fig.add_subplot()
    contamination = None
    for i, (name, labels, scores) in enumerate(curves):
        recall, precision = pr_curve(labels, scores)
        ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre",
                label=name, linewidth=2.0 if i == 0 else 1.2)
        contamination = float(np.mean(np.asarray(labels)))
    if contamination is not None:
        ax.axhline(contamination, color="grey", linestyle=":", linewidth=1,
                   label=f"random ({contamination:.1%} anomalous)")
    if operating_point is not None:
        ax.plot([operating_point[0]], [operating_point[1]], "o", color="black", markersize=7,
                label="deployed threshold")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02),
           title=_literal(title))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def score_histogram_png(
    labels: np.ndarray, scores: np.ndarray, threshold: float, title: str = "Score distribution"
) -> bytes:
    """Histograms of normal vs anomalous scores (log-spaced bins) and the threshold line."""
    y, s = _check_labels_scores(labels, scores)
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    finite = s[np.isfinite(s)]
    positive = finite[finite > 0]
    log_scale = positive.size == finite.size and positive.size > 0 and (
        positive.max() / positive.min() > 100
    )
    bins: list[float] | int = 10
    if log_scale:
        bins = np.geomspace(positive.min(), positive.max(), 60).tolist()
        ax.set_xscale("log")
    elif finite.size and finite.max() > finite.min():
        bins = np.linspace(finite.min(), finite.max(), 60).tolist()
    elif finite.size:  # every score equal: one bin around it (60 equal edges have no width)
        bins = [float(finite.min()) - 0.5, float(finite.min()) + 0.5]
    for value, name, color in ((0, "normal", "tab:blue"), (1, "anomalous", "tab:red")):
        part = s[(y == value) & np.isfinite(s)]
        if part.size:
            ax.hist(part, bins=bins, alpha=0.55, color=color, density=True,
                    label=f"{name} ({part.size:,} rows)")
    if np.isfinite(threshold):
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_yscale("log")
    ax.set(xlabel="anomaly score", ylabel="density", title=_literal(title))
    ax.legend(fontsize=8)
    return _png(fig)


def timeseries_png(
    timestamps: np.ndarray,
    scores: np.ndarray,
    flags: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    title: str = "Score over time",
) -> bytes:
    """One entity's score over time: true anomalies shaded, flagged rows marked, threshold.

    Unscored rows (NaN, e.g. a temporal model's warm-up) are left as gaps, not drawn as 0.
    """
    t = np.asarray(timestamps)
    s = np.asarray(scores, dtype=np.float64)
    f = np.asarray(flags).astype(bool)
    y = np.asarray(labels).astype(bool)
    if not (t.shape == s.shape == f.shape == y.shape) or t.ndim != 1:
        raise ValueError(
            "timestamps, scores, flags and labels must be 1-D and the same length, got "
            f"{t.shape}, {s.shape}, {f.shape}, {y.shape}"
        )
    if t.size == 0:
        raise ValueError("timeseries_png needs at least one row")
    fig = _figure(10.0, 3.6)
    ax = fig.add_subplot()
    ax.plot(t, s, linewidth=0.8, color="tab:blue", label="score")
    edges = np.diff(np.r_[0, y.astype(np.int8), 0])
    for i, (start, end) in enumerate(
        zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)
    ):
        ax.axvspan(t[start], t[end - 1], color="tab:red", alpha=0.15,
                   label="true anomaly" if i == 0 else None)
    if f.any():
        ax.plot(t[f], s[f], "x", color="tab:red", markersize=4, label="flagged")
    if np.isfinite(threshold):
        ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    finite = s[np.isfinite(s)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    ax.set(xlabel="time", ylabel="score", title=_literal(title))
    ax.legend(fontsize=8, loc="upper left")
    fig.autofmt_xdate()
    return _png(fig)


def drift_plot_png(result: DriftResult) -> bytes:
    """Bar chart of each feature's drift score (effect size over its calibrated threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result.table
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=90)
    colors = ["tab:red" if d else "tab:blue" for d in table["drifted"]]
    ax.barh(table["feature"], table["drift_score"], color=colors)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="calibrated threshold")
    ax.set_xlabel("max(W1 / threshold, PSI / threshold)")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
