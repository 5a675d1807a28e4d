"""Deterministic synthetic telemetry for one day (one daily partition), with labeled anomalies.

Why this exists: the detectors need realistic, reproducible training and evaluation data with
ground truth. Every host follows a latent load (daily and weekly seasonality plus smooth random
variation); the eight features are correlated functions of that load plus Gaussian noise, so a
model has structure to learn and anomalies have structure to break.

Design notes:

* Fully vectorised over a ``(host, time)`` grid; Python loops run only over hosts (to seed their
  attributes) and over the few anomaly events, never over rows. A million rows take ~0.3 s.
* Rows are ordered by ``(host_id, timestamp)``: the grid is host-major and flattened row-major.
* Host attributes depend only on ``(seed, host index)``, so ``host-007`` has the same region,
  project, load level, peak hour and capacity every day and for any ``n_hosts``.
* Day-specific randomness comes from ``default_rng([seed, day.toordinal()])``, split into a stream
  for the normal signal and one for anomalies, so changing the anomaly settings leaves the
  normal signal of the day untouched.
* Anomaly magnitudes are in units of each host's nominal observation-noise std (the std at
  ``noise_level=1``), so they stay visible when ``noise_level`` is lowered.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

FEATURES: tuple[str, ...] = (
    "cpu_util",
    "mem_util",
    "disk_io",
    "net_in",
    "net_out",
    "latency_ms",
    "error_rate",
    "request_rate",
)
# Physically valid bounds; generated values are always clipped into them.
FEATURE_RANGES: dict[str, tuple[float, float]] = {
    "cpu_util": (0.0, 100.0),  # percent
    "mem_util": (0.0, 100.0),  # percent
    "disk_io": (0.0, 1e6),  # IOPS
    "net_in": (0.0, 1e6),  # KB/s
    "net_out": (0.0, 1e6),  # KB/s
    "latency_ms": (0.0, 1e6),  # milliseconds
    "error_rate": (0.0, 1.0),  # fraction of failed requests
    "request_rate": (0.0, 1e6),  # requests per second
}
ANOMALY_TYPES: tuple[str, ...] = (
    "spike",
    "level_shift",
    "stuck_sensor",
    "noise_burst",
    "correlation_break",
    "slow_drift",
)
REGIONS: tuple[str, ...] = ("eu-west", "us-east", "ap-south")
PROJECTS: tuple[str, ...] = ("proj-a", "proj-b", "proj-c", "proj-d", "proj-e")
NORMAL_TYPE = "none"
COLUMNS: tuple[str, ...] = (
    "timestamp",
    "host_id",
    "region",
    "project_id",
    *FEATURES,
    "label",
    "anomaly_type",
)

_SECONDS_PER_DAY = 86_400
_HOST_SALT = 0xB0057
# UTC offset (hours) per region, so each region's daily peak lands in its local afternoon.
_REGION_UTC_OFFSET: dict[str, float] = {"eu-west": 1.0, "us-east": -5.0, "ap-south": 5.5}
# Event length in rows (min, max), before capping for days with few rows.
_DURATION_ROWS: dict[str, tuple[int, int]] = {
    "spike": (1, 3),
    "level_shift": (20, 120),
    "stuck_sensor": (30, 120),
    "noise_burst": (10, 60),
    "correlation_break": (20, 90),
    "slow_drift": (60, 240),
}
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_F = {name: i for i, name in enumerate(FEATURES)}
_LOW = np.array([FEATURE_RANGES[f][0] for f in FEATURES])
_HIGH = np.array([FEATURE_RANGES[f][1] for f in FEATURES])


@dataclass(frozen=True)
class DriftConfig:
    """Distribution drift from ``start`` on (inclusive), to show and test the drift path.

    Unlike anomalies, drift is not labeled: it is the new normal that a model trained before
    ``start`` has never seen. Sizes are in units of each host's nominal observation-noise std,
    like anomaly magnitudes. Every effect is a deterministic function of the row's time and the
    day's existing noise, so it draws no random numbers and the rest of the day is unchanged.
    """

    start: str  # first drifted day, 'YYYY-MM-DD'
    features: tuple[str, ...] = ("latency_ms", "cpu_util")
    mean_shift: float = 0.0  # added to the chosen features (noise stds)
    scale: float = 1.0  # multiplier on the chosen features' observation noise
    seasonal_amplitude: float = 0.0  # amplitude of a new sinusoidal pattern (noise stds)
    seasonal_period_hours: float = 6.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        _parse_day(self.start)  # raises naming the value
        unknown = [f for f in self.features if f not in FEATURES]
        if not self.features or unknown or len(set(self.features)) != len(self.features):
            raise ValueError(
                f"drift.features={self.features!r}: must be a non-empty subset of {FEATURES} "
                "without duplicates"
            )
        if not np.isfinite(self.mean_shift):
            raise ValueError(f"drift.mean_shift={self.mean_shift!r}: must be a finite number")
        if not self.scale > 0.0 or not np.isfinite(self.scale):
            raise ValueError(f"drift.scale={self.scale!r}: must be a finite number > 0")
        if not self.seasonal_amplitude >= 0.0 or not np.isfinite(self.seasonal_amplitude):
            raise ValueError(
                f"drift.seasonal_amplitude={self.seasonal_amplitude!r}: must be finite and >= 0"
            )
        if not self.seasonal_period_hours > 0.0:
            raise ValueError(
                f"drift.seasonal_period_hours={self.seasonal_period_hours!r}: must be > 0"
            )

    def active_on(self, day: dt.date) -> bool:
        return day >= _parse_day(self.start)


@dataclass(frozen=True)
class GeneratorConfig:
    """Knobs of the synthetic source; validated eagerly so a bad run config fails at launch."""

    n_hosts: int = 20
    interval_seconds: int = 60
    seed: int = 42
    anomaly_rate: float = 0.01  # target expected fraction of anomalous rows
    anomaly_types: tuple[str, ...] = ANOMALY_TYPES
    noise_level: float = 1.0  # multiplier on the observation noise
    drift: DriftConfig | None = None  # unlabeled distribution drift from a date on

    def __post_init__(self) -> None:
        # Accept any sequence (e.g. a list from YAML) but store a tuple to stay hashable.
        object.__setattr__(self, "anomaly_types", tuple(self.anomaly_types))
        if isinstance(self.n_hosts, bool) or not isinstance(self.n_hosts, int) or self.n_hosts < 1:
            raise ValueError(f"n_hosts={self.n_hosts!r}: must be an integer >= 1")
        iv = self.interval_seconds
        if (
            isinstance(iv, bool)
            or not isinstance(iv, int)
            or not 1 <= iv <= _SECONDS_PER_DAY
            or _SECONDS_PER_DAY % iv
        ):
            raise ValueError(
                f"interval_seconds={iv!r}: must be an integer in [1, 86400] that divides 86400 "
                "(e.g. 10, 60, 300, 3600)"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r}: must be an integer >= 0")
        if not 0.0 <= self.anomaly_rate < 0.5:
            raise ValueError(f"anomaly_rate={self.anomaly_rate!r}: must be in [0, 0.5)")
        types = self.anomaly_types
        unknown = [t for t in types if t not in ANOMALY_TYPES]
        if not types or unknown or len(set(types)) != len(types):
            raise ValueError(
                f"anomaly_types={types!r}: must be a non-empty subset of {ANOMALY_TYPES} "
                "without duplicates"
            )
        if not self.noise_level >= 0.0:  # also rejects NaN
            raise ValueError(f"noise_level={self.noise_level!r}: must be >= 0")
        if isinstance(self.drift, dict):
            object.__setattr__(self, "drift", DriftConfig(**self.drift))
        if self.drift is not None and not isinstance(self.drift, DriftConfig):
            raise ValueError(f"drift={self.drift!r}: must be a DriftConfig, a dict or None")


DEFAULT_CONFIG = GeneratorConfig()


@dataclass(frozen=True)
class _Hosts:
    """Per-host attributes, arrays of shape (n_hosts,)."""

    ids: np.ndarray
    regions: np.ndarray
    projects: np.ndarray
    base: np.ndarray  # typical load (utilisation fraction)
    peak_utc: np.ndarray  # hour (UTC) of the daily peak: local ~14:00 plus jitter
    amp: np.ndarray  # daily seasonality amplitude
    weekend: np.ndarray  # weekend load factor
    capacity: np.ndarray  # requests/s at full load
    cpu_idle: np.ndarray  # cpu_util at zero load
    mem_base: np.ndarray
    disk_base: np.ndarray
    disk_gain: np.ndarray
    kb_in: np.ndarray  # KB received per request
    kb_out: np.ndarray  # KB sent per request
    lat0: np.ndarray  # latency at zero load (ms)
    err0: np.ndarray  # baseline error rate
    sigma: np.ndarray  # (n_hosts, 8) nominal observation-noise std per feature


def _host_attributes(seed: int, n_hosts: int) -> _Hosts:
    """Draw each host from its own (seed, index) stream so hosts are stable across days/sizes."""
    n_draws = 16
    u = np.empty((n_hosts, n_draws))
    for i in range(n_hosts):
        u[i] = np.random.default_rng([seed, _HOST_SALT, i]).random(n_draws)
    region_idx = np.minimum((u[:, 0] * len(REGIONS)).astype(int), len(REGIONS) - 1)
    project_idx = np.minimum((u[:, 1] * len(PROJECTS)).astype(int), len(PROJECTS) - 1)
    regions = np.asarray(REGIONS, dtype=object)[region_idx]
    offsets = np.array([_REGION_UTC_OFFSET[r] for r in REGIONS])[region_idx]
    base = 0.2 + 0.3 * u[:, 2]
    capacity = 250.0 * np.exp(u[:, 6])  # ~250 .. ~680 req/s
    cpu_idle = 3.0 + 7.0 * u[:, 7]
    mem_base = 25.0 + 35.0 * u[:, 8]
    disk_base = 50.0 + 150.0 * u[:, 9]
    disk_gain = 300.0 + 500.0 * u[:, 10]
    kb_in = 1.0 + 4.0 * u[:, 11]
    kb_out = 8.0 + 32.0 * u[:, 12]
    lat0 = 8.0 + 32.0 * u[:, 13]
    err0 = 0.001 + 0.004 * u[:, 14]
    sigma = np.column_stack(
        [
            np.full(n_hosts, 2.5),  # cpu_util, percentage points
            np.full(n_hosts, 1.0),  # mem_util
            0.05 * disk_gain,  # disk_io
            0.05 * capacity * kb_in,  # net_in
            0.05 * capacity * kb_out,  # net_out
            0.1 * lat0 / (1.0 - base),  # latency_ms
            0.25 * err0,  # error_rate
            0.04 * capacity,  # request_rate
        ]
    )
    return _Hosts(
        ids=np.array([f"host-{i:03d}" for i in range(n_hosts)], dtype=object),
        regions=regions,
        projects=np.asarray(PROJECTS, dtype=object)[project_idx],
        base=base,
        peak_utc=(14.0 + 3.0 * (u[:, 3] - 0.5) - offsets) % 24.0,
        amp=0.3 + 0.3 * u[:, 4],
        weekend=0.55 + 0.25 * u[:, 5],
        capacity=capacity,
        cpu_idle=cpu_idle,
        mem_base=mem_base,
        disk_base=disk_base,
        disk_gain=disk_gain,
        kb_in=kb_in,
        kb_out=kb_out,
        lat0=lat0,
        err0=err0,
        sigma=sigma,
    )


def _parse_day(day: dt.date | str) -> dt.date:
    """Accept a date (or datetime) or a strict ISO 'YYYY-MM-DD' partition key."""
    if isinstance(day, dt.datetime):
        return day.date()
    if isinstance(day, dt.date):
        return day
    if isinstance(day, str):
        if _DAY_RE.match(day):
            try:
                return dt.date.fromisoformat(day)
            except ValueError:
                pass
        raise ValueError(f"day={day!r}: expected a date or an ISO date string 'YYYY-MM-DD'")
    raise TypeError(f"day must be a datetime.date or a 'YYYY-MM-DD' string, got {type(day)!r}")


def _smooth(
    rng: np.random.Generator, n_hosts: int, seconds: np.ndarray, spacing_s: float
) -> np.ndarray:
    """Smooth unit-variance noise: random knots every spacing_s, cosine-interpolated.

    Cheap (two gathers per knot scale) and independent of the sampling interval.
    """
    n_knots = int(np.ceil(_SECONDS_PER_DAY / spacing_s)) + 2
    knots = rng.standard_normal((n_hosts, n_knots))
    pos = seconds / spacing_s
    i0 = pos.astype(np.int64)
    w = 0.5 - 0.5 * np.cos(np.pi * (pos - i0))
    return knots[:, i0] * (1.0 - w) + knots[:, i0 + 1] * w


def _trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along time (axis 1), shorter window at the start of the day."""
    csum = np.zeros((x.shape[0], x.shape[1] + 1))
    np.cumsum(x, axis=1, out=csum[:, 1:])
    idx = np.arange(1, x.shape[1] + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[:, idx] - csum[:, lo]) / (idx - lo)


