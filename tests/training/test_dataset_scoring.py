"""Dataset scoring streamed a record batch at a time equals the whole table scored at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ds_assets.training.dataset_scoring import (
    EntityTails,
    LeadIn,
    TableScorer,
    lead_in_rows,
    score_frame,
    score_table,
)
from ds_assets.training.datasets import DatasetError
from ds_assets.training.graph_outputs import with_top_feature
from ds_serving.bundle import load_bundle, write_bundle
from ds_serving.scoring import Scorer, ScoringInputError
from tests.support.models import dense_autoencoder, window_model

FEATURES = ["f1", "f2", "f3"]
SMOOTHING = {
    "none": None,
    "k_of_n": {"k": 2, "n": 3},
    "rebaseline": {"k": 1, "n": 1, "rebaseline": {"end_ratio": 2.0, "raise_factor": 2.0,
                                                  "horizon": 4, "alpha": 0.5}},
}


# level adaptation: state with no bounded memory, so a lead-in is the whole table before
SMOOTHING_ADAPT = {**SMOOTHING, "adapt": {"k": 2, "n": 3, "adapt": {"rate": 0.2,
                                                                   "reference": 0.5}}}


def _scorer(tmp: Path, kind: str, smoothing: str, groups: bool = False,
            top_output: bool = False) -> Scorer:
    return _scorers(tmp, kind, smoothing, groups, top_output)[0]


def _scorers(tmp: Path, kind: str, smoothing: str, groups: bool = False,
             *top_output: bool) -> list[Scorer]:
    """Scorers of one bundle: with the graph's top-feature output or without, in order."""
    window = 4 if kind == "temporal" else None
    model = (window_model(len(FEATURES), 4) if window else
             dense_autoencoder(len(FEATURES), (4, 2), seed=1))
    bundle = write_bundle(
        tmp / "models", f"{kind}-{smoothing}-{groups}", model, kind="window" if window else
        "dense_ae", features=FEATURES, threshold=0.8 if window else 1.0,
        threshold_rule={"rule": "fixed"}, window=window, smoothing=SMOOTHING_ADAPT[smoothing],
        feature_groups={"a": ["f1", "f2"], "b": ["f3"]} if groups else None)
    loaded = load_bundle(bundle.path)
    graph = with_top_feature(loaded.model_path.read_bytes())
    return [Scorer.from_bundle(loaded, backend="cpu", graph=graph if top else None)
            for top in top_output]


def _table(n: int, hosts: int, seed: int) -> pd.DataFrame:
    """Hosts interleaved at random, each in time order, with labels and ids as a day has them."""
    rng = np.random.default_rng(seed)
    host = rng.integers(0, hosts, n)
    times = np.empty(n, dtype="datetime64[ns]")
    start = np.datetime64("2026-12-01T00:00:00", "ns")
    for h in range(hosts):  # each host's rows 10 s apart, in the order they appear
        at = np.flatnonzero(host == h)
        times[at] = start + np.arange(len(at)) * np.timedelta64(10, "s")
    frame = pd.DataFrame({
        "timestamp": times, "host_id": [f"host-{h}" for h in host],
        "region": np.where(host % 2 == 0, "eu", "us"), "project_id": "p1",
        "label": (rng.random(n) < 0.05).astype(np.int8),
        "anomaly_type": "normal",
        **{f: rng.normal(size=n).astype(np.float32) * (1 + 2 * (rng.random(n) < 0.1))
           for f in FEATURES},
    })
    return frame


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["point", "temporal"]), smoothing=st.sampled_from(list(SMOOTHING)),
       groups=st.booleans(), batch_rows=st.integers(1, 90), seed=st.integers(0, 1000),
       missing_ids=st.booleans())
