"""Windows, flag smoothing and alert hysteresis: policy code shared by dataset and live scoring."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_serving import windows as windows_module
from ds_serving.alerting import (
    AlertPolicy,
    AlertPolicyError,
    AlertTracker,
    EntityAlertState,
)
from ds_serving.smoothing import Smoothing, SmoothingError, StreamingSmoother, smooth_flags
from ds_serving.windows import EntityWindows, entity_groups, window_index


def _interleaved(n_per_entity: int, entities: int, n_features: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(entities), n_per_entity)
    order = rng.permutation(len(ids))
    # keep time order within each entity while interleaving entities
    ids = ids[np.argsort(order, kind="stable")]
    rows = rng.normal(size=(len(ids), n_features)).astype(np.float32)
    return np.array([f"h{i}" for i in ids]), rows


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["a", "b", "host-7", "é"]), st.just("")), min_size=1,
                max_size=80), st.booleans())
def test_entity_groups_small_and_large_paths_agree(keys: list[str], as_ints: bool) -> None:
    """Requests of up to 64 rows group with a dict, larger ones with np.unique: same groups,
    same order (by each entity's last row), same positions, plain Python keys."""
    values = np.asarray([len(k) for k in keys] if as_ints else keys)
    small = entity_groups(values)
    saved = windows_module._SMALL_GROUPING
    try:
        windows_module._SMALL_GROUPING = 0
        large = entity_groups(values)
    finally:
        windows_module._SMALL_GROUPING = saved
    assert [k for k, _ in small] == [k for k, _ in large]
    assert all(type(k) in (str, int) for k, _ in small)
    for (_, a), (_, b) in zip(small, large, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    lasts = [int(p[-1]) for _, p in small]
    assert lasts == sorted(lasts)  # per-entity state is touched in last-row order


def test_window_index_ends_at_each_row_after_warmup() -> None:
    ids = np.array(["a", "b", "a", "a", "b", "a", "b"])
    index = window_index(ids, 3)
    # a at positions 0,2,3,5 -> windows ending at 3 and 5; b at 1,4,6 -> window ending at 6
    assert sorted(index.ends.tolist()) == [3, 5, 6]
    by_end = dict(zip(index.ends.tolist(), index.starts.tolist(), strict=True))
    assert by_end[5] == [2, 3, 5]
    assert by_end[6] == [1, 4, 6]


@given(seed=st.integers(0, 10_000), n=st.integers(0, 2_000), entities=st.integers(1, 200),
       window=st.integers(1, 20), layout=st.sampled_from(["random", "sorted", "text"]))
@settings(max_examples=60, deadline=None)
def test_window_index_of_many_rows_is_the_per_entity_loop(
    seed: int, n: int, entities: int, window: int, layout: str,
) -> None:
    """Windows of a large batch come from one sliding view, in the order (groups as
    presented, rows in order) and types of one view per entity: training samples windows by
    position, so the order is part of the result."""
    from numpy.lib.stride_tricks import sliding_window_view

    from ds_serving.windows import group_positions

    keys: np.ndarray = np.random.default_rng(seed).integers(0, entities, n)
    if layout == "sorted":
        keys = np.sort(keys)
    elif layout == "text":
        keys = np.array([f"host-{k}" for k in keys], dtype=object)
    views = [sliding_window_view(p, window) for p in group_positions(keys) if len(p) >= window]
    got = window_index(keys, window)
    want_starts = np.concatenate(views) if views else np.empty((0, window), np.int64)
    want_ends = (np.concatenate([v[:, -1] for v in views]) if views
                 else np.empty(0, np.int64)).astype(np.int64)
    np.testing.assert_array_equal(got.ends, want_ends)
    np.testing.assert_array_equal(got.starts, want_starts)
    assert got.starts.dtype == want_starts.dtype and got.ends.dtype == np.int64


def test_window_longer_than_data_gives_no_windows() -> None:
    index = window_index(np.array(["a", "a"]), 3)
    assert index.ends.size == 0 and index.starts.shape == (0, 3)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_window_must_be_positive_integer(bad: float) -> None:
    with pytest.raises(ValueError, match="window must be a positive integer"):
        window_index(np.array(["a"]), bad)  # type: ignore[arg-type]


@given(
    window=st.integers(1, 6),
    split_points=st.lists(st.integers(0, 60), max_size=6),
    seed=st.integers(0, 1000),
)
@settings(max_examples=40, deadline=None)
def test_streaming_windows_equal_dataset_windows(
    window: int, split_points: list[int], seed: int
) -> None:
    ids, rows = _interleaved(15, 4, 3, seed)
    index = window_index(ids, window)
    expected = {int(e): rows[s] for e, s in zip(index.ends, index.starts, strict=True)}
    stream = EntityWindows(window, 3)
    got: dict[int, np.ndarray] = {}
    bounds = sorted({0, len(ids), *[min(p, len(ids)) for p in split_points]})
    for lo, hi in itertools.pairwise(bounds):
        pos, wins = stream.push(ids[lo:hi], rows[lo:hi])
        for p, w in zip(pos, wins, strict=True):
            got[lo + int(p)] = w
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value)


def test_entity_windows_bounded_by_max_entities() -> None:
    stream = EntityWindows(2, 1, max_entities=3)
    for i in range(10):
        stream.push(np.array([f"e{i}"]), np.ones((1, 1), np.float32))
    assert len(stream) == 3


def test_per_entity_state_evicts_the_least_recently_seen() -> None:
    """Windows, smoothing and alerts keep at most max_entities, dropping the entity seen least
    recently (seeing one again makes it the most recent); a dropped open alert stops counting."""
    stream = EntityWindows(3, 1, max_entities=2)
    one = np.ones((1, 1), np.float32)
    for key in ("a", "b", "a", "c"):  # "a" seen again before "c": "b" is the one dropped
        stream.push(np.array([key]), one)
    assert sorted(stream.entity_keys()) == ["a", "c"]

    smoother = StreamingSmoother(Smoothing(k=2, n=2), max_entities=2)
    for key in ("a", "b", "a", "c"):
        smoother.apply(np.array([True]), np.array([key]))
    assert sorted(smoother.entity_keys()) == ["a", "c"]
    assert smoother.apply(np.array([True]), np.array(["a"])).tolist() == [True]  # tail kept
    assert smoother.apply(np.array([True]), np.array(["b"])).tolist() == [False]  # fresh

    tracker = AlertTracker(AlertPolicy(k=1, n=1, m=5, cooldown=0), max_entities=2)
    for key in ("a", "b", "a"):
        tracker.update(np.array([key]), np.array([True]), np.array([9.0]))
    assert tracker.open_count() == 2
    tracker.update(np.array(["c"]), np.array([False]), np.array([0.0]))
    assert sorted(tracker.entity_keys()) == ["a", "c"] and tracker.open_count() == 1
    assert tracker.is_open("a") and not tracker.is_open("b")


def test_entity_windows_rejects_mismatched_ids() -> None:
    with pytest.raises(ValueError, match="entity ids for 2 rows"):
        EntityWindows(2, 1).push(np.array(["a"]), np.ones((2, 1), np.float32))


def test_smoothing_k_of_n_on_crafted_sequence() -> None:
    raw = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0], bool)
    got = smooth_flags(raw, Smoothing(k=2, n=3))
    # counts of flags in the last 3 rows: 1,1,2,2,2,1,0,1,1,1
    assert got.tolist() == [False, False, True, True, True, False, False, False, False, False]
    assert smooth_flags(raw, Smoothing()).tolist() == raw.tolist()