def _load_driven(load: np.ndarray, h: _Hosts, sel: slice | int) -> dict[str, np.ndarray]:
    """Noise-free features that follow the load instantly (shared by generation and breaks).

    ``sel`` picks the hosts: ``slice(None)`` with ``load`` of shape (hosts, time), or one host
    index with a 1-D ``load`` segment.
    """

    def p(a: np.ndarray) -> np.ndarray:
        v = a[sel]
        return v[:, None] if isinstance(sel, slice) else v

    rr = p(h.capacity) * load
    util = np.minimum(load, 0.95)  # queueing: latency ~ 1/(1-u), capped at 20x idle
    return {
        "request_rate": rr,
        "cpu_util": p(h.cpu_idle) + 85.0 * load,
        "net_in": p(h.kb_in) * rr,
        "net_out": p(h.kb_out) * rr,
        "latency_ms": p(h.lat0) / (1.0 - util),
        "error_rate": p(h.err0) + 0.03 * load**4,
    }


def _latent_load(
    rng: np.random.Generator, h: _Hosts, day: dt.date, seconds: np.ndarray
) -> np.ndarray:
    """Load in (0, 1): base x daily sinusoid x weekend factor + smooth random variation."""
    n = len(h.base)
    hours = seconds / 3600.0
    daily = 1.0 + h.amp[:, None] * np.cos(2.0 * np.pi * (hours[None, :] - h.peak_utc[:, None]) / 24)
    # Weekend is judged in local time, so a region's weekend starts at its own midnight.
    offsets = np.array([_REGION_UTC_OFFSET[str(r)] for r in h.regions])
    local_day = day.toordinal() + np.floor((hours[None, :] + offsets[:, None]) / 24.0)
    is_weekend = (local_day + 6) % 7 >= 5  # date.weekday() == (ordinal + 6) % 7
    weekly = np.where(is_weekend, h.weekend[:, None], 1.0)
    wander = 0.08 * _smooth(rng, n, seconds, 7200.0) + 0.04 * _smooth(rng, n, seconds, 1200.0)
    load = h.base[:, None] * (daily * weekly + wander)
    return np.clip(load, 0.01, 0.98)