def test_a_table_streamed_in_batches_scores_as_the_whole_frame(
    tmp_path_factory: pytest.TempPathFactory, kind: str, smoothing: str, groups: bool,
    batch_rows: int, seed: int, missing_ids: bool,
) -> None:
    """Streamed through the dataset path (top feature from the graph, ids read as Parquet's
    dictionary, batches pipelined) against the whole frame scored with plain ``run``."""
    tmp = tmp_path_factory.mktemp("t")
    frame = _table(300, hosts=7, seed=seed)
    if missing_ids:  # a host without an id is one more entity, in both paths
        frame.loc[frame["host_id"] == "host-3", "host_id"] = None
    frame.to_parquet(tmp / "raw.parquet", index=False)
    plain, scorer = _scorers(tmp, kind, smoothing, groups, False, True)
    whole = score_frame(plain, frame)
    # a frame in parts (each prepared while the one before is in the graph) scores as one
    pd.testing.assert_frame_equal(score_frame(plain, frame, part_rows=batch_rows), whole)
    rows = score_table(scorer, tmp / "raw.parquet", tmp / "scored.parquet",
                       batch_rows=batch_rows, chunk_rows=16)
    streamed = pd.read_parquet(tmp / "scored.parquet")
    assert rows == len(frame)
    pd.testing.assert_frame_equal(streamed, whole, check_dtype=False)
    assert streamed["score"].dtype == np.float32 and streamed["is_anomaly"].dtype == bool
    if kind == "temporal":  # warm-up rows per host: W - 1 unscored, across batch boundaries
        assert streamed["score"].isna().sum() == 7 * 3


def test_a_row_going_back_in_a_later_batch_is_named_by_its_table_row(tmp_path: Path) -> None:
    scorer = _scorer(tmp_path, "point", "none")
    frame = _table(200, hosts=3, seed=1)
    host0 = np.flatnonzero(frame["host_id"] == "host-0")
    late = host0[host0 > 150][0]  # a host-0 row in the last batch goes before its first row
    frame.loc[late, "timestamp"] = frame["timestamp"].iloc[host0[0]] - np.timedelta64(1, "s")
    frame.to_parquet(tmp_path / "raw.parquet", index=False)
    with pytest.raises(DatasetError, match=rf"row {late} \(host_id 'host-0'.*time order"):
        score_table(scorer, tmp_path / "raw.parquet", tmp_path / "out.parquet", batch_rows=150)
    with pytest.raises(DatasetError, match=rf"row {late} "):
        score_frame(scorer, frame)
    assert not (tmp_path / "out.parquet").exists()  # nothing half-written


def test_a_failed_table_leaves_the_previous_output_as_it_was(tmp_path: Path) -> None:
    scorer = _scorer(tmp_path, "point", "none")
    good = _table(100, hosts=2, seed=2)
    good.to_parquet(tmp_path / "raw.parquet", index=False)
    score_table(scorer, tmp_path / "raw.parquet", tmp_path / "out.parquet")
    before = (tmp_path / "out.parquet").read_bytes()
    bad = _table(100, hosts=2, seed=3)
    bad.loc[80, "f2"] = np.inf
    bad.to_parquet(tmp_path / "raw.parquet", index=False)
    with pytest.raises(ScoringInputError, match=r"chunk from row 64: row 16, feature 'f2'"):
        score_table(scorer, tmp_path / "raw.parquet", tmp_path / "out.parquet", batch_rows=64)
    assert (tmp_path / "out.parquet").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp left


@pytest.mark.parametrize("first", ["non-finite", "time order"])
def test_errors_of_pipelined_batches_are_raised_in_row_order(tmp_path: Path, first: str) -> None:
    """Batch 2's graph and time check run while batch 1 finishes: the error of the earlier
    rows is still the one raised, whichever kind each batch has."""
    scorer = _scorer(tmp_path, "point", "none", top_output=True)
    frame = _table(200, hosts=2, seed=7)
    host0 = np.flatnonzero(frame["host_id"] == "host-0")
    nan_row, back = (30, host0[host0 >= 100][0]) if first == "non-finite" else (150, host0[1])
    assert (back >= 100) == (first == "non-finite")  # each error in the batch it should be in
    frame.loc[nan_row, "f2"] = np.nan
    frame.loc[back, "timestamp"] = frame["timestamp"].iloc[host0[0]] - np.timedelta64(1, "s")
    frame.to_parquet(tmp_path / "raw.parquet", index=False)
    expected = ((ScoringInputError, r"row 30, feature 'f2'") if first == "non-finite"
                else (DatasetError, rf"row {back} \(host_id 'host-0'"))
    with pytest.raises(expected[0], match=expected[1]):
        score_table(scorer, tmp_path / "raw.parquet", tmp_path / "out.parquet", batch_rows=100)
    assert not (tmp_path / "out.parquet").exists()
    with pytest.raises(expected[0], match=expected[1]):  # a frame in parts alike
        score_frame(scorer, frame, part_rows=100)


