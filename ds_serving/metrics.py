"""Prometheus metrics of the scorer, in base units with ``_total`` counters.

Each server gets its own registry (tests run several servers in one process). The anomaly-score
histogram is fed a whole batch at a time with numpy, because calling ``Histogram.observe`` per
row would cost more than scoring the row.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from ds_serving.slots import STORES, evictions

PREFIX = "ds_scorer"
RELOAD_FAILURE_KINDS = ("pointer", "bundle", "features", "stateful_model")
# score / threshold: > 1 means flagged; the same buckets fit every model and survive reloads
SCORE_RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood stderr."""


# largest ratio one observation adds to a histogram's sum (its bucket is still +Inf)
SUM_CAP = 1e6


class BatchHistogram(Collector):
    """A histogram observed a numpy batch at a time (NaN values are skipped)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # last bucket: +Inf
        self._sum = 0.0
        self._scaled: dict[tuple[float, np.dtype[Any]], np.ndarray] = {}
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray, scale: float = 1.0) -> None:
        """Observe ``values / scale`` (NaN skipped) without dividing every value: the bucket
        bounds are scaled instead (cached per scale), in the values' own dtype."""
        bounds = self._bounds_for(scale, values.dtype)
        if len(values) <= 8:  # small batches: a Python loop beats numpy's per-call overhead
            self._observe_few(values.tolist(), scale, bounds)
            return
        top = values.max()  # NaN when any value is NaN (one pass instead of isnan + any)
        if top != top:
            values = values[~np.isnan(values)]
            if not len(values):
                return
            top = values.max()
        n = len(values)
        # count values <= each bound (Prometheus "le"), one comparison pass per bound up to the
        # batch's largest value (every bound above it holds them all): no sort (a 4096-score
        # np.sort costs 45 us on the AMD EPYC bench machine, these passes about 15 us)
        at_or_below = np.full(len(bounds), n, np.int64)
        below = np.empty(n, np.bool_)
        for i, bound in enumerate(bounds):
            if bound >= top:
                break
            np.less_equal(values, bound, out=below)
            at_or_below[i] = np.count_nonzero(below)
        counts = np.empty(len(at_or_below) + 1, np.int64)
        counts[0] = at_or_below[0]
        np.subtract(at_or_below[1:], at_or_below[:-1], out=counts[1:-1])
        counts[-1] = n - at_or_below[-1]
        # sum of ratios clipped to +-SUM_CAP: one infinite or absurd score (a feature of 1e30)
        # must not turn the series' sum into +Inf for the rest of the process's life; the clip
        # (a copy) only when a value is out of range (the same sum otherwise)
        cap = SUM_CAP * scale
        if top > cap or values.min() < -cap:
            values = np.clip(values, -cap, cap)
        total = float(np.sum(values, dtype=np.float64)) / scale
        with self._lock:
            self._counts += counts
            self._sum += total

    def _bounds_for(self, scale: float, dtype: np.dtype[Any]) -> np.ndarray:
        """The bucket bounds times ``scale`` in the values' dtype (cached per scale): values are
        compared with them, not divided, on both paths, so a value lands in the same bucket
        whatever the batch size (and as ``score > threshold`` flags it)."""
        key = (scale, dtype)
        bounds = self._scaled.get(key)
        if bounds is None:
            bounds = self._scaled[key] = (self._bounds * scale).astype(dtype)
            if len(self._scaled) > 8:
                self._scaled.pop(next(iter(self._scaled)))
        return bounds

    def _observe_few(self, values: list[float], scale: float, bounds: np.ndarray) -> None:
        edges = bounds.tolist()
        with self._lock:
            for value in values:
                if value == value:  # not NaN
                    self._counts[bisect_left(edges, value)] += 1
                    self._sum += max(-SUM_CAP, min(SUM_CAP, value / scale))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        family = HistogramMetricFamily(self.name, self.documentation)
        pairs = zip(self._bounds, cumulative, strict=False)
        buckets = [(repr(float(b)), float(c)) for b, c in pairs]
        buckets.append(("+Inf", float(cumulative[-1])))
        family.add_metric([], buckets, total)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)