def test_smoothing_is_per_entity() -> None:
    ids = np.array(["a", "b", "a", "b"])
    raw = np.array([1, 1, 1, 0], bool)
    assert smooth_flags(raw, Smoothing(2, 2), ids).tolist() == [False, False, True, False]


@given(seed=st.integers(0, 1000), cut=st.integers(0, 60), k=st.integers(1, 4))
@settings(max_examples=40, deadline=None)
def test_streaming_smoothing_equals_dataset(seed: int, cut: int, k: int) -> None:
    ids, _ = _interleaved(15, 4, 1, seed)
    raw = np.random.default_rng(seed).random(len(ids)) < 0.4
    policy = Smoothing(k=k, n=4)
    smoother = StreamingSmoother(policy)
    first, rest = smoother.apply(raw[:cut], ids[:cut]), smoother.apply(raw[cut:], ids[cut:])
    got = np.concatenate([first, rest])
    np.testing.assert_array_equal(got, smooth_flags(raw, policy, ids))


@given(seed=st.integers(0, 10_000), entities=st.integers(1, 150), k=st.integers(1, 4),
       extra=st.integers(0, 4), max_entities=st.integers(1, 200), text=st.booleans())
@settings(max_examples=60, deadline=None)
def test_many_entities_smooth_as_one_loop_per_entity(
    seed: int, entities: int, k: int, extra: int, max_entities: int, text: bool,
) -> None:
    """A batch of many entities is smoothed with array operations over all of them; flags,
    each entity's tail and the recency order (so later evictions) are those of the loop over
    entities, batch after batch, empty batches and evictions included."""
    import ds_serving.smoothing as smoothing

    def apply(smoother: StreamingSmoother, raw: np.ndarray, keys: np.ndarray,
              many_groups: int) -> np.ndarray:
        default, smoothing.MANY_GROUPS = smoothing.MANY_GROUPS, many_groups
        try:
            return smoother.apply(raw, keys)
        finally:
            smoothing.MANY_GROUPS = default

    rng = np.random.default_rng(seed)
    policy = Smoothing(k=k, n=max(k, 2) + extra)
    arrays, loop = (StreamingSmoother(policy, max_entities) for _ in range(2))
    for _ in range(4):
        ids = rng.integers(0, entities, int(rng.integers(0, 300)))
        keys = np.array([f"host-{i}" for i in ids], dtype=object) if text else ids
        raw = rng.random(len(ids)) < 0.3
        got = apply(arrays, raw, keys, 0)  # arrays for any number of entities
        want = apply(loop, raw, keys, 10**9)  # the loop for any number
        np.testing.assert_array_equal(got, want)
        assert list(arrays.entity_keys()) == list(loop.entity_keys())
        for key in loop.entity_keys():
            np.testing.assert_array_equal(arrays._tails[key], loop._tails[key])
            # its own few flags, not a view that keeps the whole batch's array alive
            assert arrays._tails[key].base is None


