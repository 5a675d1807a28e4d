"""The evaluation report: assembled from metrics, baselines and plots; standalone HTML.

Why standalone: the report is attached to MLflow runs and mailed around; it must open anywhere
with no server, no JavaScript and no sibling files.  Tables come from the same markdown the
Dagster UI shows (:meth:`EvaluationReport.to_markdown`), converted here for the small subset
this project emits (``#`` headings, pipe tables, paragraphs), so the two views cannot disagree.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ds_assets.reporting.baselines import BaselineResult, comparison_markdown, run_baselines
from ds_assets.reporting.evaluation import EvaluationReport, evaluate
from ds_assets.reporting.plots import pr_curve_png, score_histogram_png, timeseries_png
from ds_serving.atomic import atomic_write_bytes, atomic_write_text

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; }
figcaption { color: #555; font-size: 13px; }
img { max-width: 100%; border: 1px solid #eee; }
.meta { color: #555; font-size: 13px; }
"""


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def markdown_image(png: bytes, alt: str) -> str:
    """A markdown image with the PNG inline, for ``dg.MetadataValue.md`` in the Dagster UI."""
    return f"![{alt.replace(']', ')')}]({png_data_uri(png)})"


def _cells(line: str) -> list[str]:
    """A table row's cells: split on unescaped ``|`` only, then unescaped (``\\|`` is a pipe
    inside a cell, as the markdown tables write it)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def _is_rule(line: str) -> bool:
    body = line.strip().strip("|").replace("|", "").replace(":", "").replace(" ", "")
    return bool(body) and set(body) == {"-"}


def markdown_to_html(markdown: str) -> str:
    """Convert headings, pipe tables and paragraphs to HTML, escaping every text cell."""
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
            i += 1
            continue
        if line.lstrip().startswith("|") and i + 1 < len(lines) and _is_rule(lines[i + 1]):
            header = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append(table_html(header, rows))
            continue
        paragraph = [line.strip()]
        i += 1
        while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith(("#", "|")):
            paragraph.append(lines[i].strip())
            i += 1
        text = " ".join(paragraph)
        if len(text) > 2 and text.startswith("_") and text.endswith("_"):
            out.append(f"<p><em>{html.escape(text[1:-1])}</em></p>")
        else:
            out.append(f"<p>{html.escape(text)}</p>")
    return "\n".join(out)


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True)
class Figure:
    caption: str
    png: bytes


@dataclass(frozen=True)
class Section:
    """A heading followed by markdown (tables, paragraphs) and/or figures."""

    heading: str
    markdown: str = ""
    figures: tuple[Figure, ...] = ()


def render_report_html(title: str, sections: Sequence[Section], meta: str = "") -> str:
    """The whole report as one HTML document (UTF-8, no external resources)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if meta:
        parts.append(f'<p class="meta">{html.escape(meta)}</p>')
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.heading)}</h2>")
        if section.markdown:
            parts.append(markdown_to_html(section.markdown))
        for figure in section.figures:
            caption = html.escape(figure.caption)
            parts.append(
                f'<figure><img src="{png_data_uri(figure.png)}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report_html(path: str | os.PathLike[str], document: str) -> None:
    """Write atomically: a reader never sees half a report."""
    atomic_write_text(path, document)


# --------------------------------------------------------------------------------------------
# the evaluation report, assembled (plain function; the Dagster asset only wires it)

FIGURE_FILES = {
    "pr_curve": "pr_curve.png",
    "score_histogram": "score_histogram.png",
    "timeseries": "timeseries.png",
}


@dataclass(frozen=True)
class RenderedReport:
    """Everything the evaluation asset publishes: numbers, tables, PNGs and the HTML page."""

    report: EvaluationReport
    baselines: list[BaselineResult]
    figures: dict[str, bytes]  # key of FIGURE_FILES -> PNG
    comparison: str  # markdown table, model and baselines side by side
    html: str
    unscored_rows: int
    timeseries_entity: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.report.to_dict(),
            "unscored_rows": self.unscored_rows,
            "baselines": [b.to_dict() for b in self.baselines],
        }

    def metadata_markdown(self) -> str:
        """Tables and inline PNGs for ``dg.MetadataValue.md`` (shown in the Dagster UI)."""
        images = "\n\n".join(
            markdown_image(self.figures[key], key.replace("_", " ")) for key in FIGURE_FILES
            if key in self.figures
        )
        return "\n\n".join(
            [self.report.to_markdown(), "#### Baselines on the same test rows", self.comparison,
             "#### Plots", images]
        )

    def write(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``report.html`` and the PNGs atomically; returns name -> path."""
        directory = Path(directory)
        paths = {"report.html": directory / "report.html"}
        for key, png in self.figures.items():
            target = directory / FIGURE_FILES[key]
            atomic_write_bytes(target, png)
            paths[FIGURE_FILES[key]] = target
        write_report_html(paths["report.html"], self.html)
        return paths


def _pick_entity(labels: np.ndarray, entities: np.ndarray | None) -> np.ndarray:
    """Rows of the entity with the most anomalous rows (all rows if there are no entities)."""
    if entities is None:
        return np.arange(labels.size)
    keys = np.asarray(entities)
    names, inverse = np.unique(keys, return_inverse=True)
    best = int(np.argmax(np.bincount(inverse, weights=labels.astype(np.float64),
                                     minlength=names.size)))
    return np.flatnonzero(inverse == best)


def build_report(
    *,
    title: str,
    labels: np.ndarray,
    scores: np.ndarray,
    flags: np.ndarray,
    threshold: float,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    anomaly_types: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
    entities: np.ndarray | None = None,
    baseline_quantile: float = 0.995,
    baseline_margin: float = 1.0,
    notes: Sequence[str] = (),
    seed: int = 0,
    entity_thresholds: Mapping[str, float] | None = None,
) -> RenderedReport:
    """Evaluate the deployed flags/scores, run the baselines on the same rows, render it all.

    Rows without a score (a temporal model's warm-up, NaN) are left out of every number,
    for the model and the baselines alike, and counted in ``unscored_rows``.
    """
    s = np.asarray(scores, dtype=np.float64)
    keep = ~np.isnan(s)
    unscored = int((~keep).sum())

    def sub(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.asarray(a)[keep]

    y = np.asarray(labels)[keep]
    s, f = s[keep], np.asarray(flags).astype(bool)[keep]
    types, times, ents = sub(anomaly_types), sub(timestamps), sub(entities)
    report = evaluate(y, s, threshold, types, flags=f, timestamps=times, entities=ents)
    baselines = run_baselines(
        train, val, np.asarray(test)[keep], y, quantile=baseline_quantile,
        margin=baseline_margin, anomaly_types=types, timestamps=times, entities=ents, seed=seed,
    )
    figures = {
        "score_histogram": score_histogram_png(y, s, threshold, "Test scores: normal vs anomalous"),
    }
    if report.n_anomalies:
        figures["pr_curve"] = pr_curve_png(
            [("model", y, s), *((b.name, y, b.scores) for b in baselines)],
            operating_point=(report.recall, report.precision),
        )
    rows = _pick_entity(y, ents)
    entity = None if ents is None else str(ents[rows[0]])
    time_axis = times[rows] if times is not None else np.arange(rows.size)
    own = (entity_thresholds or {}).get(entity or "", threshold)  # a per-entity policy's
    figures["timeseries"] = timeseries_png(
        time_axis, s[rows], f[rows], y[rows], own,
        "Score over time" + (f" ({entity})" if entity else ""),
    )
    comparison = comparison_markdown("model (deployed)", report, baselines)
    sections = [
        Section("Metrics at the deployed threshold", report.to_markdown()),
        Section("Baselines on the same test rows", comparison),
        Section(
            "Plots",
            figures=tuple(
                Figure(caption, figures[key])
                for key, caption in (
                    ("pr_curve", "Precision-recall, model and baselines (dot: deployed)"),
                    ("score_histogram", "Score histograms, normal vs anomalous rows"),
                    ("timeseries", "Scores over time with true anomalies and flags"),
                )
                if key in figures
            ),
        ),
    ]
    meta = " | ".join([f"{report.n_rows} scored test rows", f"{unscored} unscored", *notes])
    return RenderedReport(
        report=report,
        baselines=baselines,
        figures=figures,
        comparison=comparison,
        html=render_report_html(title, sections, meta=meta),
        unscored_rows=unscored,
        timeseries_entity=entity,
    )


def report_directory(models_dir: str | os.PathLike[str], name: str, version: str) -> Path:
    """``<models_dir>/../reports/<name>/<version>``: beside the bundles, outside the bundle
    directory (whose files are checksummed) and outside the versions listing."""
    return Path(models_dir).resolve().parent / "reports" / name / version
