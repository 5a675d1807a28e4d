"""Plots render real PNGs from the same curve the metrics use; the HTML report is standalone."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.metrics import precision_recall_curve

from ds_assets.reporting.evaluation import average_precision, evaluate
from ds_assets.reporting.plots import (
    PNG_MAGIC,
    pr_curve,
    pr_curve_png,
    score_histogram_png,
    timeseries_png,
)
from ds_assets.reporting.report_html import (
    Figure,
    Section,
    build_report,
    markdown_image,
    markdown_to_html,
    render_report_html,
    report_directory,
    write_report_html,
)


def _case(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(int)
    y[:2] = [0, 1]
    return y, np.exp(rng.normal(size=n) + 2.0 * y)


def _image(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_MAGIC)
    return imread(io.BytesIO(png), format="png")


def test_pr_curve_is_the_average_precision_curve() -> None:
    y, s = _case()
    recall, precision = pr_curve(y, s)
    # average precision is the step integral of exactly these points
    assert np.sum(np.diff(recall, prepend=0.0) * precision) == pytest.approx(
        average_precision(y, s), abs=1e-12
    )
    ref_p, ref_r, _ = precision_recall_curve(y, s)
    # sklearn lists the same points lowest threshold first, plus the (recall 0, precision 1) end
    assert np.allclose(precision[::-1], ref_p[:-1]) and np.allclose(recall[::-1], ref_r[:-1])
    with pytest.raises(ValueError, match="at least one anomalous row"):
        pr_curve(np.zeros(3, int), np.arange(3.0))


def test_pngs_decode_with_plausible_sizes() -> None:
    y, s = _case()
    report = evaluate(y, s, threshold=5.0)
    png = pr_curve_png(
        [("model", y, s), ("noise", y, np.random.default_rng(1).random(y.size))],
        operating_point=(report.recall, report.precision),
    )
    height, width = _image(png).shape[:2]
    assert 300 < width < 900 and 250 < height < 700
    hist = _image(score_histogram_png(y, s, 5.0))
    assert hist.shape[0] > 200 and hist.std() > 0.05  # not a blank canvas
    t = np.datetime64("2026-01-01") + np.arange(y.size) * np.timedelta64(5, "m")
    s_gap = s.copy()
    s_gap[:10] = np.nan  # warm-up rows without a score are allowed
    series = _image(timeseries_png(t, s_gap, s_gap > 5.0, y, 5.0))
    assert series.shape[1] > series.shape[0]  # a wide time-series strip
    with pytest.raises(ValueError, match="same length"):
        timeseries_png(t[:-1], s, s > 5.0, y, 5.0)
    with pytest.raises(ValueError, match="at least one"):
        pr_curve_png([])


def test_markdown_to_html_tables_headings_and_escaping() -> None:
    md = "#### Head <1>\n\n| a | b&c |\n|---|---|\n| 1 | <script> |\n| 2 | x |\n\n_none here_"
    out = markdown_to_html(md)
    assert "<h4>Head &lt;1&gt;</h4>" in out
    assert "<th>b&amp;c</th>" in out and "<td>&lt;script&gt;</td>" in out
    assert out.count("<tr>") == 3 and "<p><em>none here</em></p>" in out
    assert "<script>" not in out


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.srcs += [v or "" for k, v in attrs if k in ("src", "href")]


def test_report_is_standalone_and_written_atomically(tmp_path: Path) -> None:
    y, s = _case()
    report = evaluate(y, s, 5.0, timestamps=np.arange(y.size) * 60.0)
    png = score_histogram_png(y, s, 5.0)
    document = render_report_html(
        "Evaluation of model 'm' v3",
        [Section("Metrics", report.to_markdown()), Section("Plots", "", (Figure("hist", png),))],
        meta="test split: 400 rows",
    )
    parser = _Collector()
    parser.feed(document)
    assert parser.tags.count("table") == 3  # headline, confusion, events (no types: text)
    assert all(src.startswith("data:image/png;base64,") for src in parser.srcs)  # nothing external
    embedded = base64.b64decode(parser.srcs[0].split(",", 1)[1])
    assert embedded == png
    assert "false alarms per hour" in document and "oracle" in document
    target = tmp_path / "reports" / "report.html"
    write_report_html(target, document)
    assert target.read_text("utf-8") == document
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no temp files left
    md = markdown_image(png, "PR [curve]")
    assert re.fullmatch(r"!\[PR \[curve\)\]\(data:image/png;base64,[A-Za-z0-9+/=]+\)", md)


def test_build_report_end_to_end_without_dagster(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 120
    hosts = np.array(["h1", "h2"] * (n // 2))
    t = np.datetime64("2026-01-01") + (np.arange(n) // 2) * np.timedelta64(5, "m")
    test = rng.normal(size=(n, 3))
    labels = np.zeros(n, int)
    labels[60:70] = 1  # 5 rows per host
    test[labels == 1] += 6.0
    scores = np.abs(test).mean(axis=1)
    scores[:4] = np.nan  # each host's warm-up rows (a temporal model would leave these)
    flags = np.nan_to_num(scores, nan=0.0) > 2.0
    types = np.where(labels == 1, "spike", "none")
    rendered = build_report(
        title="Evaluation of m v1", labels=labels, scores=scores, flags=flags, threshold=2.0,
        train=rng.normal(size=(300, 3)), val=rng.normal(size=(100, 3)), test=test,
        anomaly_types=types, timestamps=t, entities=hosts, baseline_quantile=0.99,
    )
    assert rendered.unscored_rows == 4 and rendered.report.n_rows == n - 4
    assert rendered.report.per_type_recall["spike"]["recall"] == 1.0
    assert rendered.report.events is not None and rendered.report.events["n_events"] == 2
    assert [b.name for b in rendered.baselines] == ["zscore", "pca", "isolation_forest"]
    assert all(b.report.n_rows == n - 4 for b in rendered.baselines)  # the same rows
    assert rendered.timeseries_entity in {"h1", "h2"}
    assert set(rendered.figures) == {"pr_curve", "score_histogram", "timeseries"}
    md = rendered.metadata_markdown()
    assert md.count("](data:image/png;base64,") == 3 and "| model (deployed) |" in md
    doc = json.loads(json.dumps(rendered.to_dict(), allow_nan=False))
    assert doc["unscored_rows"] == 4 and len(doc["baselines"]) == 3
    directory = report_directory(tmp_path / "data" / "models", "m", "1")
    assert directory == (tmp_path / "data" / "reports" / "m" / "1").resolve()
    paths = rendered.write(directory)
    assert sorted(p.name for p in directory.iterdir()) == [
        "pr_curve.png", "report.html", "score_histogram.png", "timeseries.png"]
    assert paths["report.html"].read_text("utf-8") == rendered.html
    assert (directory / "pr_curve.png").read_bytes() == rendered.figures["pr_curve"]


def test_a_pipe_in_a_baseline_name_keeps_its_row_in_its_columns() -> None:
    """The z-score baseline is named "max |z| over features": the evaluation and baseline
    tables did not escape the pipe, and the HTML split on every pipe, so the row's numbers
    moved two columns right."""
    from ds_assets.reporting.evaluation import _markdown_table
    from ds_assets.reporting.report_html import _cells

    table = _markdown_table(["detector", "ROC-AUC"], [["zscore (max |z|)", "0.9"]])
    header, _, row = table.splitlines()
    assert _cells(row) == ["zscore (max |z|)", "0.9"] and len(_cells(header)) == 2


def test_constant_scores_and_a_dollar_in_a_name_still_draw() -> None:
    """All scores equal gave 60 equal bin edges and a log axis over no density (ValueError);
    a host named web$^$prod went through matplotlib's math parser and failed the report."""
    scores = np.full(50, 0.7)
    labels = np.r_[np.ones(3, int), np.zeros(47, int)]
    assert score_histogram_png(labels, scores, 0.9).startswith(b"\x89PNG")
    assert timeseries_png(np.arange(50.0), scores, labels.astype(bool), labels, 0.9,
                          title="Score over time (web$^$prod)").startswith(b"\x89PNG")