@pytest.mark.parametrize(("data", "match"), [({"k": 3, "n": 2}, "between 1 and n=2"),
                                             ({"n": 0}, "n must be >= 1"),
                                             ({"q": 1}, "unknown smoothing key")])
def test_smoothing_rejects_bad_policy(data: dict, match: str) -> None:
    with pytest.raises(SmoothingError, match=match):
        Smoothing.from_dict(data)


def _state_of(tracker: AlertTracker, entity: str) -> EntityAlertState:
    state = tracker.state(entity)
    assert state is not None
    return state


def _run(tracker: AlertTracker, flags: list[int], entity: str = "h1") -> list[tuple[str, float]]:
    f = np.array(flags, bool)
    events = tracker.update(np.full(len(f), entity), f, f.astype(float))
    return [(e.kind, e.at) for e in events]


def test_alert_opens_after_k_of_n_and_closes_after_m_normal_rows() -> None:
    tracker = AlertTracker(AlertPolicy(k=2, n=3, m=2, cooldown=0))
    # row numbers are 1-based times when no timestamps are given
    events = _run(tracker, [1, 0, 0, 1, 0, 1, 1, 0, 0, 0])
    assert events == [("open", 6.0), ("close", 9.0)]


def test_single_isolated_flags_do_not_open_an_alert() -> None:
    tracker = AlertTracker(AlertPolicy(k=2, n=3, m=2, cooldown=0))
    assert _run(tracker, [1, 0, 0, 1, 0, 0, 1, 0, 0]) == []