def test_the_graph_top_feature_is_numpys_argmax_ties_included() -> None:
    """``with_top_feature``'s ArgMax names the first of tied features, as ``np.argmax`` does,
    and adds nothing to a graph that has it."""
    import onnx
    import onnxruntime as ort

    from ds_serving.bundle import INPUT_NAME, OUTPUT_NAMES
    from tests.support.graphs import sum_graph

    with_top = with_top_feature(sum_graph(3))  # its feature errors are the features
    assert with_top_feature(with_top) == with_top
    rows = np.array([[1, 1, 0], [0, 2, 2], [0, 0, 0], [0.5, 3, 1]], np.float32)
    session = ort.InferenceSession(with_top, providers=["CPUExecutionProvider"])
    errors, top = session.run([OUTPUT_NAMES[1], "top_feature"], {INPUT_NAME: rows})
    assert top.tolist() == np.argmax(errors, axis=1).tolist() == [0, 1, 0, 1]
    model = onnx.load_from_string(sum_graph(3))
    del model.graph.output[1]  # a graph without feature errors cannot name a top feature
    with pytest.raises(ValueError, match="no 'feature_errors' output"):
        with_top_feature(model.SerializeToString())


def test_a_table_without_a_feature_is_refused_up_front(tmp_path: Path) -> None:
    scorer = _scorer(tmp_path, "point", "none")
    _table(10, hosts=1, seed=4).drop(columns="f3").to_parquet(tmp_path / "raw.parquet")
    with pytest.raises(DatasetError, match=r"raw.parquet lacks feature column\(s\) \['f3'\]"):
        score_table(scorer, tmp_path / "raw.parquet", tmp_path / "out.parquet")


def test_chunks_fed_by_hand_keep_what_crosses_their_boundaries(tmp_path: Path) -> None:
    scorer = _scorer(tmp_path, "temporal", "k_of_n")
    frame = _table(120, hosts=4, seed=5)
    with TableScorer(scorer) as chunks:
        parts = [chunks.score(frame.iloc[a:b]) for a, b in ((0, 50), (50, 51), (51, 120))]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True),
                                  score_frame(scorer, frame))
    assert chunks.rows_seen == 120


def test_the_summary_of_streamed_batches_is_the_summary_of_the_whole_table(
    tmp_path: Path,
) -> None:
    from ds_assets.reporting.analytics import (
        ScoredSummary,
        error_distribution,
        hourly_series,
        top_k_markdown,
    )

    scorer = _scorer(tmp_path, "point", "k_of_n")
    frame = _table(3000, hosts=9, seed=6)
    frame["anomaly_type"] = np.where(frame["label"] == 1, "spike", "normal")
    frame["timestamp"] = frame["timestamp"].dt.tz_localize("UTC")
    frame.to_parquet(tmp_path / "raw.parquet", index=False)
    summary = ScoredSummary()
    score_table(scorer, tmp_path / "raw.parquet", tmp_path / "out.parquet", batch_rows=700,
                each=summary.add_table)
    whole = score_frame(scorer, frame)
    assert (summary.rows, summary.flagged) == (3000, int(whole["is_anomaly"].sum()))
    pd.testing.assert_frame_equal(summary.hourly(), hourly_series(whole, "score", "is_anomaly"))
    assert summary.top_k_markdown() == top_k_markdown(whole, "is_anomaly")
    for by in ("anomaly_type", "region", "project_id"):
        pd.testing.assert_frame_equal(summary.errors(by), error_distribution(whole, by),
                                      check_dtype=False, check_categorical=False)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["point", "temporal"]),
       smoothing=st.sampled_from(list(SMOOTHING_ADAPT)), batch_rows=st.integers(1, 90),
       split=st.integers(1, 299), seed=st.integers(0, 1000))
