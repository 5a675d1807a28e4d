"""Per-entity state of the live scorer: hot reload to another window or alert policy, one time
base per entity, required entity ids, cancellation and chunked temporal scoring."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from ds_serving import runtime as runtime_module
from ds_serving.alerting import AlertPolicy, AlertTracker
from ds_serving.bundle import Bundle, promote, write_bundle
from ds_serving.client import ScorerClient, encode_request
from ds_serving.decoding import Decoded, JoinEvicts, RequestError, decode
from ds_serving.proto import scoring_pb2
from ds_serving.runtime import ModelRuntime
from ds_serving.scoring import Scorer, score_rows
from ds_serving.server import ServerThread
from ds_serving.smoothing import Smoothing, smooth_flags
from tests.support.models import window_model
from tests.support.serving import FEATURES, POLICY, normal_rows, server_config, write_point_bundle

F = len(FEATURES)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


def _publish_window(models: Path, window: int, *, name: str = "tae", **kw: object) -> Bundle:
    params: dict[str, object] = {
        "kind": "window", "features": FEATURES, "threshold": 0.5, "threshold_rule": {},
        "window": window, "alerting": POLICY,
    }
    params.update(kw)
    bundle = write_bundle(models, name, window_model(F, window), **params)  # type: ignore[arg-type]
    promote(models, name, bundle.manifest.version)
    return bundle


def _error(call: object) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code().name, info.value.details()  # type: ignore[attr-defined]


def test_reload_to_a_bigger_window_keeps_history_and_the_open_alert(models: Path) -> None:
    _publish_window(models, 3, alerting={"k": 1, "n": 1, "m": 3, "cooldown": 1000})
    rows = np.zeros((10, F), np.float32)
    rows[2] = 10.0  # far from its window's mean: flagged, opens an alert
    times = 100.0 + np.arange(10)
    thread = ServerThread(server_config(models, "tae", poll_interval=3600))
    server = thread.start()
    try:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        first = client.score(rows[:3], ["a"] * 3, times[:3])
        assert [a.kind for a in first.alerts] == ["open"]
        # v2: window 8 and another alert policy (the tracker moves, open alerts with it)
        v2 = _publish_window(models, 8, alerting={"k": 1, "n": 1, "m": 4, "cooldown": 1000})
        assert thread.reload() == "success"
        assert server.runtime is not None and server.runtime.window == 8
        assert server.runtime.open_alerts == 1  # the gauge reads the moved tracker
        warm = client.score(rows[3:7], ["a"] * 4, times[3:7])
        # history 2 (carried tail) + 4 < 8: unscored, and unscored rows must not close the alert
        assert np.isnan(warm.scores).all() and warm.alerts == []
        assert server.runtime.open_alerts == 1
        after = client.score(rows[7:], ["a"] * 3, times[7:])
        # the carried 2-row tail completes the first window 6 rows after the reload, not 8
        assert np.isnan(after.scores).tolist() == [True, False, False]
        reference = score_rows(Scorer.from_bundle(v2, backend="cpu"), rows)
        np.testing.assert_allclose(after.scores[1:], reference.scores[8:], atol=1e-6)
        assert server.runtime.open_alerts == 1 and not after.alerts  # 2 scored rows < m=4
        client.close()
    finally:
        thread.stop(0)


def test_a_large_request_decoded_across_a_reload_is_scored_by_the_new_model(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large body is parsed and checked on a worker thread against the model serving then.
    When a reload to another window lands meanwhile, the old model's state has moved on: the
    request is checked again and scored by the new model, so its rows reach the history the
    next requests read (committed into the old model's state they were lost)."""
    from ds_serving import servicer as servicer_module

    v1 = _publish_window(models, 3)
    rows = np.zeros((5, F), np.float32)
    times = 100.0 + np.arange(5)
    monkeypatch.setattr(servicer_module, "OFF_LOOP_BYTES", 0)  # every body takes that path
    thread = ServerThread(server_config(models, "tae", poll_interval=3600))
    server = thread.start()
    try:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        client.score(rows[:2], ["a"] * 2, times[:2])
        decoded, release = threading.Event(), threading.Event()
        parse_and_decode = server.service._parse_and_decode

        def held(runtime: ModelRuntime, body: bytes) -> Any:
            got = parse_and_decode(runtime, body)
            if runtime.version == v1.manifest.version:
                decoded.set()
                assert release.wait(10)
            return got

        monkeypatch.setattr(server.service, "_parse_and_decode", held)
        answers: list[Any] = []
        late = threading.Thread(
            target=lambda: answers.append(client.score(rows[2:3], ["a"], times[2:3])))
        late.start()
        assert decoded.wait(10)
        v2 = _publish_window(models, 4)
        assert thread.reload() == "success"
        release.set()
        late.join(10)
        [answer] = answers
        assert answer.model_version == v2.manifest.version
        # a 2-row tail carried over + the late row + this one: v2's first full window of 4
        after = client.score(rows[3:4], ["a"], times[3:4])
        assert not np.isnan(after.scores).any()
        reference = score_rows(Scorer.from_bundle(v2, backend="cpu"), rows[:4])
        np.testing.assert_allclose(after.scores, reference.scores[3:], atol=1e-6)
        client.close()
    finally:
        thread.stop(0)


def test_replaced_models_are_released_without_stateful_traffic(models: Path) -> None:
    # anonymous requests (the --processes tier's only kind) never touch per-entity state, so
    # the reload itself must hand the state over; otherwise every old model stays reachable
    promote(models, "ae", write_point_bundle(models, "ae").name)
    thread = ServerThread(server_config(models, "ae", poll_interval=3600))
    server = thread.start()
    try:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        rows = normal_rows(4)
        big = normal_rows(1024)  # enough values to run on the worker threads, not the loop
        replaced = []
        for _ in range(3):
            client.score(rows)
            client.score(big)
            assert server.runtime is not None
            replaced += [weakref.ref(server.runtime), weakref.ref(server.runtime.scorer)]
            promote(models, "ae", write_point_bundle(models, "ae").name)
            assert thread.reload() == "success"
        client.score(rows)
        gc.collect()
        assert [ref() for ref in replaced] == [None] * 6
        assert server.runtime is not None and server.runtime._inherit_from is None
        client.close()
    finally:
        thread.stop(0)


def test_time_base_switch_or_rewind_is_refused_before_any_state_changes(models: Path) -> None:
    window, smoothing = 4, {"k": 2, "n": 3}
    bundle = _publish_window(models, window, smoothing=smoothing)
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(30, F)).astype(np.float32)
    times = 1000.0 + 60.0 * np.arange(30)
    with ServerThread(server_config(models, "tae")) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        got = [client.score(rows[:12], ["h"] * 12, times[:12])]
        code, details = _error(lambda: client.score(rows[12:15], ["h"] * 3))
        assert code == "INVALID_ARGUMENT"
        assert "timestamps: entity 'h' was sent with timestamps before" in details
        got.append(client.score(rows[12:], ["h"] * 18, times[12:]))
        # the converse: an entity that started without timestamps keeps row counts
        client.score(rows[:2], ["g"] * 2)
        code, details = _error(lambda: client.score(rows[:1], ["g"], times[:1]))
        assert code == "INVALID_ARGUMENT" and "entity 'g' was sent without timestamps" in details
        # rows older than the entity's last one would rewind windows and cooldowns: refused
        code, details = _error(lambda: client.score(rows[:2], ["h"] * 2, times[:2]))
        assert code == "INVALID_ARGUMENT"
        assert "entity 'h' row 0 at 1000.000 is earlier than its previous row" in details
        client.close()
    # the refused request left no trace: the stream equals scoring the accepted rows only
    scores = np.concatenate([r.scores for r in got])
    flags = np.concatenate([r.flags for r in got])
    reference = score_rows(Scorer.from_bundle(bundle, backend="cpu"), rows)
    np.testing.assert_allclose(scores, reference.scores, atol=1e-6)
    expected = smooth_flags(reference.flags, Smoothing.from_dict(smoothing))
    np.testing.assert_array_equal(flags, expected)
    events = AlertTracker(AlertPolicy.from_dict(POLICY)).update(
        np.array(["h"] * 30), expected, reference.scores, times
    )
    alerts = [(a.kind, a.at) for r in got for a in r.alerts]
    assert alerts == [(e.kind, e.at) for e in events]