def test_hysteresis_keeps_alert_open_through_short_normal_gaps() -> None:
    tracker = AlertTracker(AlertPolicy(k=2, n=2, m=3, cooldown=0))
    events = _run(tracker, [1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0])
    assert events == [("open", 2.0), ("close", 11.0)]  # no flapping on gaps shorter than m


def test_cooldown_suppresses_reopening_storm() -> None:
    policy = AlertPolicy(k=1, n=1, m=1, cooldown=5)
    tracker = AlertTracker(policy)
    flags = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0], bool)
    times = np.arange(10, dtype=float) * 1.0  # one row per second
    events = tracker.update(np.full(10, "h"), flags, flags.astype(float), times)
    kinds = [(e.kind, e.at) for e in events]
    # opens at t=0, closes at t=1; flags at 2 and 4 are inside the 5 s cooldown; reopens at 6
    assert kinds == [("open", 0.0), ("close", 1.0), ("open", 6.0), ("close", 7.0)]


def test_alert_state_survives_batch_boundaries_and_entities_are_independent() -> None:
    policy = AlertPolicy(k=2, n=3, m=2, cooldown=0)
    whole = AlertTracker(policy)
    seq = [1, 1, 0, 1, 0, 0, 1, 1, 0, 0]
    expected = _run(whole, seq)
    split = AlertTracker(policy)
    got = _run(split, seq[:3]) + _run(split, seq[3:7]) + _run(split, seq[7:])
    assert got == expected
    assert _run(split, [1, 1], entity="other") == [("open", 2.0)]
    assert split.is_open("other") and split.open_count() == 1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), timed=st.booleans(), entities=st.integers(17, 60),
       cuts=st.lists(st.integers(1, 400), min_size=1, max_size=3))
def test_a_batch_of_many_entities_alerts_as_row_by_row(
    seed: int, timed: bool, entities: int, cuts: list[int]
) -> None:
    """Batches of more than 16 entities take the quiet entities' numbers for the whole batch
    at once; events and state must be what one row at a time gives."""
    rng = np.random.default_rng(seed)
    n = 400
    ids = [f"e{i}" for i in rng.integers(0, entities, n)]
    flags = rng.random(n) < 0.15
    scores = rng.random(n) + flags
    scores[rng.random(n) < 0.1] = np.nan  # unscored rows neither flag nor count
    times = np.arange(n, dtype=np.float64) * 5.0 if timed else None
    policy = AlertPolicy(k=2, n=4, m=3, cooldown=30.0)
    batched, single = AlertTracker(policy), AlertTracker(policy)
    got: list[tuple[str, str, float, float, int]] = []
    for start, end in itertools.pairwise([0, *sorted(set(cuts)), n]):
        part = slice(start, end)
        got += [(e.entity, e.kind, e.at, e.peak_score, start + e.position)
                for e in batched.update(ids[part], flags[part], scores[part],
                                        None if times is None else times[part])]
    want = [(e.entity, e.kind, e.at, e.peak_score, i)
            for i in range(n)
            for e in single.update(ids[i:i + 1], flags[i:i + 1], scores[i:i + 1],
                                   None if times is None else times[i:i + 1])]
    assert got == want
    assert batched.states() == single.states()  # same states, in the same recency order
    assert batched.open_count() == single.open_count()


def test_an_alert_reopens_only_on_a_flagged_row_however_rows_are_batched() -> None:
    """With m < n the window still holds flags when an alert closes; a normal row after the
    close must not re-open it (it did when its batch held a flag elsewhere, and did not when
    the row came alone: the result depended on how a client batched its rows)."""
    policy = AlertPolicy(k=1, n=3, m=1, cooldown=0)
    seq = [1, 0, 0, 1]
    whole = _run(AlertTracker(policy), seq)
    split = AlertTracker(policy)
    parts = _run(split, seq[:2]) + _run(split, seq[2:3]) + _run(split, seq[3:])
    assert whole == parts == [("open", 1.0), ("close", 2.0), ("open", 4.0)]