def test_a_day_led_in_by_the_day_before_scores_as_both_days_in_one(
    tmp_path_factory: pytest.TempPathFactory, kind: str, smoothing: str, batch_rows: int,
    split: int, seed: int,
) -> None:
    """Windows, k-of-n, re-baselining and level adaptation continue across the cut as if the
    two tables were one (the live scorer's view), with only ``lead_in_rows`` of each entity
    read from the table before where the state's memory is bounded."""
    tmp = tmp_path_factory.mktemp("t")
    both = _table(300, hosts=7, seed=seed)
    before, day = both.iloc[:split], both.iloc[split:].reset_index(drop=True)
    before.to_parquet(tmp / "before.parquet", index=False)
    day.to_parquet(tmp / "day.parquet", index=False)
    scorer = _scorer(tmp, kind, smoothing, top_output=True)
    rows = lead_in_rows(scorer)
    assert rows == (None if smoothing in ("rebaseline", "adapt") else
                    (3 if kind == "temporal" else 0) + (2 if smoothing in ("k_of_n", "adapt")
                                                        else 0))
    scored = score_table(scorer, tmp / "day.parquet", tmp / "scored.parquet",
                         batch_rows=batch_rows, lead_in=LeadIn(tmp / "before.parquet", rows))
    assert scored == len(day)  # lead-in rows are run, not counted or written
    whole = score_frame(scorer, both).iloc[split:].reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp / "scored.parquet"), whole,
                                  check_dtype=False)
    # a frame with the rows before it in memory (the champion screen's days) alike
    pd.testing.assert_frame_equal(score_frame(scorer, day, before=before,
                                              part_rows=batch_rows), whole)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 12), group_rows=st.integers(1, 80), ids=st.sampled_from(
    ["text", "numbers", "some missing", "none"]), seed=st.integers(0, 1000))
def test_a_lead_in_is_each_entitys_last_rows_in_their_order(
    tmp_path_factory: pytest.TempPathFactory, rows: int, group_rows: int, ids: str, seed: int,
) -> None:
    """Whatever the row groups and id types, the rows a lead-in reads are pandas' tail of
    each entity (missing ids one entity), in the table's order; so are the rows ``tails``
    keeps as the table streams through ``score_table`` in batches of any size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = tmp_path_factory.mktemp("t")
    frame = _table(200, hosts=5, seed=seed)
    if ids == "numbers":
        frame["host_id"] = frame["host_id"].str[5:].astype(int)
    elif ids == "some missing":
        frame.loc[frame["host_id"] == "host-2", "host_id"] = None
    elif ids == "none":
        frame = frame.drop(columns=["host_id"])
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp / "before.parquet",
                   row_group_size=group_rows)
    scorer = _scorer(tmp, "point", "none")
    got = pa.Table.from_batches(list(LeadIn(tmp / "before.parquet", rows).batches(scorer, 16)))
    keys = (frame["host_id"].fillna("<none>") if "host_id" in frame.columns
            else pd.Series(0, index=frame.index))
    want = frame[frame.groupby(keys.to_numpy()).cumcount(ascending=False) < rows]
    columns = [c for c in ("timestamp", "host_id") if c in frame.columns] + FEATURES
    pd.testing.assert_frame_equal(got.to_pandas(), want[columns].reset_index(drop=True),
                                  check_dtype=False)
    tails = EntityTails(rows, FEATURES, slack_rows=seed % 40)  # merged early and often
    score_table(scorer, tmp / "before.parquet", tmp / "scored.parquet",
                batch_rows=max(1, group_rows // 3 + seed % 7), tails=tails)
    kept = tails.table()
    assert kept is not None
    pd.testing.assert_frame_equal(kept.to_pandas(), want[columns].reset_index(drop=True),
                                  check_dtype=False)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6000), entities=st.integers(1, 40), rows=st.integers(1, 20),
       layout=st.sampled_from(["grouped", "interleaved", "random", "one early"]),
       seed=st.integers(0, 99))
def test_each_entitys_last_rows_are_found_in_any_layout(n: int, entities: int, rows: int,
                                                       layout: str, seed: int) -> None:
    """Sorted by id (a run per entity), interleaved (a run per row), at random, or one entity
    only in the first rows (found after many blocks of runs): the kept rows are pandas' tail
    of each entity, whether runs are scanned from the end or rows ranked per entity."""
    from ds_assets.training.dataset_scoring import _keep_entity_tails

    rng = np.random.default_rng(seed)
    codes = rng.integers(0, entities, n)
    if layout == "grouped":
        codes = np.sort(codes)
    elif layout == "interleaved":
        codes = np.arange(n) % entities
    elif layout == "one early":  # entity 0 first, then two others alternating
        codes = np.r_[np.zeros(min(n, 1 + seed % 5), np.int64), 1 + np.arange(n) % 2][:n]
    keep = np.zeros(n, bool)
    _keep_entity_tails(codes, rows, keep)
    want = pd.Series(codes).groupby(codes).cumcount(ascending=False).to_numpy() < rows
    assert (keep == want).all()


def test_the_champion_screen_of_a_day_continues_from_the_day_before(tmp_path: Path) -> None:
    """An anomaly in each host's first rows of an unlabeled day: scored only when the window
    holds the day before, as the day's scored_telemetry scores them."""
    from ds_assets.training.contamination import champion_screen

    both = _table(400, hosts=2, seed=8)
    both[FEATURES] = 0.0
    before, day = both.iloc[:200], both.iloc[200:].reset_index(drop=True)
    first = day.groupby("host_id").head(2).index  # each host's first two rows of the day
    day.loc[first, FEATURES] = 50.0
    window = 4
    bundle = write_bundle(tmp_path / "models", "screen", window_model(len(FEATURES), window),
                          kind="window", features=FEATURES, threshold=0.5,
                          threshold_rule={"rule": "fixed"}, window=window).path
    fresh, _ = champion_screen(bundle, day, max_flag_rate=1.0)
    assert not fresh[first].any()  # each host's first W - 1 rows have no score
    led, report = champion_screen(bundle, day, max_flag_rate=1.0, before=before)
    assert report["used"] and led[first].all()
    # a day before without host ids cannot be matched to the day's hosts: gone without
    unmatched, _ = champion_screen(bundle, day, max_flag_rate=1.0,
                                   before=before.drop(columns=["host_id"]))
    assert (unmatched == fresh).all()