@pytest.mark.parametrize("stateful", ["window", "smoothing"])
def test_stateful_models_require_entity_ids(models: Path, stateful: str) -> None:
    if stateful == "window":
        _publish_window(models, 3)
        name, why = "tae", "a window of the last 3 rows"
    else:
        path = write_point_bundle(models, smoothing={"k": 2, "n": 3})
        promote(models, "ae", path.name)
        name, why = "ae", "2-of-3 flag smoothing"
    with ServerThread(server_config(models, name, metrics_port=None)) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        code, details = _error(lambda: client.score(normal_rows(4)))
        assert code == "INVALID_ARGUMENT"
        assert details.startswith(f"entity_ids: model {name!r} keeps per-entity state ({why})")
        assert len(client.score(normal_rows(4), ["x"] * 4).scores) == 4
        client.close()


def test_empty_entity_ids_are_refused(models: Path) -> None:
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    with ServerThread(server_config(models, metrics_port=None)) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        request = encode_request(normal_rows(3), ["a", "", "b"])
        code, details = _error(lambda: client.score_raw(request))
        assert code == "INVALID_ARGUMENT"
        assert "entity_ids: row 1 has an empty entity id" in details
        # a point model without smoothing still scores anonymous rows statelessly
        assert len(client.score(normal_rows(3)).scores) == 3
        client.close()


def _runtime(models: Path, window: int, *, max_entities: int = 100_000, **kw: object
             ) -> ModelRuntime:
    return ModelRuntime.load(_publish_window(models, window, **kw).path, backend="cpu",
                             max_entities=max_entities)


def _decoded(rows: np.ndarray, entities: list[str]) -> Decoded:
    return Decoded(rows=rows, entities=np.asarray(entities), times=None)