def test_alert_event_reports_peak_score_and_batch_position() -> None:
    tracker = AlertTracker(AlertPolicy(k=1, n=1, m=1, cooldown=0))
    flags = np.array([0, 1, 1, 0], bool)
    scores = np.array([0.1, 2.0, 5.0, 0.2])
    events = tracker.update(np.array(["h"] * 4), flags, scores)
    assert [(e.kind, e.position) for e in events] == [("open", 1), ("close", 3)]
    assert events[1].peak_score == 5.0 and events[1].opened_at == 2.0


@pytest.mark.parametrize(("data", "match"), [({"k": 4, "n": 3}, "alerting.k"),
                                             ({"m": 0}, "alerting.m"),
                                             ({"cooldown": -1}, "cooldown"),
                                             ({"x": 1}, "unknown alerting key")])
def test_alert_policy_rejects_bad_values(data: dict, match: str) -> None:
    with pytest.raises(AlertPolicyError, match=match):
        AlertPolicy.from_dict(data)


def test_unscored_rows_neither_close_nor_open_alerts() -> None:
    tracker = AlertTracker(AlertPolicy(k=1, n=1, m=2, cooldown=0))
    events = tracker.update(np.array(["h"] * 6), np.array([1, 0, 0, 0, 0, 0], bool),
                            np.array([9.0, np.nan, np.nan, np.nan, 0.1, 0.1]))
    # only the two scored normal rows (positions 4, 5) count toward m=2
    assert [(e.kind, e.position) for e in events] == [("open", 0), ("close", 5)]
    # a smoothed flag on an unscored row is not a flag either
    fresh = AlertTracker(AlertPolicy(k=1, n=1, m=1, cooldown=0))
    assert fresh.update(np.array(["g"]), np.array([True]), np.array([np.nan])) == []


def test_one_time_base_per_entity() -> None:
    tracker = AlertTracker(AlertPolicy(k=1, n=1, m=1, cooldown=600))
    tracker.update(np.array(["h", "h"]), np.array([1, 0], bool), np.array([5.0, 0.0]),
                   np.array([1.7e9, 1.7e9 + 60]))
    with pytest.raises(ValueError, match="entity 'h' was sent with timestamps before"):
        tracker.update(np.array(["h", "x"]), np.ones(2, bool), np.full(2, 9.0))
    assert tracker.open_count() == 0  # refused before any change
    assert "x" not in tracker.entity_keys()
    tracker.update(np.array(["r"]), np.zeros(1, bool), np.zeros(1))
    with pytest.raises(ValueError, match="entity 'r' was sent without timestamps before"):
        tracker.update(np.array(["r"]), np.zeros(1, bool), np.zeros(1), np.array([1.0]))


def test_an_entitys_times_never_go_back() -> None:
    tracker = AlertTracker(AlertPolicy(k=1, n=1, m=1, cooldown=600))
    tracker.update(np.array(["h", "h"]), np.array([1, 0], bool), np.array([5.0, 0.0]),
                   np.array([100.0, 160.0]))
    assert _state_of(tracker, "h").closed_at == 160.0
    # a replay of older rows would make t - closed_at negative and lock re-opens out
    with pytest.raises(ValueError, match=r"entity 'h' row 1 at 50\.000 is earlier than its "
                                         r"previous row at 160\.000"):
        tracker.update(np.array(["g", "h"]), np.ones(2, bool), np.full(2, 9.0),
                       np.array([10.0, 50.0]))
    assert "g" not in tracker.entity_keys()  # refused before any change
    # within one batch too, per entity: other entities' times do not matter
    with pytest.raises(ValueError, match=r"entity 'x' row 2 at 5\.000 is earlier than its "
                                         r"previous row at 7\.000"):
        tracker.update(np.array(["x", "y", "x"]), np.zeros(3, bool), np.zeros(3),
                       np.array([7.0, 1.0, 5.0]))
    # equal times are accepted; later rows carry on from the last one seen
    tracker.update(np.array(["h", "h", "y"]), np.zeros(3, bool), np.zeros(3),
                   np.array([160.0, 220.0, 1.0]))
    assert _state_of(tracker, "h").last_time == 220.0 and _state_of(tracker, "y").last_time == 1.0