class EntityStateCollector(Collector):
    """Read at scrape time: entities holding state per store (``counts``, the serving model's)
    and entities dropped at the ``--max-entities`` bound since start (``slots.evictions``)."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        held = GaugeMetricFamily(
            f"{PREFIX}_entities", "Entities holding state in the served model, by store "
            "(windows: a temporal model's last rows; smoothing: raw-flag tails; alerts)",
            labels=["store"])
        for store, count in self._counts().items():
            held.add_metric([store], count)
        yield held
        dropped = CounterMetricFamily(
            f"{PREFIX}_entity_evictions", "Entities whose state was dropped, least recently "
            "seen first, to stay within --max-entities (a temporal model's evicted entity "
            "scores nothing until its window refills)", labels=["store"])
        evicted = evictions()
        for store in STORES:
            dropped.add_metric([store], evicted.get(store, 0))
        yield dropped

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield from self.collect()


class ModelInfoCollector(Collector):
    """``ds_scorer_model_info{name, version, backend} 1`` once a model serves, and no sample
    before: prometheus_client's Info showed an unlabeled 1 while the server waited for its first
    model, a row with an empty name and version in dashboards and in joins on it."""

    def __init__(self) -> None:
        self._labels: dict[str, str] | None = None

    def set(self, labels: Mapping[str, str]) -> None:
        self._labels = dict(labels)

    def collect(self) -> Iterator[InfoMetricFamily]:
        family = InfoMetricFamily(f"{PREFIX}_model",
                                  "The model being served (name, version, backend)")
        if self._labels is not None:
            family.add_metric([], self._labels)
        yield family

    def describe(self) -> Iterator[InfoMetricFamily]:
        yield from self.collect()


class ScorerMetrics:
    """All scorer metrics, registered in one registry exposed on the metrics port."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "RPCs handled, by method and gRPC status code",
            ["method", "code"], registry=r,
        )
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds", "Time to handle one RPC message",
            ["method"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.rows = Counter(f"{PREFIX}_rows_scored", "Rows scored", registry=r)
        self.anomalies = Counter(
            f"{PREFIX}_anomalies", "Rows flagged anomalous (after smoothing)", registry=r
        )
        self.score_ratio = BatchHistogram(
            f"{PREFIX}_anomaly_score_threshold_ratio",
            "Anomaly score divided by the model threshold (> 1 is flagged)",
            SCORE_RATIO_BUCKETS,
        )
        r.register(self.score_ratio)
        self.model_info = ModelInfoCollector()
        r.register(self.model_info)
        self.model_loaded = Gauge(
            f"{PREFIX}_model_loaded", "1 when a model is loaded and serving", registry=r
        )
        self.reloads = Counter(
            f"{PREFIX}_reloads", "Model (re)load attempts by result (success, failure)",
            ["result"], registry=r,
        )
        self.reload_failures = Counter(
            f"{PREFIX}_reload_failures",
            "Refused model reloads by reason: pointer (champion.json unreadable or names a bad "
            "version), bundle (checksums, shapes, manifest, onnxruntime or warm-up), features "
            "(another feature set than the served model's), stateful_model (a model with a window "
            "or flag smoothing offered to the stateless multi-process tier)",
            ["reason"], registry=r,
        )
        for kind in RELOAD_FAILURE_KINDS:  # every reason shows from the start, at 0
            self.reload_failures.labels(kind)
        self.load_duration = Histogram(
            f"{PREFIX}_model_load_duration_seconds",
            "Time to load, verify and warm up a model bundle",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0), registry=r,
        )
        self.open_alerts = Gauge(f"{PREFIX}_open_alerts", "Alerts currently open", registry=r)
        self.alert_events = Counter(
            f"{PREFIX}_alert_events", "Alert open/close events", ["kind"], registry=r
        )
        self._entity_counts: Callable[[], Mapping[str, int]] = dict  # none until watched
        r.register(EntityStateCollector(lambda: self._entity_counts()))
        self._children: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}

    def watch_entities(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Read entity counts from ``counts`` (per store, of the model serving) at scrape."""
        self._entity_counts = counts

    def serve_http(self, host: str, port: int) -> ThreadingWSGIServer:
        """Serve /metrics in a daemon thread; ``shutdown()`` returns within 50 ms."""
        httpd = make_server(host, port, make_wsgi_app(self.registry), ThreadingWSGIServer,
                            handler_class=_QuietHandler)
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True, name="ds-scorer-metrics").start()
        return httpd

    def record(self, method: str, code: str, seconds: float | None) -> None:
        """Count one RPC message, and its duration when it has one (a stream the client left
        has none); label children are cached (label lookup is the slow part)."""
        child = self._children.get((method, code))
        if child is None:
            child = self._children[(method, code)] = self.requests.labels(method, code)
        child.inc()
        if seconds is None:
            return
        hist = self._durations.get(method)
        if hist is None:
            hist = self._durations[method] = self.request_duration.labels(method)
        hist.observe(seconds)

    def scored(self, scores: np.ndarray, n_scored: int, n_anomalies: int,
               threshold: float | np.ndarray) -> None:
        """Count a request's rows; ``threshold``: the model's, or each row's (per entity)."""
        self.rows.inc(n_scored)
        if n_anomalies:
            self.anomalies.inc(n_anomalies)
        if isinstance(threshold, np.ndarray):
            positive = threshold > 0
            self.score_ratio.observe_many(
                (scores[positive] / threshold[positive]).astype(np.float32))
        elif threshold > 0:
            self.score_ratio.observe_many(scores, threshold)

    def set_model(self, name: str, version: str, backend: str) -> None:
        self.model_info.set({"name": name, "version": version, "backend": backend})
        self.model_loaded.set(1)