def test_cancelled_request_leaves_windows_smoothing_and_alerts_untouched(models: Path) -> None:
    rt = _runtime(models, 3, smoothing={"k": 1, "n": 2})
    rows = np.random.default_rng(1).normal(size=(6, F)).astype(np.float32)

    async def hang(scorer: Scorer, inputs: np.ndarray, explain: bool) -> tuple[np.ndarray, None]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def inline(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        return scorer.run(inputs, explain=explain)

    rows[3:] += 5.0  # far from the first window: flagged, so smoothing and alerts have work

    async def scenario() -> list[Any]:
        first = await rt.score_async(_decoded(rows[:3], ["a"] * 3), explain=False, run=inline)
        with pytest.raises(TimeoutError):  # deadline hits while the graph runs
            await asyncio.wait_for(
                rt.score_async(_decoded(rows[3:5], ["a"] * 2), explain=False, run=hang), 0.05
            )
        second = await rt.score_async(_decoded(rows[3:], ["a"] * 3), explain=False, run=inline)
        return [first, second]

    first, second = asyncio.run(scenario())
    reference = score_rows(rt.scorer, rows)
    np.testing.assert_allclose(second.scores, reference.scores[3:], atol=1e-6)
    # the smoothing tail and the alert state are those of the accepted rows only
    flags = smooth_flags(reference.flags, rt.policy.smoothing)
    assert flags[3:].any()
    np.testing.assert_array_equal(np.concatenate([first.flags, second.flags]), flags)
    expected = AlertTracker(rt.policy.alerting).update(
        np.array(["a"] * 6), flags, reference.scores)
    assert expected  # the scenario opens an alert
    got = first.alerts + [replace(a, position=a.position + 3) for a in second.alerts]
    assert [(a.kind, a.position) for a in got] == [(e.kind, e.position) for e in expected]


def test_temporal_requests_run_in_bounded_chunks_with_identical_results(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = 4
    rt = _runtime(models, window)
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(200, F)).astype(np.float32)
    hosts = [f"h{i}" for i in rng.integers(0, 5, size=200)]
    monkeypatch.setattr(runtime_module, "WINDOW_CHUNK_ROWS", 8 * window)  # 8 windows per run
    seen: list[tuple[int, ...]] = []

    async def record(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        seen.append(inputs.shape)
        return scorer.run(inputs, explain=explain)

    result = asyncio.run(rt.score_async(_decoded(rows, hosts), explain=True, run=record))
    reference = score_rows(rt.scorer, rows, np.asarray(hosts), explain=True)
    assert max(shape[0] for shape in seen) == 8 and len(seen) > 1
    np.testing.assert_array_equal(np.isnan(result.scores), np.isnan(reference.scores))
    np.testing.assert_allclose(result.scores, reference.scores, atol=1e-6)
    assert result.feature_errors is not None and reference.feature_errors is not None
    np.testing.assert_allclose(result.feature_errors, reference.feature_errors, atol=1e-6)
    # the sync path chunks the same way
    rt2 = _runtime(models, window)
    sync = rt2.score(_decoded(rows, hosts))
    np.testing.assert_allclose(sync.scores, reference.scores, atol=1e-6)


def test_decode_refuses_missing_ids_before_touching_state(models: Path) -> None:
    rt = _runtime(models, 3)
    data = np.zeros((2, F), "<f4").tobytes()
    with pytest.raises(RequestError, match="entity_ids: model 'tae' keeps per-entity state"):
        decode(rt, scoring_pb2.ScoreRequest(n_rows=2, n_features=F, features=data))
    assert rt.windows is not None and len(rt.windows) == 0


def _point_runtime(models: Path, **kw: object) -> ModelRuntime:
    return ModelRuntime.load(write_point_bundle(models, **kw), backend="cpu")


def _timed(rows: np.ndarray, entity: str, start: float) -> Decoded:
    times = start + np.arange(len(rows), dtype=np.float64)
    return Decoded(rows=rows, entities=np.asarray([entity] * len(rows)), times=times)


def test_point_model_commits_in_arrival_order_when_graph_runs_finish_in_reverse(
    models: Path,
) -> None:
    """Stateful requests on a point model run the graph outside the state lock (so they can
    share coalesced runs); their smoothing and alert updates still follow arrival order."""
    rt = _point_runtime(models, smoothing={"k": 2, "n": 3})
    rows = normal_rows(9, seed=5)
    rows[3:7] *= 3.0  # flagged rows: smoothing and alerts have work
    gates = [asyncio.Event() for _ in range(3)]
    finished: list[int] = []

    def gated(i: int):  # type: ignore[no-untyped-def]
        async def run(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
            await gates[i].wait()
            finished.append(i)
            return scorer.run(inputs, explain=explain)
        return run

    async def scenario() -> list[Any]:
        tasks = [
            asyncio.ensure_future(rt.score_async(
                _timed(rows[3 * i:3 * i + 3], "a", 3.0 * i), explain=False, run=gated(i)))
            for i in range(3)
        ]
        await asyncio.sleep(0)
        for gate in reversed(gates):  # graph runs finish last-arrived first
            gate.set()
            await asyncio.sleep(0)
        return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    assert finished == [2, 1, 0]
    reference = score_rows(rt.scorer, rows)
    flags = smooth_flags(reference.flags, rt.policy.smoothing)
    assert flags.any()
    np.testing.assert_array_equal(np.concatenate([r.flags for r in results]), flags)
    expected = AlertTracker(rt.policy.alerting).update(
        np.array(["a"] * 9), flags, reference.scores, np.arange(9, dtype=np.float64))
    got = [replace(a, position=a.position + 3 * i) for i, r in enumerate(results)
           for a in r.alerts]
    assert expected and [(a.kind, a.at) for a in got] == [(e.kind, e.at) for e in expected]


def test_point_model_request_cancelled_in_line_neither_commits_nor_lets_later_ones_overtake(
    models: Path,
) -> None:
    rt = _point_runtime(models, smoothing={"k": 1, "n": 2})
    rows = normal_rows(6, seed=6)
    first_gate = asyncio.Event()

    async def slow_first(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        await first_gate.wait()
        return scorer.run(inputs, explain=explain)

    async def inline(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        return scorer.run(inputs, explain=explain)

    async def scenario() -> tuple[Any, Any]:
        first = asyncio.ensure_future(
            rt.score_async(_timed(rows[:2], "a", 0.0), explain=False, run=slow_first))
        doomed = asyncio.ensure_future(
            rt.score_async(_timed(rows[2:4], "a", 2.0), explain=False, run=inline))
        third = asyncio.ensure_future(
            rt.score_async(_timed(rows[4:], "a", 4.0), explain=False, run=inline))
        await asyncio.sleep(0.01)  # doomed and third have scored and wait for their turn
        assert not third.done()  # third may not overtake first
        doomed.cancel()
        await asyncio.sleep(0.01)
        assert not third.done()  # still behind first, although doomed gave up
        first_gate.set()
        return await first, await third

    first, third = asyncio.run(scenario())
    kept = np.r_[0:2, 4:6]
    reference = score_rows(rt.scorer, rows[kept])
    flags = smooth_flags(reference.flags, rt.policy.smoothing)
    np.testing.assert_array_equal(np.concatenate([first.flags, third.flags]), flags)
    assert rt.tracker.state("a").last_time == 5.0  # the cancelled rows were never committed


def _reload_while_in_flight(old: ModelRuntime, new: ModelRuntime, first: Decoded,
                            second: Decoded) -> list[Any]:
    """``first`` is scoring on ``old`` (its graph still running) when ``new`` replaces it and
    ``second`` arrives on ``new``; returns both results and the adoption's completion order."""
    gate = asyncio.Event()
    order: list[str] = []

    async def slow(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        await gate.wait()
        return scorer.run(inputs, explain=explain)

    async def inline(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        return scorer.run(inputs, explain=explain)

    async def tracked(name: str, coro: Any) -> Any:
        result = await coro
        order.append(name)
        return result

    async def scenario() -> list[Any]:
        a = asyncio.ensure_future(tracked("first", old.score_async(first, explain=False,
                                                                    run=slow)))
        await asyncio.sleep(0)
        new.inherit_state(old)
        adopt = asyncio.ensure_future(tracked("adopt", new.adopt_inherited()))
        b = asyncio.ensure_future(tracked("second", new.score_async(second, explain=False,
                                                                     run=inline)))
        await asyncio.sleep(0.01)
        assert not adopt.done() and not b.done()  # both wait for the earlier request
        gate.set()
        return [await a, await b, await adopt]

    first_result, second_result, _ = asyncio.run(scenario())
    return [first_result, second_result, order]


def _sequential(old: ModelRuntime, new: ModelRuntime, first: Decoded, second: Decoded
                ) -> list[Any]:
    async def scenario() -> list[Any]:
        async def inline(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
            return scorer.run(inputs, explain=explain)

        a = await old.score_async(first, explain=False, run=inline)
        new.inherit_state(old)
        await new.adopt_inherited()
        return [a, await new.score_async(second, explain=False, run=inline)]

    return asyncio.run(scenario())


def test_reload_to_another_point_policy_waits_for_requests_in_flight_on_the_old_model(
    models: Path,
) -> None:
    p0 = write_point_bundle(models, smoothing={"k": 1, "n": 1})
    p1 = write_point_bundle(models, smoothing={"k": 1, "n": 2},
                            alerting={**POLICY, "cooldown": 7})
    rows = normal_rows(4, seed=1) * 5.0  # flagged: an alert opens on the first rows
    first, second = _timed(rows[:2], "a", 0.0), _timed(rows[2:], "a", 2.0)
    got = _reload_while_in_flight(ModelRuntime.load(p0, backend="cpu"),
                                  ModelRuntime.load(p1, backend="cpu"), first, second)
    new_rt = ModelRuntime.load(p1, backend="cpu")
    want = _sequential(ModelRuntime.load(p0, backend="cpu"), new_rt, first, second)
    assert got[2] == ["first", "adopt", "second"]
    for g, w in zip(got[:2], want, strict=True):
        np.testing.assert_array_equal(g.flags, w.flags)
        assert [(a.kind, a.at) for a in g.alerts] == [(a.kind, a.at) for a in w.alerts]
    assert [a.kind for a in got[0].alerts] == ["open"] and not got[1].alerts  # one alert


def test_reload_from_point_to_temporal_keeps_arrival_order(models: Path) -> None:
    p0 = write_point_bundle(models)
    b1 = _publish_window(models, 2)
    rows = normal_rows(4, seed=1)
    first, second = _timed(rows[:2], "a", 0.0), _timed(rows[2:], "a", 2.0)
    got = _reload_while_in_flight(ModelRuntime.load(p0, backend="cpu"),
                                  ModelRuntime.load(b1.path, backend="cpu"), first, second)
    assert got[2] == ["first", "adopt", "second"]  # no TimeOrderError for the earlier request
    assert got[1].n_scored == 1  # the point model left no window history: one full window


# -- a temporal model's concurrent requests, scored in groups ---------------------------------


def _one_by_one(rt: ModelRuntime, requests: list[Decoded]) -> list[Any]:
    """Each request scored alone, in arrival order: the answer (or error text) it must get."""
    out: list[Any] = []
    for request in requests:
        try:
            out.append(rt.score(request))
        except RequestError as exc:
            out.append(str(exc))
    return out


def _same_answers(got: list[Any], expected: list[Any]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        if isinstance(e, str):
            assert isinstance(g, RequestError) and str(g) == e
            continue
        np.testing.assert_array_equal(np.isnan(g.scores), np.isnan(e.scores))
        np.testing.assert_allclose(g.scores, e.scores, atol=1e-6)
        np.testing.assert_array_equal(g.flags, e.flags)
        assert [(a.entity, a.kind, a.at, a.position) for a in g.alerts] == [
            (a.entity, a.kind, a.at, a.position) for a in e.alerts]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_concurrent_temporal_requests_score_in_groups_as_if_one_by_one(
    models: Path, seed: int
) -> None:
    """Requests that queue behind the state lock are scored together (one graph run), with
    exactly the answers, alerts and errors they get one by one; a request whose time goes
    back is refused alone and the others of its group are unaffected."""
    rng = np.random.default_rng(seed)
    policy = {"k": 1, "n": 1, "m": 2, "cooldown": 3}
    rows = rng.normal(size=(60, F)).astype(np.float32)
    rows[rng.random(60) < 0.3] += 6.0  # flagged rows: alerts open and close
    hosts = [f"h{i}" for i in rng.integers(0, 3, size=60)]
    clocks: dict[str, float] = {}
    requests = []
    for i in range(0, 60, 2):
        host = hosts[i]
        start = clocks.get(host, 0.0)
        if i == 30:
            start -= 5.0  # time goes back: this request is refused
        clocks[host] = start + 2
        requests.append(Decoded(rows=rows[i : i + 2], entities=np.asarray([host] * 2),
                                times=start + np.arange(2, dtype=np.float64)))
    expected = _one_by_one(_runtime(models / "a", 3, alerting=policy,
                                    smoothing={"k": 1, "n": 2}), requests)
    rt = _runtime(models / "b", 3, alerting=policy, smoothing={"k": 1, "n": 2})
    rt.grouping = runtime_module.GroupPolicy(window=0.05)

    async def inline(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        return scorer.run(inputs, explain=explain)

    async def scenario() -> list[Any]:
        return await asyncio.gather(
            *(rt.score_async(r, explain=False, run=inline) for r in requests),
            return_exceptions=True)

    got = asyncio.run(scenario())
    assert any(isinstance(e, str) for e in expected)  # the refused request is in the mix
    _same_answers(got, expected)
    assert rt.grouped_requests >= len(requests) // 2  # most were scored in someone's group


def _gated_run(gate: asyncio.Event, windows_run: list[int]) -> Any:
    """A graph runner that records each run's windows and holds it until ``gate`` is set."""

    async def run(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        windows_run.append(len(inputs))
        await gate.wait()
        return scorer.run(inputs, explain=explain)

    return run


def _one_entity_group(models: Path, seed: int, window: float = 0.001
                      ) -> tuple[list[Decoded], ModelRuntime]:
    """Three 3-row requests of one entity, and a window-3 runtime that waits ``window``
    seconds for the ones behind the first, so they are scored as one group."""
    rows = np.random.default_rng(seed).normal(size=(9, F)).astype(np.float32)
    rt = _runtime(models / "b", 3)
    rt.grouping = runtime_module.GroupPolicy(window=window)
    return [_decoded(rows[i : i + 3], ["a"] * 3) for i in (0, 3, 6)], rt


def test_a_request_cancelled_while_its_group_runs_commits_nothing(models: Path) -> None:
    """The group's graph runs off the loop; meanwhile a member is cancelled (deadline): the
    group is dropped, the first request is scored alone, the cancelled one leaves no trace and
    the last one answers as if the cancelled one had never come."""
    requests, rt = _one_entity_group(models, seed=5)
    expected = _one_by_one(_runtime(models / "a", 3), [requests[0], requests[2]])
    windows_run: list[int] = []

    async def scenario() -> list[Any]:
        gate = asyncio.Event()
        slow = _gated_run(gate, windows_run)

        first = asyncio.ensure_future(rt.score_async(requests[0], explain=False, run=slow))
        middle = asyncio.ensure_future(rt.score_async(requests[1], explain=False, run=slow))
        last = asyncio.ensure_future(rt.score_async(requests[2], explain=False, run=slow))
        await asyncio.sleep(0.01)  # the three formed one group, whose graph run waits
        middle.cancel()
        gate.set()
        return [await first, await last, middle.cancelled()]

    first, last, cancelled = asyncio.run(scenario())
    assert cancelled
    _same_answers([first, last], expected)
    # the group's run (9 rows of "a": 7 windows), then the first alone (1 window), then the
    # last alone on the first's 2-row tail (3 windows)
    assert windows_run == [7, 1, 3] and rt.grouped_requests == 0


def test_members_of_a_group_that_could_not_run_do_not_wait_again(models: Path) -> None:
    """When a group's joint run fails, its first request is scored alone and the others take
    their turns: they do not wait out the grouping window a second time (each would, in turn),
    and every answer is the one-by-one answer."""
    requests, rt = _one_entity_group(models, seed=6, window=0.05)
    expected = _one_by_one(_runtime(models / "a", 3), requests)
    waits: list[bool] = []
    should_wait = rt.grouping.should_wait

    def counted(*args: Any, **kwargs: Any) -> bool:
        waits.append(should_wait(*args, **kwargs))
        return waits[-1]

    rt.grouping.should_wait = counted  # type: ignore[method-assign]

    async def small_runs_only(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        if len(inputs) > 3:  # any joint run of two or more of these requests
            raise RuntimeError("joint run failed")
        return scorer.run(inputs, explain=explain)

    async def scenario() -> list[Any]:
        return await asyncio.gather(
            *(rt.score_async(r, explain=False, run=small_runs_only) for r in requests))

    got = asyncio.run(scenario())
    _same_answers(got, expected)
    assert rt.grouped_requests == 0
    assert len(waits) == 1  # only the first request asked whether to wait for company


def test_a_cancellation_requested_while_the_group_ran_commits_nothing(models: Path) -> None:
    """The cancellation of a member lands while the group's graph runs, but the first request
    resumes before the member's task sees it: the group is still dropped."""
    rows = np.random.default_rng(0).normal(size=(4, F)).astype(np.float32)
    rt = _runtime(models, 2)
    rt.grouping = runtime_module.GroupPolicy(window=0.05)
    tasks: dict[str, asyncio.Future[Any]] = {}

    async def run(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)  # the graph on a worker thread
        if "second" in tasks:
            tasks["second"].cancel()  # its client goes away; the task learns it next tick
        return scorer.run(inputs, explain=explain)

    async def scenario() -> bool:
        first = asyncio.ensure_future(
            rt.score_async(_decoded(rows[:1], ["x"]), explain=False, run=run))
        tasks["second"] = asyncio.ensure_future(
            rt.score_async(_decoded(rows[1:2], ["x"]), explain=False, run=run))
        await first
        with pytest.raises(asyncio.CancelledError):
            await tasks.pop("second")
        return True

    assert asyncio.run(scenario())
    assert rt.grouped_requests == 0
    assert rt.windows is not None
    np.testing.assert_array_equal(rt.windows.tail("x")[-1], rows[0])  # only the first's row


def test_grouped_requests_leave_the_eviction_order_of_one_by_one(models: Path) -> None:
    """Per-entity state is evicted least recently seen first; grouping A=[e1] with B=[e2, e1]
    must leave e1 the most recent, as one by one does, so a later eviction drops e2."""
    rows = np.random.default_rng(0).normal(size=(8, F)).astype(np.float32)
    requests = [_decoded(rows[0:1], ["e1"]), _decoded(rows[1:3], ["e2", "e1"]),
                _decoded(rows[3:4], ["e3"]), _decoded(rows[4:5], ["e1"])]
    expected = _one_by_one(_runtime(models / "a", 2, max_entities=2), requests)
    rt = _runtime(models / "b", 2, max_entities=2)
    rt.grouping = runtime_module.GroupPolicy(window=0.05)

    async def inline(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        return scorer.run(inputs, explain=explain)

    async def scenario() -> list[Any]:
        first = await asyncio.gather(*(rt.score_async(r, explain=False, run=inline)
                                       for r in requests[:2]))
        rest = [await rt.score_async(r, explain=False, run=inline) for r in requests[2:]]
        return [*first, *rest]

    got = asyncio.run(scenario())
    assert rt.grouped_requests == 1
    _same_answers(got, expected)
    assert not np.isnan(got[3].scores).any()  # e1's tail survived e3's arrival


# -- small requests passing a large temporal one while its graph runs (runtime.Door) ---------


def _timed_rows(rows: np.ndarray, hosts: list[str], clocks: dict[str, float]) -> Decoded:
    times = []
    for host in hosts:
        clocks[host] = clocks.get(host, -1.0) + 1.0
        times.append(clocks[host])
    return Decoded(rows=rows, entities=np.asarray(hosts), times=np.asarray(times))


def _door_requests(rng: np.random.Generator) -> list[Decoded]:
    """A large request over h0..h9 (with a history before it), then small ones: one of a new
    entity, one of an entity of the large request, then another of a new entity."""
    rows = rng.normal(size=(80, F)).astype(np.float32)
    rows[rng.random(80) < 0.3] += 6.0  # flagged rows: alerts open and close
    clocks: dict[str, float] = {}
    hosts = [f"h{i % 10}" for i in range(60)]
    return [_timed_rows(rows[:20], hosts[:20], clocks),
            _timed_rows(rows[20:60], hosts[20:60], clocks),  # the large one
            _timed_rows(rows[60:63], ["x"] * 3, clocks),  # passes
            _timed_rows(rows[63:66], ["h3"] * 3, clocks),  # the large one's entity: waits
            _timed_rows(rows[66:69], ["y"] * 3, clocks)]  # someone waits ahead of it: waits


def _large_blocks(release: asyncio.Event, started: asyncio.Event | None = None) -> Any:
    """A graph runner that holds the large request's windows (20 or more) until ``release``."""

    async def run(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        if len(inputs) >= 20:
            if started is not None:
                started.set()
            await release.wait()
        return scorer.run(inputs, explain=explain)

    return run


def test_small_requests_of_other_entities_pass_a_large_one_while_its_graph_runs(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a large request's graph runs, a small request of other entities is answered (it
    waited for the whole run before); one sharing an entity with it, or behind one that waits,
    waits its turn. Every answer and alert is the one it gets one by one, in arrival order."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)  # "large": 30 rows or more
    policy = {"k": 1, "n": 1, "m": 2, "cooldown": 3}
    requests = _door_requests(np.random.default_rng(4))
    expected = _one_by_one(_runtime(models / "a", 3, alerting=policy,
                                    smoothing={"k": 1, "n": 2}), requests)
    rt = _runtime(models / "b", 3, alerting=policy, smoothing={"k": 1, "n": 2})
    large_runs, release = asyncio.Event(), asyncio.Event()
    run = _large_blocks(release, large_runs)

    async def scenario() -> tuple[list[Any], list[bool]]:
        got = [await rt.score_async(requests[0], explain=False, run=run)]
        tasks = [asyncio.ensure_future(rt.score_async(requests[1], explain=False, run=run))]
        await asyncio.wait_for(large_runs.wait(), 5)
        for r in requests[2:]:
            tasks.append(asyncio.ensure_future(rt.score_async(r, explain=False, run=run)))
            await asyncio.sleep(0.01)
        done_while_running = [t.done() for t in tasks]
        release.set()
        return got + list(await asyncio.gather(*tasks)), done_while_running

    got, done_while_running = asyncio.run(scenario())
    assert done_while_running == [False, True, False, False]
    assert rt.passing_requests == 1
    assert any(g.alerts for g in got)
    _same_answers(got, expected)


def test_a_small_request_waiting_in_line_passes_when_the_door_opens(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small request that arrived while the large one was still being prepared (no door
    yet) passes as soon as its graph starts running."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)
    rows = np.random.default_rng(7).normal(size=(43, F)).astype(np.float32)
    large = _decoded(rows[:40], [f"h{i % 10}" for i in range(40)])
    small = _decoded(rows[40:], ["x"] * 3)
    expected = _one_by_one(_runtime(models / "a", 3), [large, small])
    rt = _runtime(models / "b", 3)
    release = asyncio.Event()
    run = _large_blocks(release)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(rt.score_async(large, explain=False, run=run))
        await asyncio.sleep(0)  # the large one has its turn and is being prepared
        assert rt._door is None
        second = asyncio.ensure_future(rt.score_async(small, explain=False, run=run))
        await asyncio.wait_for(asyncio.shield(second), 5)  # answered while the large one runs
        assert not first.done()
        release.set()
        return [await first, second.result()]

    got = asyncio.run(scenario())
    assert rt.passing_requests == 1
    _same_answers(got, expected)


@pytest.mark.parametrize(("new_entities", "passes"), [(2, True), (3, False)])
def test_a_small_request_that_would_evict_waits_its_turn(
    models: Path, monkeypatch: pytest.MonkeyPatch, new_entities: int, passes: bool
) -> None:
    """With room for 12 entities and 10 in the large request, a small request of 2 new entities
    passes; one of 3 would evict one (in turn, evictions follow arrival order): it waits."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)
    rows = np.random.default_rng(5).normal(size=(40 + new_entities, F)).astype(np.float32)
    large = _decoded(rows[:40], [f"h{i % 10}" for i in range(40)])
    small = _decoded(rows[40:], [f"n{i}" for i in range(new_entities)])
    expected = _one_by_one(_runtime(models / "a", 3, max_entities=12), [large, small])
    rt = _runtime(models / "b", 3, max_entities=12)
    large_runs, release = asyncio.Event(), asyncio.Event()
    run = _large_blocks(release, large_runs)

    async def scenario() -> tuple[list[Any], bool]:
        first = asyncio.ensure_future(rt.score_async(large, explain=False, run=run))
        await asyncio.wait_for(large_runs.wait(), 5)
        second = asyncio.ensure_future(rt.score_async(small, explain=False, run=run))
        await asyncio.sleep(0.02)
        passed = second.done()
        release.set()
        return list(await asyncio.gather(first, second)), passed

    got, passed = asyncio.run(scenario())
    assert passed is passes and rt.passing_requests == int(passes)
    _same_answers(got, expected)


def test_a_large_request_cancelled_while_one_passes_commits_nothing(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The large request's deadline hits while a small one is inside: the small one's answer
    stands, the large one's rows are not committed, and later requests see exactly that."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)
    rows = np.random.default_rng(6).normal(size=(46, F)).astype(np.float32)
    large = _decoded(rows[:40], [f"h{i % 10}" for i in range(40)])
    small, later = _decoded(rows[40:43], ["x"] * 3), _decoded(rows[43:46], ["h1"] * 3)
    expected = _one_by_one(_runtime(models / "a", 3), [small, later])
    rt = _runtime(models / "b", 3)
    large_runs, small_runs = asyncio.Event(), asyncio.Event()

    async def run(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        if len(inputs) >= 20:
            large_runs.set()
            await asyncio.Event().wait()  # never finishes: the deadline cancels it
        small_runs.set()
        await asyncio.sleep(0.05)  # still inside when the large one is cancelled
        return scorer.run(inputs, explain=explain)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(rt.score_async(large, explain=False, run=run))
        await asyncio.wait_for(large_runs.wait(), 5)
        second = asyncio.ensure_future(rt.score_async(small, explain=False, run=run))
        await asyncio.wait_for(small_runs.wait(), 5)  # it passes while the large one runs
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert second.done()  # the cancelled one waited for it before leaving
        return [second.result(), await rt.score_async(later, explain=False, run=run)]

    got = asyncio.run(scenario())
    _same_answers(got, expected)
    assert rt.windows is not None and len(rt.windows) == 2  # x and h1: none of the large one's


@pytest.mark.parametrize("seed", range(4))
def test_requests_passing_large_ones_get_the_answers_of_one_by_one(
    models: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Random large and small requests over overlapping entities, arriving while large ones'
    graphs run: whoever passes whom, every answer, flag and alert is the one-by-one one."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)
    rng = np.random.default_rng(seed)
    policy = {"k": 1, "n": 1, "m": 2, "cooldown": 3}
    clocks: dict[str, float] = {}
    requests = []
    for i in range(24):
        large = i == 0 or (i > 1 and rng.random() < 0.25)
        size = int(rng.integers(30, 41)) if large else int(rng.integers(1, 4))
        # small ones: some share the large ones' entities, some not (the second one never)
        low, high = (0, 12) if large else (12, 20) if i == 1 else (8, 20)
        hosts = [f"h{i}" for i in rng.integers(low, high, size=size)]
        rows = rng.normal(size=(size, F)).astype(np.float32)
        rows[rng.random(size) < 0.3] += 6.0
        requests.append(_timed_rows(rows, hosts, clocks))
    expected = _one_by_one(_runtime(models / "a", 3, alerting=policy,
                                    smoothing={"k": 1, "n": 2}), requests)
    rt = _runtime(models / "b", 3, alerting=policy, smoothing={"k": 1, "n": 2})

    first_runs = asyncio.Event()

    async def run(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        if len(inputs) > 3:  # a large request's windows (a small one has 3 rows at most)
            first_runs.set()
            await asyncio.sleep(float(rng.uniform(0.01, 0.03)))
        return scorer.run(inputs, explain=explain)

    async def scenario() -> list[Any]:
        tasks = [asyncio.ensure_future(rt.score_async(requests[0], explain=False, run=run))]
        await asyncio.wait_for(first_runs.wait(), 5)  # the second one arrives while it runs
        for r in requests[1:]:
            tasks.append(asyncio.ensure_future(rt.score_async(r, explain=False, run=run)))
            await asyncio.sleep(float(rng.uniform(0, 0.006)))
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    got = asyncio.run(scenario())
    _same_answers(got, expected)
    assert rt.passing_requests > 0


def _late_on_the_old_runtime(
    old: Any, new: Any, large: Decoded, late: Decoded, small: Decoded
) -> tuple[bool, list[Any]]:
    """A reload race: ``large`` runs its graph on ``new``, ``late`` reaches ``old`` meanwhile,
    then ``small`` comes to ``new``. Whether ``small`` finished before ``large`` was released,
    and the three results (or errors) in that order."""
    large_runs, release = asyncio.Event(), asyncio.Event()
    run = _large_blocks(release, large_runs)

    async def scenario() -> tuple[bool, list[Any]]:
        first = asyncio.ensure_future(new.score_async(large, explain=False, run=run))
        await asyncio.wait_for(large_runs.wait(), 5)
        waiting = asyncio.ensure_future(old.score_async(late, explain=False, run=run))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(new.score_async(small, explain=False, run=run))
        await asyncio.sleep(0.02)
        passed = second.done()
        release.set()
        return passed, list(await asyncio.gather(first, waiting, second,
                                                 return_exceptions=True))

    return asyncio.run(scenario())


def test_nobody_passes_a_request_waiting_on_the_replaced_model(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across a reload a request can reach the old runtime after a large one took its turn on
    the new one; it waits in the old one's line, and a later small request of the same entity
    on the new runtime must not pass it."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)
    rows = np.random.default_rng(8).normal(size=(42, F)).astype(np.float32)
    old = _runtime(models / "a", 3)
    new = _runtime(models / "b", 3)
    new.inherit_state(old)
    large = _decoded(rows[:40], [f"h{i % 10}" for i in range(40)])
    late, small = _decoded(rows[40:41], ["x"]), _decoded(rows[41:42], ["x"])
    passed, got = _late_on_the_old_runtime(old, new, large, late, small)
    assert (passed, new.passing_requests) == (False, 0)
    assert not any(isinstance(g, BaseException) for g in got)


def test_a_passer_is_seen_after_the_request_it_passed(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Least recently seen entities are evicted first. A request that passed a large one is
    seen again after the large one commits, so a later eviction drops what it drops one by
    one (a large-request entity), not the passer's entity."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)
    rows = np.random.default_rng(9).normal(size=(48, F)).astype(np.float32)
    requests = [_decoded(rows[:2], ["x", "x"]),
                _decoded(rows[2:42], [f"h{i % 10}" for i in range(40)]),  # large
                _decoded(rows[42:43], ["x"]),  # passes it
                _decoded(rows[43:45], ["n0", "n1"]),  # 13 entities > 12: one is evicted
                _decoded(rows[45:48], ["x"] * 3)]
    expected = _one_by_one(_runtime(models / "a", 3, max_entities=12), requests)
    rt = _runtime(models / "b", 3, max_entities=12)
    large_runs, release = asyncio.Event(), asyncio.Event()
    run = _large_blocks(release, large_runs)

    async def scenario() -> list[Any]:
        got = [await rt.score_async(requests[0], explain=False, run=run)]
        large = asyncio.ensure_future(rt.score_async(requests[1], explain=False, run=run))
        await asyncio.wait_for(large_runs.wait(), 5)
        got_small = await asyncio.wait_for(
            rt.score_async(requests[2], explain=False, run=run), 5)
        release.set()
        got += [await large, got_small]
        for r in requests[3:]:
            got.append(await rt.score_async(r, explain=False, run=run))
        return got

    got = asyncio.run(scenario())
    assert rt.passing_requests == 1
    assert not np.isnan(got[4].scores).all()  # x kept its tail
    _same_answers(got, expected)


def test_a_replaced_runtime_opens_no_door_and_point_turns_are_not_passed(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a reload, a large request that reached the old runtime late opens no door there;
    and a point model's request waiting in the shared line (no temporal queue holds it) is
    not passed by a small request of the same entity on the new, temporal runtime."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)
    rows = np.random.default_rng(10).normal(size=(82, F)).astype(np.float32)
    old, new = _point_runtime(models / "a"), _runtime(models / "b", 3)
    new.inherit_state(old)
    large = Decoded(rows=rows[:40], entities=np.asarray([f"h{i % 10}" for i in range(40)]),
                    times=np.repeat(np.arange(4, dtype=np.float64), 10))
    point = _timed(rows[40:41], "x", 10.0)
    small = _timed(rows[41:42], "x", 11.0)
    passed, got = _late_on_the_old_runtime(old, new, large, point, small)
    assert not passed and new.passing_requests == 0
    assert not any(isinstance(g, BaseException) for g in got)  # x's times stay in order
    assert old._door is None and old._retired


def test_waiting_for_work_survives_repeated_cancellation() -> None:
    """A large request's commit or its passers are waited for however often the request is
    cancelled; the cancellation is raised once they are done."""

    async def scenario() -> list[str]:
        log: list[str] = []
        work = asyncio.get_running_loop().create_future()
        waiter = asyncio.ensure_future(runtime_module._uncancellable(work))
        for _ in range(3):
            await asyncio.sleep(0)
            waiter.cancel()
        await asyncio.sleep(0.01)
        log.append(f"done before the work: {waiter.done()}")
        work.set_result(1)
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return log

    assert asyncio.run(scenario()) == ["done before the work: False"]


async def _queued_behind(rt: ModelRuntime, first: Decoded, rest: list[Decoded], run: Any,
                         gate: asyncio.Event) -> list[asyncio.Task[Any]]:
    """Score ``first``, whose run waits for ``gate``, and queue ``rest`` behind it (so the next
    turn gathers them into one group); then open ``gate``. The tasks, in that order."""
    tasks = [asyncio.ensure_future(rt.score_async(first, explain=False, run=run))]
    await asyncio.sleep(0.01)
    tasks += [asyncio.ensure_future(rt.score_async(r, explain=False, run=run)) for r in rest]
    await asyncio.sleep(0.01)
    gate.set()
    return tasks


def _cancel_during_commit(rt: ModelRuntime, victim: dict[str, Any]) -> None:
    """Make ``rt``'s off-loop commit cancel ``victim['task']`` while it runs."""
    commit = rt._commit

    def cancelling(*args: Any) -> Any:
        if threading.current_thread() is not threading.main_thread() and "task" in victim:
            victim["loop"].call_soon_threadsafe(victim.pop("task").cancel)
            time.sleep(0.05)  # the cancellation reaches the task while the commit runs
        return commit(*args)

    rt._commit = cancelling  # type: ignore[method-assign]


def test_a_group_leader_cancelled_during_its_commit_still_answers_the_members(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The joint commit finishes although the leader is cancelled meanwhile; its members get
    their part of it instead of scoring (and committing) their rows a second time."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)
    rows = np.random.default_rng(12).normal(size=(46, F)).astype(np.float32)
    clocks: dict[str, float] = {}
    first = _timed_rows(rows[0:3], ["b"] * 3, clocks)
    large = _timed_rows(rows[3:43], [f"h{i % 10}" for i in range(40)], clocks)
    member = _timed_rows(rows[43:46], ["m"] * 3, clocks)
    expected = _one_by_one(_runtime(models / "a", 3), [first, large, member])
    rt = _runtime(models / "b", 3)
    gate, victim = asyncio.Event(), {}
    _cancel_during_commit(rt, victim)

    async def run(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        if len(inputs) < 20 and not gate.is_set():
            await gate.wait()  # the first request holds its turn until the others queue
        return scorer.run(inputs, explain=explain)

    async def scenario() -> list[Any]:
        victim["loop"] = asyncio.get_running_loop()
        tasks = await _queued_behind(rt, first, [large, member], run, gate)
        victim["task"] = tasks[1]
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    got = asyncio.run(scenario())
    assert isinstance(got[1], asyncio.CancelledError) and rt.grouped_requests == 1
    _same_answers([got[0], got[2]], [expected[0], expected[2]])


def test_a_large_request_cancelled_during_its_commit_still_sees_its_passers_again(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its rows are committed, so the request that passed it is seen after them, and a later
    eviction drops what one by one drops."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)
    rows = np.random.default_rng(13).normal(size=(45, F)).astype(np.float32)
    requests = [_decoded(rows[0:2], ["x", "x"]),
                _decoded(rows[2:42], [f"h{i % 10}" for i in range(40)]),
                _decoded(rows[42:43], ["x"]), _decoded(rows[43:44], ["n"]),
                _decoded(rows[44:45], ["x"])]
    expected = _one_by_one(_runtime(models / "a", 3, max_entities=11), requests)
    rt = _runtime(models / "b", 3, max_entities=11)
    large_runs, release, victim = asyncio.Event(), asyncio.Event(), {}
    run = _large_blocks(release, large_runs)
    _cancel_during_commit(rt, victim)

    async def scenario() -> list[Any]:
        victim["loop"] = asyncio.get_running_loop()
        got = [await rt.score_async(requests[0], explain=False, run=run)]
        large = asyncio.ensure_future(rt.score_async(requests[1], explain=False, run=run))
        await asyncio.wait_for(large_runs.wait(), 5)
        got.append(await asyncio.wait_for(rt.score_async(requests[2], explain=False, run=run), 5))
        victim["task"] = large
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await large
        for r in requests[3:]:
            got.append(await rt.score_async(r, explain=False, run=run))
        return got

    got = asyncio.run(scenario())
    assert rt.passing_requests == 1
    _same_answers(got, [expected[i] for i in (0, 2, 3, 4)])


def test_a_member_of_a_failed_group_does_not_pass_its_leader(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group falls back after a request passed it; its leader re-scores alone, and a small
    member that was passed waits its turn instead of passing the leader, so the passers are
    seen again in arrival order and a later eviction drops what one by one drops."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)
    rows = np.random.default_rng(11).normal(size=(66, F)).astype(np.float32)
    first, large = _decoded(rows[0:3], ["b"] * 3), _decoded(rows[3:43],
                                                            [f"h{i % 10}" for i in range(40)])
    leaving, member = _decoded(rows[43:46], ["m2"] * 3), _decoded(rows[46:49], ["m3"] * 3)
    passer = _decoded(rows[49:52], ["x"] * 3)
    later = [_decoded(rows[52:65], [f"n{i}" for i in range(13)]), _decoded(rows[65:66], ["x"])]
    expected = _one_by_one(_runtime(models / "a", 3, max_entities=14),
                           [first, large, member, passer, *later])
    rt = _runtime(models / "b", 3, max_entities=14)
    gate, joint_runs, release_joint = asyncio.Event(), asyncio.Event(), asyncio.Event()
    alone_runs, release_alone = asyncio.Event(), asyncio.Event()
    large_runs = [0]

    async def run(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        if len(inputs) >= 20:
            large_runs[0] += 1
            started, release = ((joint_runs, release_joint) if large_runs[0] == 1
                                else (alone_runs, release_alone))
            started.set()
            await release.wait()
        elif not gate.is_set():
            await gate.wait()
        return scorer.run(inputs, explain=explain)

    async def scenario() -> list[Any]:
        tasks = await _queued_behind(rt, first, [large, leaving, member], run, gate)
        await asyncio.wait_for(joint_runs.wait(), 5)  # the group of three runs
        tasks.append(asyncio.ensure_future(rt.score_async(passer, explain=False, run=run)))
        await asyncio.sleep(0.02)
        tasks[2].cancel()  # one member leaves: the group falls back
        await asyncio.sleep(0)
        release_joint.set()
        await asyncio.wait_for(alone_runs.wait(), 5)  # the leader alone
        await asyncio.sleep(0.02)
        member_passed = tasks[3].done()
        release_alone.set()
        got = [await tasks[i] for i in (0, 1, 3, 4)]
        assert not member_passed
        return got + [await rt.score_async(r, explain=False, run=run) for r in later]

    got = asyncio.run(scenario())
    assert rt.passing_requests == 1
    _same_answers(got, expected)


def test_a_member_that_left_before_anyone_passed_holds_up_nothing(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group member cancelled before a request passes the group must not stay recorded as
    passed: the passers would then be seen again after every later commit (and kept forever),
    and a later eviction would drop the wrong entity."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)
    rows = np.random.default_rng(5).normal(size=(106, F)).astype(np.float32)
    first = _decoded(rows[0:3], ["b"] * 3)
    large = _decoded(rows[3:43], [f"h{i % 10}" for i in range(40)])
    member, passer = _decoded(rows[43:46], ["m"] * 3), _decoded(rows[46:49], ["x"] * 3)
    large2 = _decoded(rows[49:89], [f"g{i % 10}" for i in range(40)])
    passer2 = _decoded(rows[89:92], ["y"] * 3)
    later = [_decoded(rows[92:105], [f"n{i}" for i in range(13)]), _decoded(rows[105:106], ["x"])]
    expected = _one_by_one(_runtime(models / "a", 3, max_entities=24),
                           [first, large, passer, large2, passer2, *later])
    rt = _runtime(models / "b", 3, max_entities=24)
    gate, large_runs, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def run(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        if len(inputs) >= 20:
            large_runs.set()
            await release.wait()
        elif not gate.is_set():
            await gate.wait()
        return scorer.run(inputs, explain=explain)

    async def scenario() -> list[Any]:
        tasks = await _queued_behind(rt, first, [large, member], run, gate)
        await asyncio.wait_for(large_runs.wait(), 5)  # the group {large, member} runs
        tasks[2].cancel()  # the member leaves before anyone passes
        await asyncio.sleep(0.01)
        got = [await tasks[0]]
        got_passer = await asyncio.wait_for(rt.score_async(passer, explain=False, run=run), 5)
        release.set()
        got += [await tasks[1], got_passer]
        large_runs.clear()
        release.clear()
        second = asyncio.ensure_future(rt.score_async(large2, explain=False, run=run))
        await asyncio.wait_for(large_runs.wait(), 5)
        got_passer2 = await asyncio.wait_for(rt.score_async(passer2, explain=False, run=run), 5)
        release.set()
        got += [await second, got_passer2]
        assert not rt._passed and not rt._passers  # nothing waits for the member that left
        return got + [await rt.score_async(r, explain=False, run=run) for r in later]

    got = asyncio.run(scenario())
    assert rt.passing_requests == 2
    _same_answers(got, expected)


def _handler(rt: ModelRuntime, models: Path) -> Any:
    """A ``ScoringHandler`` over ``rt``, its graph run inline (no server)."""
    from ds_serving.handler import ScoringHandler
    from ds_serving.metrics import ScorerMetrics

    class Host:
        runtime = rt
        champion_path = models
        last_failure = None

        async def run(self, scorer: Scorer, inputs: np.ndarray, explain: bool) -> Any:
            return scorer.run(inputs, explain=explain)

        run_locked = run

    return ScoringHandler(Host(), ScorerMetrics())  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["temporal", "point"])
def test_stream_messages_joined_before_the_state_filled_are_scored_one_by_one(
    models: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Consecutive stream messages are joined when their entities fit without evictions. The
    state can fill between that check and the joint request's turn (a request ahead of it
    commits); then scoring them as one would keep an entity that the first message evicts
    when scored alone, so the runtime refuses the join in turn and the parts go one by one."""
    from ds_serving import handler as handler_module

    def runtime(folder: str) -> ModelRuntime:
        if kind == "temporal":
            return _runtime(models / folder, 3, max_entities=3)
        return ModelRuntime.load(write_point_bundle(models / folder, smoothing={"k": 2, "n": 3}),
                                 backend="cpu", max_entities=3)

    rows = normal_rows(6, seed=12)
    rows[[0, 1, 5]] *= 8.0  # x's rows flag: its 2-of-3 smoothing tail matters
    prime = [_decoded(rows[:2], ["x", "x"]), _decoded(rows[2:3], ["y"])]
    ahead = _decoded(rows[3:4], ["z"])  # commits between the join check and the joint's turn
    messages = [_decoded(rows[4:5], ["a"]), _decoded(rows[5:6], ["x"])]
    # alone: "a" fills the third place by evicting x (least recently seen), so x starts over
    alone = runtime("a")
    expected = _one_by_one(alone, [*prime, ahead, *messages])[3:]
    if kind == "temporal":
        assert np.isnan(expected[1].scores).all()
    else:  # flagged, but its 2-of-3 smoothing starts over
        assert (expected[1].scores > alone.policy.threshold).all()
        assert not expected[1].flags.any()
    rt = runtime("b")
    for request in prime:
        rt.score(request)
    real_joined = handler_module._joined

    def joined(runtime: ModelRuntime, parts: list[Decoded]) -> Any:
        out = real_joined(runtime, parts)  # decided with x and y held: a and x fit
        assert len(out[0]) == 2
        runtime.score(ahead)
        return out

    monkeypatch.setattr(handler_module, "_joined", joined)
    refused: list[BaseException] = []
    score_async = rt.score_async

    async def recorded(request: Decoded, **kwargs: Any) -> Any:
        try:
            return await score_async(request, **kwargs)
        except Exception as exc:
            refused.append(exc)
            raise

    monkeypatch.setattr(rt, "score_async", recorded)
    got, error = asyncio.run(_handler(rt, models).score_consecutive(
        rt, [(m, False) for m in messages]))
    assert error is None
    _same_answers(got, expected)
    assert [type(e) for e in refused] == [JoinEvicts]  # the joint, in turn; then one by one


def test_a_group_whose_commit_fails_is_not_scored_again(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three requests of one entity are scored as one group; its commit raises after writing
    the windows (a bug or a memory error). Every member answers with the failure instead of
    scoring its rows again on top (they would count twice in the entity's history), and a
    stream's joined messages are not retried one by one on it either."""
    from ds_serving.runtime import CommitFailed

    requests, rt = _one_entity_group(models, seed=13)
    real_commit = rt.state.commit
    windows_run: list[int] = []

    def broken(staged: Any) -> None:
        real_commit(staged)
        raise MemoryError("no room for the alert state")

    monkeypatch.setattr(rt.state, "commit", broken)

    async def scenario() -> list[Any]:
        gate = asyncio.Event()
        slow = _gated_run(gate, windows_run)

        tasks = [asyncio.ensure_future(rt.score_async(r, explain=False, run=slow))
                 for r in requests]
        await asyncio.sleep(0.01)  # the three formed one group, whose graph run waits
        gate.set()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    got = asyncio.run(scenario())
    assert [type(g) for g in got] == [CommitFailed] * 3
    assert "MemoryError: no room for the alert state" in str(got[2])
    assert windows_run == [7]  # the group's run only: nobody scored the rows again


def test_joined_stream_messages_whose_commit_fails_are_not_retried_one_by_one(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ds_serving.runtime import CommitFailed

    rt = _point_runtime(models, smoothing={"k": 2, "n": 3})
    rows = normal_rows(2, seed=14)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError("no room for the smoothing state")

    monkeypatch.setattr(rt.state, "flag", broken)
    scored: list[int] = []
    score_async = rt.score_async

    async def counted(request: Decoded, **kwargs: Any) -> Any:
        scored.append(len(request.rows))
        return await score_async(request, **kwargs)

    monkeypatch.setattr(rt, "score_async", counted)
    messages = [(_decoded(rows[:1], ["a"]), False), (_decoded(rows[1:], ["b"]), False)]
    got, error = asyncio.run(_handler(rt, models).score_consecutive(rt, messages))
    assert got == [] and isinstance(error, CommitFailed)
    assert scored == [2]  # the joint only


def test_a_replaced_model_whose_state_moved_refuses_late_requests(models: Path) -> None:
    """Scoring on a model after its reload completed (a caller holding on to the old runtime;
    the server checks requests against the serving model again instead): when the new model
    took the state over as copies (another window), a late request is refused rather than
    committed into state nothing reads; with the same window and policy the state is shared
    and the request counts."""
    from ds_serving.runtime import StateMoved

    rows = np.random.default_rng(15).normal(size=(4, F)).astype(np.float32)

    async def inline(scorer: Scorer, inputs: np.ndarray, explain: bool):  # type: ignore[no-untyped-def]
        return scorer.run(inputs, explain=explain)

    for window, moved in ((4, True), (3, False)):
        old, new = _runtime(models / f"a{window}", 3), _runtime(models / f"b{window}", window)
        old.score(_decoded(rows[:2], ["x", "x"]))
        new.inherit_state(old)
        asyncio.run(new.adopt_inherited())
        late = _decoded(rows[2:3], ["x"])
        if moved:
            with pytest.raises(StateMoved, match="was replaced and its per-entity state moved"):
                asyncio.run(old.score_async(late, explain=False, run=inline))
            with pytest.raises(StateMoved):
                old.score(late)
            assert new.score(late).n_scored == 0  # x's 2 carried rows + this one < 4
        else:
            asyncio.run(old.score_async(late, explain=False, run=inline))
            assert new.score(_decoded(rows[3:4], ["x"])).n_scored == 1  # the late row counted


def test_a_request_refused_behind_a_waiting_one_passes_once_that_one_has(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the door opens, a request that arrives before the ones already waiting have looked
    at it is refused (one of them still waits ahead); once that one has passed, the refused
    one may pass too, and is woken to do so instead of waiting for the large one's commit."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 30)
    rows = np.random.default_rng(16).normal(size=(46, F)).astype(np.float32)
    large = _decoded(rows[:40], [f"h{i % 10}" for i in range(40)])
    waiting, arriving = _decoded(rows[40:43], ["x"] * 3), _decoded(rows[43:46], ["y"] * 3)
    expected = _one_by_one(_runtime(models / "a", 3), [large, waiting, arriving])
    rt = _runtime(models / "b", 3)
    release = asyncio.Event()
    run = _large_blocks(release)
    tasks: list[asyncio.Future[Any]] = []

    class Opening(runtime_module.Door):
        def __post_init__(self) -> None:
            super().__post_init__()  # the door opens: a request arrives right then
            tasks.append(asyncio.ensure_future(rt.score_async(arriving, explain=False,
                                                              run=run)))

    monkeypatch.setattr(runtime_module, "Door", Opening)

    async def scenario() -> tuple[list[Any], bool]:
        first = asyncio.ensure_future(rt.score_async(large, explain=False, run=run))
        await asyncio.sleep(0)  # the large one has its turn and is being prepared
        second = asyncio.ensure_future(rt.score_async(waiting, explain=False, run=run))
        await asyncio.wait_for(asyncio.shield(second), 5)  # passed while the large one runs
        await asyncio.sleep(0.05)
        third_passed = bool(tasks) and tasks[0].done()
        release.set()
        return [await first, second.result(), await tasks[0]], third_passed

    got, third_passed = asyncio.run(scenario())
    assert third_passed and rt.passing_requests == 2
    _same_answers(got, expected)


def test_a_group_whose_member_left_while_it_was_prepared_runs_no_graph(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large group is prepared off the loop; a member cancelled meanwhile must not have its
    rows run: the group gives way before its graph runs (it used to run it, then discard it),
    and the others are scored alone, as if the cancelled one had never come."""
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", 5)  # the 9-row group: off the loop
    requests, rt = _one_entity_group(models, seed=17)
    expected = _one_by_one(_runtime(models / "a", 3), [requests[0], requests[2]])
    windows_run: list[int] = []
    preparing, prepared = threading.Event(), threading.Event()
    prepare_group = rt._prepare_group

    def held(group: Any) -> Any:
        preparing.set()
        assert prepared.wait(10)
        return prepare_group(group)

    monkeypatch.setattr(rt, "_prepare_group", held)

    async def scenario() -> list[Any]:
        gate = asyncio.Event()
        gate.set()
        run = _gated_run(gate, windows_run)
        tasks = [asyncio.ensure_future(rt.score_async(r, explain=False, run=run))
                 for r in requests]
        while not preparing.is_set():
            await asyncio.sleep(0.001)
        tasks[1].cancel()
        await asyncio.sleep(0.01)  # the cancellation reaches the waiting member
        prepared.set()
        return [await tasks[0], await tasks[2], tasks[1].cancelled()]

    first, last, cancelled = asyncio.run(scenario())
    assert cancelled
    _same_answers([first, last], expected)
    assert windows_run == [1, 3]  # the first alone, then the last on its tail: no group run