def test_checked_times_spare_update_the_second_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """``check_times`` hands its groups to ``update``: same events as an unchecked update,
    grouped once; a result for other times is not trusted (the update checks them itself)."""
    policy = AlertPolicy(k=2, n=3, m=2, cooldown=0)
    keys = np.array(["a", "b", "a", "a", "b", "a", "a"])
    flags = np.array([1, 1, 1, 0, 1, 0, 0], bool)
    scores = np.array([5.0, 6.0, 7.0, 0.1, 8.0, 0.2, 0.3])
    times = np.arange(7, dtype=np.float64) * 60
    plain = AlertTracker(policy).update(keys, flags, scores, times)
    tracker = AlertTracker(policy)
    checked = tracker.check_times(keys, times)
    assert [(k, p.tolist()) for k, p in checked.groups] == [
        (k, p.tolist()) for k, p in entity_groups(keys)]
    calls = []
    real = windows_module.entity_groups
    monkeypatch.setattr("ds_serving.alerting.entity_groups",
                        lambda e: calls.append(len(e)) or real(e))
    assert tracker.update(keys, flags, scores, times, checked) == plain
    assert calls == []  # the groups came from the check
    stale = tracker.check_times(np.array(["a"]), np.array([1e3]))
    calls.clear()
    with pytest.raises(ValueError, match=r"entity 'a' row 0 at 10\.000 is earlier"):
        tracker.update(np.array(["a"]), np.zeros(1, bool), np.zeros(1), np.array([10.0]), stale)
    assert calls == [1]


def test_resized_windows_keep_the_latest_rows() -> None:
    stream = EntityWindows(3, 1)
    stream.push(np.array(["a"] * 5), np.arange(5, dtype=np.float32)[:, None])
    bigger = stream.resized(6)
    pos, wins = bigger.push(np.array(["a"] * 3), np.array([[5], [6], [7]], np.float32))
    # tail [3, 4] + 3 new rows = 5 < 6: nothing yet; one more row completes [3..8]
    assert len(pos) == 0
    pos, wins = bigger.push(np.array(["a"]), np.array([[8]], np.float32))
    assert wins[:, :, 0].tolist() == [[3, 4, 5, 6, 7, 8]]
    smaller = bigger.resized(2)
    pos, wins = smaller.push(np.array(["a"]), np.array([[9]], np.float32))
    assert wins[:, :, 0].tolist() == [[8, 9]]


def test_tracker_and_smoother_adopt_state_across_policies() -> None:
    old = AlertTracker(AlertPolicy(k=1, n=1, m=2, cooldown=0))
    old.update(np.array(["h"]), np.array([True]), np.array([5.0]))
    new = AlertTracker(AlertPolicy(k=1, n=1, m=3, cooldown=0))
    new.adopt(old)
    assert new.is_open("h") and new.open_count() == 1 and old.open_count() == 0
    events = new.update(np.array(["h"] * 3), np.zeros(3, bool), np.zeros(3))
    assert [(e.kind, e.position) for e in events] == [("close", 2)]  # the new m=3
    a = StreamingSmoother(Smoothing(k=2, n=3))
    a.apply(np.array([True, True]), np.array(["h", "h"]))
    b = StreamingSmoother(Smoothing(k=2, n=4))
    b.adopt(a)
    assert b.apply(np.array([False]), np.array(["h"])).tolist() == [True]  # 2 of last 4


def test_adopted_recent_flags_count_in_the_new_policys_window() -> None:
    """A reload to another ``n`` keeps the flagged rows that are inside both windows."""
    old = AlertTracker(AlertPolicy(k=3, n=4, m=2, cooldown=0))
    old.update(np.array(["h"] * 4), np.array([1, 0, 1, 1], bool), np.ones(4))  # opens at row 4
    old.update(np.array(["g"] * 3), np.array([1, 0, 1], bool), np.ones(3))  # 2 of 4: not yet
    assert old.is_open("h") and not old.is_open("g")
    narrow = AlertTracker(AlertPolicy(k=2, n=2, m=2, cooldown=0))
    narrow.adopt(old)
    assert [s.entity for s in narrow.states()] == ["h", "g"]  # recency carried over
    assert _state_of(narrow, "g").recent == (3,)  # row 1 is outside a window of 2
    events = narrow.update(np.array(["g"]), np.array([True]), np.ones(1))
    assert [(e.entity, e.kind) for e in events] == [("g", "open")]  # rows 3 and 4: 2 of 2
    assert narrow.open_count() == 2 and old.open_count() == 0 and not old.states()


