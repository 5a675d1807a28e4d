"""bench.pyod_peer compares on the graph's own split and a day after the training window."""

from __future__ import annotations

import pandas as pd

from bench.pyod_peer import DAYS, PINS, rows


def test_the_peer_trains_on_normal_rows_and_is_judged_after_the_window() -> None:
    data = rows()
    assert (data["train"]["label"] == 0).all() and (data["val"]["label"] == 0).all()
    assert data["test"]["label"].sum() > 0 and data["held_out"]["label"].sum() > 0
    assert data["train"]["timestamp"].max() < data["test"]["timestamp"].min()
    held = pd.to_datetime(data["held_out"]["timestamp"], utc=True)
    assert (held.dt.date == DAYS[-1]).all()
    assert held.min() > data["test"]["timestamp"].max()
    assert all("==" in pin for pin in PINS)  # the throwaway environment is pinned
