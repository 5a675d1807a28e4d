"""Judging and showing results: evaluation metrics, baseline detectors, plots, the HTML report
and the analytics tables. Plain Python (no Dagster)."""
