"""Alert events: hysteresis (anti-flapping) and cooldown (storm control) on crafted sequences,
through the plain builder and through the `alerts` asset with a real bundle's policy."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ds_assets.assets.alerts import build_alerts_asset
from ds_assets.dataset import Dataset
from ds_assets.definitions import build_resources
from ds_assets.monitoring.alerts import (
    FALSE_ALARM_TYPE,
    UNKNOWN_TYPE,
    AlertInputError,
    alert_events,
)
from ds_assets.settings import Settings
from ds_serving.alerting import AlertPolicy
from ds_serving.bundle import promote, write_bundle
from tests.support.graphs import sum_graph

DAY = "2026-11-02"
FEATURES = ["f1", "f2"]


def _rows(flags: str, host: str = "h1", step_s: int = 60, types: str | None = None) -> pd.DataFrame:
    """One row per character: '1' flagged, '0' normal; scores rise with the flags."""
    n = len(flags)
    f = np.array([c == "1" for c in flags])
    frame = pd.DataFrame({
        "timestamp": pd.date_range(DAY, periods=n, freq=f"{step_s}s", tz="UTC"),
        "host_id": host,
        "region": "eu-west",
        "project_id": "proj-a",
        "score": np.where(f, 5.0, 0.5) + np.arange(n) * 1e-3,
        "is_anomaly": f,
        "top_feature": np.where(np.arange(n) % 4 == 0, "f2", "f1"),
    })
    if types is not None:
        frame["label"] = [int(c != ".") for c in types]
        frame["anomaly_type"] = ["none" if c == "." else {"s": "spike", "l": "level_shift"}[c]
                                 for c in types]
    return frame


POLICY = AlertPolicy(k=3, n=5, m=4, cooldown=600.0)


def test_isolated_flags_do_not_open_an_alert() -> None:
    events = alert_events(_rows("1000100010001000" * 4), POLICY)
    assert events.empty


def test_hysteresis_keeps_one_alert_through_short_gaps() -> None:
    # opens on the third flag of five, stays open through gaps shorter than m=4, then closes
    flags = "0" * 5 + "111" + "0010110" + "1001" + "0000" + "0" * 5
    events = alert_events(_rows(flags), POLICY)
    assert len(events) == 1
    alert = events.iloc[0]
    start = pd.Timestamp(DAY, tz="UTC")
    assert alert["start"] == start + pd.Timedelta(minutes=7)  # the third flagged row
    assert alert["end"] == start + pd.Timedelta(minutes=22)  # 4th normal row after row 18
    assert not alert["still_open"]
    assert alert["peak_score"] == pytest.approx(5.0 + 0.018)  # the last flagged row's score
    assert alert["top_features"].split(",")[0] == "f1"


def test_unscored_rows_neither_close_nor_extend_an_alert_like_the_live_scorer() -> None:
    frame = _rows("111" + "0" * 10)
    frame.loc[3:6, "score"] = np.nan  # no score (e.g. a temporal model without a full window)
    frame.loc[3:6, "is_anomaly"] = False
    events = alert_events(frame, POLICY)
    assert len(events) == 1
    # 4 unscored rows do not count as the m=4 normal rows that close it: rows 7..10 do
    assert events.iloc[0]["end"] == pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(minutes=10)


def test_an_infinite_score_opens_an_alert_as_in_the_live_scorer() -> None:
    """+inf (a feature of 1e30 overflows the error) is the most extreme score there is; only a
    NaN score means "no score". The asset dropped infinite rows and missed the alert."""
    frame = _rows("0000" + "111" + "0" * 6)
    frame.loc[4:6, "score"] = np.inf
    events = alert_events(frame, POLICY)
    assert len(events) == 1
    assert events.iloc[0]["start"] == pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(minutes=6)
    assert events.iloc[0]["peak_score"] == np.inf


def test_an_alert_counts_its_flagged_rows_among_its_rows() -> None:
    """Flagged rows were counted from the rows that opened the alert, rows from its start:
    3 flagged of 2 rows."""
    events = alert_events(_rows("111000"), AlertPolicy(k=3, n=5, m=1, cooldown=0))
    assert events[["rows", "flagged_rows"]].values.tolist() == [[2, 1]]


def test_cooldown_suppresses_a_storm_of_reopens() -> None:
    burst = "111" + "0000"  # opens, then closes after m=4 normal rows
    events = alert_events(_rows(burst * 6), AlertPolicy(k=3, n=5, m=4, cooldown=600.0))
    # bursts are 7 minutes apart: after a close, nothing re-opens for 10 minutes
    starts = events["start"].diff().dropna().dt.total_seconds()
    assert len(events) == 3
    assert (starts >= 600).all()
    no_cooldown = alert_events(_rows(burst * 6), AlertPolicy(k=3, n=5, m=4, cooldown=0.0))
    assert len(no_cooldown) == 6


@pytest.mark.parametrize("unit", ["ns", "us", "ms", "s"])
def test_cooldown_is_in_seconds_whatever_the_timestamp_unit(unit: str) -> None:
    # Parquet files written by other tools come back as datetime64[us] (or ms)
    rows = _rows("1110000" * 6)
    rows["timestamp"] = rows["timestamp"].astype(f"datetime64[{unit}, UTC]")
    events = alert_events(rows, POLICY)
    assert len(events) == 3
    assert (events["start"].diff().dropna().dt.total_seconds() >= 600).all()


def test_alert_open_at_the_end_of_the_day_is_reported_open() -> None:
    events = alert_events(_rows("000111101"), POLICY)
    assert len(events) == 1
    assert bool(events.iloc[0]["still_open"])
    assert events.iloc[0]["end"] == pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(minutes=8)


def test_entities_are_tracked_separately_and_rows_may_come_unsorted() -> None:
    a = _rows("00111000000", host="a")
    b = _rows("01001001001", host="b")  # never 3 of 5
    c = _rows("11100000111", host="c")
    mixed = pd.concat([a, b, c]).sample(frac=1.0, random_state=0)
    events = alert_events(mixed, AlertPolicy(k=3, n=5, m=4, cooldown=0.0))
    assert sorted(events["entity"]) == ["a", "c", "c"]


def test_anomaly_type_comes_from_labels_and_false_alarms_are_marked() -> None:
    rows = pd.concat([
        _rows("0111100000", host="x", types=".llll....."),
        _rows("0111100000", host="y", types=".........."),
    ])
    events = alert_events(rows, POLICY).set_index("entity")
    assert events.loc["x", "anomaly_type"] == "level_shift"
    assert events.loc["y", "anomaly_type"] == FALSE_ALARM_TYPE
    assert alert_events(_rows("0111100000"), POLICY).iloc[0]["anomaly_type"] == UNKNOWN_TYPE


def test_missing_columns_are_named() -> None:
    with pytest.raises(AlertInputError, match=r"\['is_anomaly'\]"):
        alert_events(_rows("111").drop(columns="is_anomaly"), POLICY)


def test_alerts_asset_uses_the_scoring_bundles_policy(
    settings: Settings, dataset: Dataset
) -> None:
    graph = [dg.AssetSpec("scored_telemetry", partitions_def=dataset.partitions_def),
             build_alerts_asset(dataset)]
    bundle = write_bundle(
        settings.models_dir, settings.model_name, sum_graph(len(FEATURES)), kind="sum",
        features=FEATURES, threshold=1.0, threshold_rule={"rule": "fixed"},
        alerting={"k": 2, "n": 3, "m": 2, "cooldown": 0.0},
    )
    promote(settings.models_dir, settings.model_name, bundle.manifest.version)
    scored = pd.concat([_rows("0110001100011", host="h1"), _rows("0000000000000", host="h2")])
    scored["model_version"] = bundle.manifest.version
    path = Path(settings.data_dir) / "assets" / "scored_telemetry" / f"{DAY}.parquet"
    path.parent.mkdir(parents=True)
    scored.to_parquet(path, index=False)

    def run(config: dict[str, object]) -> pd.DataFrame:
        result = dg.materialize(
            graph,
            partition_key=DAY,
            resources=build_resources(settings),
            run_config={"ops": {"alerts": {"config": config}}},
        )
        assert result.success
        meta = result.asset_materializations_for_node("alerts")[0].metadata
        assert meta["policy"].value["k"] == config.get("k", 2)
        source = meta["policy_source"].value
        assert source == (f"what-if on bundle v1: {{'alert_k': {config['k']}}}"
                          if "k" in config else "bundle v1")
        return pd.read_parquet(Path(settings.data_dir) / "assets" / "alerts" / f"{DAY}.parquet")

    bundle_policy = run({})  # k=2 of n=3, close after 2 normal rows: three alerts on h1
    assert list(bundle_policy["entity"]) == ["h1"] * 3
    assert int(bundle_policy["rows"].sum()) > 0
    stricter = run({"what_if": True, "k": 3})  # never 3 flags in 3 rows
    assert stricter.empty
    # an override without what_if would make offline alerts differ from live ones: refused
    with pytest.raises(dg.Failure, match=r"set what_if: true"):
        dg.materialize(
            graph,
            partition_key=DAY, resources=build_resources(settings),
            run_config={"ops": {"alerts": {"config": {"k": 3}}}},
        )


def test_a_bundle_alerting_config_that_cannot_work_names_its_run_config_fields() -> None:
    from ds_assets.assets.detector import BundleConfig
    from ds_serving.alerting import AlertPolicyError

    assert BundleConfig().alerting().to_dict() == {"k": 3, "n": 5, "m": 10, "cooldown": 600.0}
    with pytest.raises(AlertPolicyError, match=r"alerting.k must be between 1 and n=5 .*alert_k"):
        BundleConfig(alert_k=6).alerting()
