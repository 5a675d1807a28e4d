"""Anomalies injected into real rows: seeded, on each entity's own scale, never overlapping."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ds_assets.training.injection import INJECTED_TYPES, inject_anomalies, robust_scale
from tests.support.training import FEATURES, correlated_rows


def _rows(hosts: int = 3, n: int = 300) -> pd.DataFrame:
    frames = []
    for h in range(hosts):
        values = correlated_rows(n, seed=h) * (1 + h)  # each host on its own scale
        frame = pd.DataFrame(values, columns=FEATURES)
        frame.insert(0, "host_id", f"h{h}")
        frame.insert(0, "timestamp", pd.date_range("2026-11-01", periods=n, freq="5min",
                                                   tz="UTC"))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_injection_is_seeded_and_touches_only_its_events() -> None:
    rows = _rows()
    a = inject_anomalies(rows, FEATURES, seed=3, events_per_entity=6)
    b = inject_anomalies(rows, FEATURES, seed=3, events_per_entity=6)
    c = inject_anomalies(rows, FEATURES, seed=4, events_per_entity=6)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert not a.frame.equals(c.frame)
    assert a.events == 18 and set(a.kinds) == set(INJECTED_TYPES)  # every type appears
    outside = a.labels == 0
    pd.testing.assert_frame_equal(a.frame[outside], rows[outside])  # nothing else changed
    assert (a.types[outside] == "none").all() and (a.types[~outside] != "none").all()
    pd.testing.assert_frame_equal(rows, _rows())  # the input is not modified


def test_events_are_on_each_entitys_own_scale() -> None:
    rows = _rows()
    injected = inject_anomalies(rows, FEATURES, seed=1, events_per_entity=6)
    for host in ("h0", "h2"):
        mine = (rows["host_id"] == host).to_numpy()
        scale = robust_scale(rows.loc[mine, FEATURES].to_numpy(np.float64))
        at = mine & (injected.types == "spike")
        if at.any():
            jump = (injected.frame.loc[at, FEATURES].to_numpy() - rows.loc[at, FEATURES].to_numpy())
            moved = jump[:, jump.any(axis=0)] / scale[jump.any(axis=0)]
            assert ((moved >= 5 - 1e-3) & (moved <= 10 + 1e-3)).all()
    stuck = np.flatnonzero(injected.types == "stuck_sensor")
    first = stuck[: int(np.argmax(np.diff(stuck) > 1)) or len(stuck)]  # the first event's rows
    values = injected.frame.loc[first, FEATURES].to_numpy()
    assert len(first) > 1 and (values.std(axis=0) == 0).any()  # a column frozen in the event


def test_a_single_feature_gets_no_correlation_break() -> None:
    rows = _rows()[["timestamp", "host_id", "f1"]]
    injected = inject_anomalies(rows, ["f1"], seed=0, events_per_entity=10)
    assert "correlation_break" not in injected.kinds and injected.events == 30
    assert set(injected.counts()) == set(INJECTED_TYPES) - {"correlation_break"}


def test_a_stuck_sensor_freezes_at_its_own_hosts_last_value_when_hosts_interleave() -> None:
    """Rows sorted by time interleave the hosts: the frame's previous row is another host's.
    Frozen at that value, a "stuck" sensor jumped to the other host's level, which any model
    catches; the gate then never tested stuck sensors."""
    rows = _rows(hosts=2).sort_values(["timestamp", "host_id"], ignore_index=True)
    injected = inject_anomalies(rows, FEATURES, seed=0, events_per_entity=6)
    checked = 0
    for host in ("h0", "h1"):
        mine = np.flatnonzero((rows["host_id"] == host).to_numpy())
        stuck = np.flatnonzero(injected.types[mine] == "stuck_sensor")
        for start in stuck[np.r_[True, np.diff(stuck) > 1]]:  # each event's first row
            frozen = injected.frame.loc[mine[start], FEATURES].to_numpy(np.float64)
            before = rows.loc[mine[start - 1], FEATURES].to_numpy(np.float64)
            now = rows.loc[mine[start], FEATURES].to_numpy(np.float64)
            changed = frozen != now
            assert changed.any()
            np.testing.assert_allclose(frozen[changed], before[changed], rtol=1e-6)
            checked += 1
    assert checked >= 2