@dataclass(frozen=True)
class _Event:
    host: int
    start: int
    end: int  # exclusive
    kind: str


def _place_events(
    rng: np.random.Generator, config: GeneratorConfig, n_hosts: int, n_steps: int
) -> list[_Event]:
    """Random non-overlapping events (one normal row kept between events on a host).

    Events are drawn until the covered rows reach ``anomaly_rate * rows`` (stochastically
    rounded), so the expected anomalous fraction tracks the configured rate. Types are drawn with
    weight 1/sqrt(mean length): short spikes get many events (enough examples to learn from and
    to evaluate on) while long types still cover most anomalous rows.
    """
    if config.anomaly_rate <= 0.0 or n_steps < 2:
        return []
    cap = max(1, n_steps // 6)  # keep events short relative to a day with few rows
    lengths = {k: (min(lo, cap), min(hi, cap)) for k, (lo, hi) in _DURATION_ROWS.items()}
    types = config.anomaly_types
    type_len = np.array([(lengths[t][0] + lengths[t][1]) / 2.0 for t in types])
    weights = 1.0 / np.sqrt(type_len)
    weights /= weights.sum()
    mean_len = float(weights @ type_len)
    exact = config.anomaly_rate * n_hosts * n_steps
    target = int(exact) + int(rng.random() < exact - int(exact))
    taken = np.zeros((n_hosts, n_steps), dtype=bool)
    events: list[_Event] = []
    covered = 0
    attempts = 20 * int(target / mean_len) + 200
    for _ in range(attempts):
        if covered >= target:
            break
        kind = types[int(rng.choice(len(types), p=weights))]
        lo, hi = lengths[kind]
        length = min(int(rng.integers(lo, hi + 1)), n_steps - 1)
        host = int(rng.integers(n_hosts))
        start = int(rng.integers(1, n_steps - length + 1))  # row start-1 exists (stuck_sensor)
        end = start + length
        if taken[host, start - 1 : end + 1].any():
            continue
        taken[host, start:end] = True
        events.append(_Event(host, start, end, kind))
        covered += length
    return events


def _signed_magnitude(rng: np.random.Generator, seg: np.ndarray, col: int, size: float) -> float:
    """Random sign, flipped when the shifted segment would leave the feature's valid range."""
    sign = 1.0 if rng.random() < 0.5 else -1.0
    mean = float(seg[:, col].mean())
    if not _LOW[col] <= mean + sign * size <= _HIGH[col]:
        sign = -sign
    return sign * size


def _inject(
    rng: np.random.Generator,
    values: np.ndarray,
    load: np.ndarray,
    h: _Hosts,
    events: list[_Event],
    noise_level: float,
) -> None:
    """Apply each event's effect in place on values[feature, host, time] (float64, unclipped)."""
    n_feat = len(FEATURES)
    for ev in events:
        seg = values[:, ev.host, ev.start : ev.end].T  # (length, feature) view
        sd = h.sigma[ev.host]
        length = ev.end - ev.start
        if ev.kind == "spike":
            cols = rng.choice(n_feat, int(rng.integers(1, 4)), replace=False)
            seg[:, cols] += rng.uniform(5.0, 10.0, len(cols)) * sd[cols]
        elif ev.kind == "level_shift":
            for col in rng.choice(n_feat, int(rng.integers(1, 3)), replace=False):
                seg[:, col] += _signed_magnitude(rng, seg, col, rng.uniform(3.0, 6.0) * sd[col])
        elif ev.kind == "stuck_sensor":
            cols = rng.choice(n_feat, int(rng.integers(1, 4)), replace=False)
            # Freeze at the clipped previous value so the repeat survives the final clip exactly.
            prev = np.clip(values[cols, ev.host, ev.start - 1], _LOW[cols], _HIGH[cols])
            seg[:, cols] = prev
        elif ev.kind == "noise_burst":
            cols = rng.choice(n_feat, int(rng.integers(2, 5)), replace=False)
            factor = rng.uniform(5.0, 8.0)
            # Total noise std becomes factor x max(noise_level, 1) x nominal sigma.
            level = max(noise_level, 1.0)
            extra = sd[cols] * np.sqrt((factor * level) ** 2 - noise_level**2)
            seg[:, cols] += rng.standard_normal((length, len(cols))) * extra
        elif ev.kind == "correlation_break":
            _break_correlation(rng, seg, load[ev.host, ev.start : ev.end], h, ev.host)
        elif ev.kind == "slow_drift":
            ramp = np.arange(1, length + 1) / length
            for col in rng.choice(n_feat, int(rng.integers(1, 3)), replace=False):
                seg[:, col] += ramp * _signed_magnitude(rng, seg, col, rng.uniform(4, 6) * sd[col])


def _break_correlation(
    rng: np.random.Generator, seg: np.ndarray, load: np.ndarray, h: _Hosts, host: int
) -> None:
    """Drive some load-following features from a fake load, keeping their noise.

    Busy host: either compute goes idle while traffic stays (cpu/latency from load 0.03) or
    traffic collapses while cpu stays busy. Quiet host: compute runs hot (load 0.8) while traffic
    stays low, so the break is visible at any time of day.
    """
    if float(load.mean()) >= 0.3:
        idle_compute = rng.random() < 0.5
        fake = np.full_like(load, 0.03)
        names = (
            ("cpu_util", "latency_ms") if idle_compute else ("request_rate", "net_in", "net_out")
        )
    else:
        fake = np.full_like(load, 0.8)
        names = ("cpu_util", "latency_ms")
    real = _load_driven(load, h, host)
    broken = _load_driven(fake, h, host)
    for name in names:
        seg[:, _F[name]] += broken[name] - real[name]


def _apply_drift(
    values: np.ndarray,
    noise: np.ndarray,
    h: _Hosts,
    drift: DriftConfig,
    day: dt.date,
    seconds: np.ndarray,
) -> None:
    """Shift, rescale the noise of, and add a new seasonal pattern to the chosen features."""
    # Phase from absolute time, so the new pattern is continuous across midnight.
    hours = (day.toordinal() * _SECONDS_PER_DAY + seconds) / 3600.0
    pattern = np.sin(2.0 * np.pi * hours / drift.seasonal_period_hours)
    for name in drift.features:
        i = _F[name]
        sd = h.sigma[:, i][:, None]
        values[i] += (drift.scale - 1.0) * noise[i] * sd  # noise already carries noise_level
        values[i] += drift.mean_shift * sd + drift.seasonal_amplitude * sd * pattern[None, :]


def generate_day(day: dt.date | str, config: GeneratorConfig = DEFAULT_CONFIG) -> pd.DataFrame:
    """One day of telemetry for every host, deterministic in (config, day).

    Rows are sorted by (host_id, timestamp) with a fresh RangeIndex; columns are ``COLUMNS``.
    """
    date = _parse_day(day)
    n_hosts = config.n_hosts
    n_steps = _SECONDS_PER_DAY // config.interval_seconds
    hosts = _host_attributes(config.seed, n_hosts)
    signal_rng, anomaly_rng = np.random.default_rng([config.seed, date.toordinal()]).spawn(2)

    seconds = np.arange(n_steps, dtype=np.float64) * config.interval_seconds
    load = _latent_load(signal_rng, hosts, date, seconds)
    driven = _load_driven(load, hosts, slice(None))
    # Memory follows load slowly (2 h trailing mean) and weakly.
    mem_window = max(1, round(7200 / config.interval_seconds))
    mem = hosts.mem_base[:, None] + 15.0 * _trailing_mean(load, mem_window)
    # Disk I/O: partly load, partly its own smooth background activity (batch jobs, compaction).
    background = np.clip(0.3 + 0.15 * _smooth(signal_rng, n_hosts, seconds, 3600.0), 0.0, 1.0)
    disk = hosts.disk_base[:, None] + hosts.disk_gain[:, None] * (0.7 * load + 0.3 * background)

    values = np.empty((len(FEATURES), n_hosts, n_steps))
    for name, clean in (("mem_util", mem), ("disk_io", disk), *driven.items()):
        values[_F[name]] = clean
    noise = signal_rng.standard_normal(values.shape, dtype=np.float32)
    noise *= config.noise_level
    values += noise * hosts.sigma.T[:, :, None]
    if config.drift is not None and config.drift.active_on(date):
        _apply_drift(values, noise, hosts, config.drift, date, seconds)

    events = _place_events(anomaly_rng, config, n_hosts, n_steps)
    _inject(anomaly_rng, values, load, hosts, events, config.noise_level)
    np.clip(values, _LOW[:, None, None], _HIGH[:, None, None], out=values)

    codes = np.zeros((n_hosts, n_steps), dtype=np.int8)
    for ev in events:
        codes[ev.host, ev.start : ev.end] = ANOMALY_TYPES.index(ev.kind) + 1
    codes_flat = codes.reshape(-1)
    type_names = np.array([NORMAL_TYPE, *ANOMALY_TYPES], dtype=object)

    day_start = pd.Timestamp(date).value  # ns since epoch, midnight UTC
    stamps = day_start + np.arange(n_steps, dtype=np.int64) * (config.interval_seconds * 10**9)
    timestamp = pd.DatetimeIndex(np.tile(stamps, n_hosts).view("datetime64[ns]"), tz="UTC")

    data: dict[str, object] = {
        "timestamp": timestamp,
        "host_id": np.repeat(hosts.ids, n_steps),
        "region": np.repeat(hosts.regions, n_steps),
        "project_id": np.repeat(hosts.projects, n_steps),
    }
    for i, name in enumerate(FEATURES):
        data[name] = values[i].reshape(-1).astype(np.float32)
    data["label"] = (codes_flat > 0).astype(np.int8)
    data["anomaly_type"] = type_names[codes_flat]
    return pd.DataFrame(data, columns=list(COLUMNS))