def test_a_led_in_day_scores_each_hosts_first_rows_that_a_fresh_day_leaves_out(
    tmp_path: Path,
) -> None:
    both = _table(200, hosts=4, seed=5)
    both.iloc[:100].to_parquet(tmp_path / "before.parquet", index=False)
    both.iloc[100:].to_parquet(tmp_path / "day.parquet", index=False)
    scorer = _scorer(tmp_path, "temporal", "none", top_output=True)
    score_table(scorer, tmp_path / "day.parquet", tmp_path / "fresh.parquet")
    score_table(scorer, tmp_path / "day.parquet", tmp_path / "led.parquet",
                lead_in=LeadIn(tmp_path / "before.parquet", lead_in_rows(scorer)))
    assert pd.read_parquet(tmp_path / "fresh.parquet")["score"].isna().sum() == 4 * 3
    assert pd.read_parquet(tmp_path / "led.parquet")["score"].notna().all()


def test_a_lead_in_that_goes_past_the_day_is_refused_naming_both_tables(tmp_path: Path) -> None:
    """Rows of the table before that are later than the day's own break the time order: the
    error says which table and how to go on; nothing is written."""
    both = _table(200, hosts=2, seed=6)
    both.iloc[100:].to_parquet(tmp_path / "before.parquet", index=False)
    both.iloc[:100].to_parquet(tmp_path / "day.parquet", index=False)
    scorer = _scorer(tmp_path, "temporal", "none", top_output=True)
    with pytest.raises(DatasetError, match=r"row 0 \(host_id 'host-\d', .*\) is earlier than "
                                           r"the last row of the same host_id in before.parquet: "
                                           r"that table must end before this one begins"):
        score_table(scorer, tmp_path / "day.parquet", tmp_path / "out.parquet",
                    lead_in=LeadIn(tmp_path / "before.parquet", None))
    assert not (tmp_path / "out.parquet").exists()