def test_an_evicted_entity_comes_back_with_fresh_state() -> None:
    """Slots of evicted entities are reused; what comes back starts from nothing."""
    tracker = AlertTracker(AlertPolicy(k=1, n=1, m=5, cooldown=1_000), max_entities=3)
    tracker.update(np.array(["a", "b", "c"]), np.ones(3, bool), np.ones(3),
                   np.array([1.0, 2.0, 3.0]))
    assert tracker.open_count() == 3
    tracker.update(np.array(["d", "e"]), np.zeros(2, bool), np.zeros(2), np.array([4.0, 5.0]))
    assert [s.entity for s in tracker.states()] == ["c", "d", "e"] and tracker.open_count() == 1
    tracker.update(np.array(["a"]), np.zeros(1, bool), np.zeros(1))  # no times: a new entity
    fresh = _state_of(tracker, "a")
    assert (fresh.timed, fresh.seen, fresh.open, fresh.closed_at) == (False, 1, False, None)
    assert [s.entity for s in tracker.states()] == ["d", "e", "a"]


def _reference_alerts(policy: AlertPolicy, batches: list[tuple[list[str], np.ndarray,
                                                               np.ndarray]]
                      ) -> list[tuple[str, str, float, float, int]]:
    """The alert rules row by row over plain dicts: the model the tracker must match."""
    state: dict[str, dict] = {}
    out: list[tuple[str, str, float, float, int]] = []
    offset = 0
    for ids, flags, scores in batches:
        events = []
        for i, (key, flag, score) in enumerate(zip(ids, flags, scores, strict=True)):
            s = state.setdefault(key, {"seen": 0, "clock": 0, "recent": [], "open": False,
                                       "opened": 0.0, "peak": 0.0, "run": 0, "closed": None})
            s["clock"] += 1
            if np.isnan(score):
                continue
            s["seen"] += 1
            if flag:
                s["recent"].append(s["seen"])
            s["recent"] = [r for r in s["recent"] if r > s["seen"] - policy.n]
            t = float(s["clock"])
            if s["open"]:
                s["peak"] = max(s["peak"], score)
                s["run"] = 0 if flag else s["run"] + 1
                if s["run"] >= policy.m:
                    s["open"], s["closed"] = False, t
                    events.append((key, "close", t, s["peak"], offset + i))
            elif flag and len(s["recent"]) >= policy.k and (
                    s["closed"] is None or t - s["closed"] >= policy.cooldown):
                s.update(open=True, opened=t, peak=score, run=0)
                events.append((key, "open", t, score, offset + i))
        out += sorted(events, key=lambda e: e[4])
        offset += len(ids)
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 3), n=st.integers(3, 6),
       m=st.integers(1, 4), cooldown=st.sampled_from([0.0, 3.0, 50.0]),
       entities=st.integers(1, 80), cuts=st.lists(st.integers(1, 300), max_size=4))
