"""A standalone HTML evaluation report: one file, PNG plots embedded as data URIs.

Why standalone: the report is attached to MLflow runs and mailed around; it must open anywhere
with no server, no JavaScript and no sibling files.  Tables come from the same markdown the
Dagster UI shows (:meth:`EvaluationReport.to_markdown`), converted here for the small subset
this project emits (``#`` headings, pipe tables, paragraphs), so the two views cannot disagree.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ds_serving.atomic import atomic_write_text

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
    return [c.strip() for c in line.strip().strip("|").split("|")]


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