def test_a_lead_in_table_without_a_feature_is_refused(tmp_path: Path) -> None:
    both = _table(100, hosts=2, seed=7)
    both.iloc[:50].drop(columns=["f2"]).to_parquet(tmp_path / "before.parquet", index=False)
    both.iloc[50:].to_parquet(tmp_path / "day.parquet", index=False)
    scorer = _scorer(tmp_path, "temporal", "none", top_output=True)
    with pytest.raises(DatasetError, match=r"lead-in rows from before.parquet \(the table "
                                           r"before day.parquet\): .*lacks feature column\(s\) "
                                           r"\['f2'\].*without a lead-in"):
        score_table(scorer, tmp_path / "day.parquet", tmp_path / "out.parquet",
                    lead_in=LeadIn(tmp_path / "before.parquet", 3))


def test_entities_new_in_later_parts_get_their_own_thresholds_and_time_order(
    tmp_path: Path,
) -> None:
    """Entity ids are coded a part at a time, with their thresholds and latest times kept by
    code: hosts first seen in a later part are flagged against their own threshold, and a host
    whose rows in a later part go back in time is refused, naming the row."""
    from ds_serving.policy import ScoringPolicy

    frame = _table(400, hosts=6, seed=11).sort_values("timestamp", kind="stable",
                                                      ignore_index=True)
    late = (frame.index > 200) & frame["host_id"].isin(["host-0", "host-1"]).to_numpy()
    frame.loc[late, "host_id"] = [f"host-new-{i % 5}" for i in np.flatnonzero(late)]
    scorer = _scorer(tmp_path, "dense", "none")
    own = {h: float(t) for h, t in zip(sorted(frame["host_id"].unique()),
                                       np.linspace(0.2, 3.0, frame["host_id"].nunique()),
                                       strict=True)}
    policy = ScoringPolicy(1.0, entity_thresholds=own)
    scored = score_frame(scorer, frame, policy=policy, part_rows=64)
    expected = scored["score"].to_numpy() > frame["host_id"].map(own).to_numpy()
    assert (scored["is_anomaly"].to_numpy() == expected).all() and expected.any()

    back = _table(300, hosts=3, seed=12)
    host = back.index[back["host_id"] == "host-1"]
    later = host[host > 200][0]  # the part after the first two: earlier than its last row
    back.loc[later, "timestamp"] = back["timestamp"].min() - pd.Timedelta(seconds=1)
    with pytest.raises(DatasetError, match=rf"row {later} \(host_id 'host-1', .*\) is earlier "
                                           r"than the row before it of the same host_id"):
        score_frame(scorer, back, part_rows=100)


@pytest.mark.parametrize(("ids", "hosts"), [([1, None], 2), ([1.5, None], 2),
                                            (["a", None], 2), ([0.0, -0.0], 1)])
def test_ids_of_any_type_keep_one_code_each_across_parts_and_batches(
    tmp_path: Path, ids: list[object], hosts: int,
) -> None:
    """Numeric ids beside a missing one: a pandas index of the ids seen became float and no
    longer found ``None``, so the host without an id got a second code, its windows restarted
    and the next part failed on a duplicate index. Scores equal the whole table's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 24
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-12-01", periods=n, freq="10s"),
                          "host_id": pd.Series(ids * (n // 2), dtype=object),
                          **{f: rng.normal(size=n).astype(np.float32) for f in FEATURES}})
    scorer = _scorer(tmp_path, "temporal", "k_of_n", top_output=True)
    whole = score_frame(scorer, frame, part_rows=n)["score"].to_numpy()
    assert np.isnan(whole).sum() == 3 * hosts  # W - 1 unscored rows per host (0.0 == -0.0)
    for part in (4, 6):
        np.testing.assert_array_equal(score_frame(scorer, frame, part_rows=part)["score"],
                                      whole)
    pq.write_table(pa.table({"timestamp": pa.array(frame["timestamp"]),
                             "host_id": pa.array(ids * (n // 2)),
                             **{f: pa.array(frame[f]) for f in FEATURES}}),
                   tmp_path / "day.parquet")
    for batch in (n, 4, 6):
        score_table(scorer, tmp_path / "day.parquet", tmp_path / "out.parquet",
                    batch_rows=batch)
        np.testing.assert_array_equal(pd.read_parquet(tmp_path / "out.parquet")["score"],
                                      whole)