def test_the_columnar_tracker_matches_the_rules_row_by_row(
    seed: int, k: int, n: int, m: int, cooldown: float, entities: int, cuts: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    rows = 300
    ids = [f"e{i}" for i in rng.integers(0, entities, rows)]
    flags = rng.random(rows) < rng.uniform(0.02, 0.5)
    scores = rng.random(rows) + flags
    scores[rng.random(rows) < 0.1] = np.nan
    policy = AlertPolicy(k=min(k, n), n=n, m=m, cooldown=cooldown)
    tracker = AlertTracker(policy)
    batches = [(ids[a:b], flags[a:b], scores[a:b])
               for a, b in itertools.pairwise([0, *sorted(set(cuts)), rows])]
    got = [(e.entity, e.kind, e.at, e.peak_score, e.position)
           for offset, batch in zip(itertools.accumulate([0] + [len(b[0]) for b in batches]),
                                    batches, strict=False)
           for e in _shifted(tracker.update(*batch), offset)]
    assert got == _reference_alerts(policy, batches)
    assert tracker.open_count() == sum(s.open for s in tracker.states())


def _shifted(events: list, offset: int) -> list:
    return [dataclasses.replace(e, position=e.position + offset) for e in events]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 4), cooldown=st.sampled_from([0.0, 4.0]))
def test_many_entities_with_a_row_each_step_together_as_row_by_row(
    seed: int, m: int, cooldown: float
) -> None:
    """The scorer's largest requests: one row per entity, batch after batch; busy entities
    (flagged or open) take that row in one array step."""
    rng = np.random.default_rng(seed)
    ids = [f"host-{i}" for i in range(40)]
    policy = AlertPolicy(k=2, n=3, m=m, cooldown=cooldown)
    tracker = AlertTracker(policy)
    batches = []
    for _ in range(12):
        order = [ids[i] for i in rng.permutation(len(ids))]
        flags = rng.random(len(ids)) < 0.4
        scores = rng.random(len(ids)) + flags
        scores[rng.random(len(ids)) < 0.1] = np.nan
        batches.append((order, flags, scores))
    got, offset = [], 0
    for batch in batches:
        got += [(e.entity, e.kind, e.at, e.peak_score, e.position + offset)
                for e in tracker.update(*batch)]
        offset += len(batch[0])
    assert got == _reference_alerts(policy, batches)
    assert any(kind == "close" for _, kind, *_ in got)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), window=st.integers(1, 5), max_entities=st.integers(1, 12),
       entities=st.integers(1, 20), cuts=st.lists(st.integers(1, 120), max_size=5),
       resize_to=st.integers(1, 6))
def test_columnar_windows_match_per_entity_lists(
    seed: int, window: int, max_entities: int, entities: int, cuts: list[int], resize_to: int
) -> None:
    """Windows, tails, evictions and a resize against the rules over plain per-entity lists."""
    rng = np.random.default_rng(seed)
    n = 120
    ids = [f"e{i}" for i in rng.integers(0, entities, n)]
    rows = rng.normal(size=(n, 2)).astype(np.float32)
    stream = EntityWindows(window, 2, max_entities=max_entities)
    tails: dict[str, list[np.ndarray]] = {}
    for lo, hi in itertools.pairwise([0, *sorted(set(cuts)), n]):
        want: dict[int, np.ndarray] = {}
        for key, positions in entity_groups(ids[lo:hi]):
            history = tails.pop(key, []) + [rows[lo + p] for p in positions]
            for j, p in enumerate(positions):
                end = len(history) - len(positions) + j
                if end >= window - 1:
                    want[int(p)] = np.stack(history[end - window + 1:end + 1])
            tails[key] = history[max(0, len(history) - (window - 1)):] if window > 1 else []
        while len(tails) > max_entities:
            tails.pop(next(iter(tails)))
        positions, windows = stream.push(ids[lo:hi], rows[lo:hi])
        got = {int(p): w for p, w in zip(positions, windows, strict=True)}
        assert got.keys() == want.keys()
        for p, w in want.items():
            np.testing.assert_array_equal(got[p], w)
    assert sorted(stream.entity_keys()) == sorted(tails)
    for key, tail in tails.items():
        np.testing.assert_array_equal(stream.tail(key), np.asarray(tail, np.float32).reshape(-1, 2))
    resized = stream.resized(resize_to)
    for key, tail in tails.items():
        kept = tail[len(tail) - min(len(tail), resize_to - 1):] if resize_to > 1 else []
        np.testing.assert_array_equal(resized.tail(key),
                                      np.asarray(kept, np.float32).reshape(-1, 2))
    assert list(resized._slots.by_recency()) == list(range(len(tails)))  # recency carried over
