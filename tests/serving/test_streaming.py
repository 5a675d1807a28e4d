"""Read-ahead batching of ScoreStream: what a batch holds, and that scoring stream messages
together answers every message exactly as scoring it alone would (scores, flags, alerts,
errors), including on a temporal model with per-entity state."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ds_serving.bundle import promote, write_bundle
from ds_serving.client import ScorerClient, decode_response, encode_request
from ds_serving.proto import scoring_pb2
from ds_serving.server import ServerThread
from ds_serving.servicer import ScorerService
from ds_serving.streaming import ReadAhead
from tests.support.models import window_model
from tests.support.serving import FEATURES, POLICY, normal_rows, server_config, write_point_bundle


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


async def _source(items: list[Any], fail: Exception | None = None) -> AsyncIterator[Any]:
    for item in items:
        yield item
    if fail is not None:
        raise fail


def test_read_ahead_hands_out_what_has_arrived_within_the_limits() -> None:
    async def scenario() -> list[list[int]]:
        reader = ReadAhead(_source([3, 1, 1, 5, 1, 1, 1]), int, budget=100)
        await asyncio.sleep(0.01)  # the pump has read everything
        batches = [await reader.batch(3, 6)]  # 3+1+1 = 5; 5 more would exceed 6
        batches.append(await reader.batch(3, 6))  # 5+1 = 6; one more would exceed 6
        batches.append(await reader.batch(2, 100))  # max_items 2
        batches.append(await reader.batch(8, 100))  # end of stream
        batches.append(await reader.batch(8, 100))  # and it stays ended
        reader.close()
        return batches

    assert asyncio.run(scenario()) == [[3, 1, 1], [5, 1], [1, 1], [], []]


def test_read_ahead_holds_at_most_its_budget_and_close_stops_the_pump() -> None:
    read: list[int] = []

    async def endless() -> AsyncIterator[int]:
        for i in range(10_000):
            read.append(i)
            yield 4

    async def scenario() -> tuple[int, int, bool]:
        reader = ReadAhead(endless(), int, budget=10)
        await asyncio.sleep(0.01)
        held_first = len(read)  # 2 messages of weight 4 fit the budget, the 3rd waits
        got = await reader.batch(64, 1000)
        await asyncio.sleep(0.01)
        reader.close()
        await asyncio.sleep(0)
        return held_first, len(got), reader._task.cancelled()

    held, got, cancelled = asyncio.run(scenario())
    assert held == 3 and got == 2 and cancelled  # the third was read, then waited for room


def test_read_ahead_reports_a_broken_stream_after_the_messages_before_the_break() -> None:
    async def scenario() -> tuple[list[int], str]:
        reader = ReadAhead(_source([1, 1], fail=RuntimeError("stream broke")), int, budget=1)
        got: list[int] = []
        while len(got) < 2:  # budget 1: one message at a time
            got += await reader.batch(8, 100)
        with pytest.raises(RuntimeError) as info:
            await reader.batch(8, 100)
        reader.close()
        return got, str(info.value)

    assert asyncio.run(scenario()) == ([1, 1], "stream broke")


async def _score_both_ways(service: ScorerService, requests: list[scoring_pb2.ScoreRequest],
                           together: bool) -> tuple[list[Any], str | None]:
    """Answers to ``requests`` as one read-ahead batch, or one at a time, and the first error."""
    if together:
        responses, failure = await service._score_messages(requests)
        return [decode_response(r) for r in responses], failure and str(failure)
    out = []
    for request in requests:
        try:
            out.append(decode_response(await service._score(service.handler.runtime(), request)))
        except Exception as exc:
            return out, str(exc)
    return out, None


def _answers(server_thread: ServerThread, requests: list[scoring_pb2.ScoreRequest],
             together: bool) -> tuple[list[Any], str | None]:
    """Score ``requests`` both ways on a running server's runtime."""
    service = ScorerService(server_thread.server.handler)  # the object grpc would call
    return server_thread.call(  # type: ignore[no-any-return]
        _score_both_ways(service, requests, together))


def _same(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.scores, y.scores, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(x.flags, y.flags)
        assert x.n_scored == y.n_scored
        if y.feature_errors is None:
            assert x.feature_errors is None
        else:
            np.testing.assert_allclose(x.feature_errors, y.feature_errors, rtol=1e-6, atol=1e-7)
        assert [(e.entity, e.kind, e.at, e.row) for e in x.alerts] == [
            (e.entity, e.kind, e.at, e.row) for e in y.alerts]


def _temporal(models: Path) -> None:
    bundle = write_bundle(models, "tae", window_model(len(FEATURES), 3), kind="window",
                          features=FEATURES, threshold=0.5, threshold_rule={"rule": "fixed"},
                          window=3, smoothing={"k": 2, "n": 3}, alerting=POLICY)
    promote(models, "tae", bundle.manifest.version)


def test_joint_scoring_of_stream_messages_equals_one_at_a_time_on_a_temporal_model(
    models: Path,
) -> None:
    _temporal(models)
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(40, len(FEATURES))).astype(np.float32)
    rows[15:25] += 4.0  # flagged: smoothing and alerts have work
    hosts = np.array(["a", "b"])[rng.integers(0, 2, size=40)]
    times = 100.0 + np.arange(40)
    cuts = [0, 1, 5, 6, 14, 22, 23, 31, 40]
    requests = [encode_request(rows[i:j], hosts[i:j], times[i:j], explain=(k % 3 == 1))
                for k, (i, j) in enumerate(itertools.pairwise(cuts))]
    answers = {}
    for together in (True, False):
        thread = ServerThread(server_config(models, "tae"))
        thread.start()
        try:
            answers[together] = _answers(thread, requests, together)
        finally:
            thread.stop()
    (joint, joint_error), (alone, alone_error) = answers[True], answers[False]
    assert joint_error is None and alone_error is None
    _same(joint, alone)
    assert sum(len(r.alerts) for r in alone) > 0


def test_a_bad_message_in_a_batch_gets_the_error_it_gets_alone_after_the_earlier_answers(
    models: Path,
) -> None:
    _temporal(models)
    rows = np.random.default_rng(8).normal(size=(12, len(FEATURES))).astype(np.float32)
    times = 100.0 + np.arange(12)
    times[7] = 50.0  # message 2 (rows 6-8) goes back in time for entity "a"
    requests = [encode_request(rows[i:i + 3], ["a"] * 3, times[i:i + 3]) for i in range(0, 12, 3)]
    answers: dict[Any, Any] = {}
    for together in (True, False):
        thread = ServerThread(server_config(models, "tae"))
        thread.start()
        try:
            answers[together] = _answers(thread, requests, together)
            if together:  # the refused message changed nothing: the entity goes on from row 5
                later = encode_request(rows[9:], ["a"] * 3, times[9:])
                answers["after"] = _answers(thread, [later], True)
        finally:
            thread.stop()
    (joint, joint_error), (alone, alone_error) = answers[True], answers[False]
    assert len(joint) == len(alone) == 2
    _same(joint, alone)
    assert joint_error == alone_error and "earlier than its previous row" in str(joint_error)
    after, error = answers["after"]
    assert error is None and after[0].n_scored == 3


def test_live_stream_scores_read_ahead_messages_in_shared_runs(models: Path) -> None:
    path = write_point_bundle(models)
    from ds_serving.bundle import load_bundle

    promote(models, "ae", load_bundle(path).manifest.version)
    rows = normal_rows(400, seed=12)
    requests = [encode_request(rows[i:i + 2], request_id=f"r{i}") for i in range(0, 400, 2)]
    with ServerThread(server_config(models)) as server:
        with ScorerClient(f"127.0.0.1:{server.port}") as client:
            results = list(client.score_stream(iter(requests)))
            alone = client.score(rows)
        runs = server.coalescer.requests  # graph runs the stream's batches asked for
    assert len(results) == len(requests)
    assert runs < len(requests)  # messages were scored together
    np.testing.assert_allclose(np.concatenate([r.scores for r in results]), alone.scores,
                               rtol=1e-6, atol=1e-7)
    assert [r.request_id for r in results] == [f"r{i}" for i in range(0, 400, 2)]


def test_joint_scoring_never_sees_an_entity_an_earlier_message_evicted(models: Path) -> None:
    """With the entity cap reached, messages are scored one by one: joined, an entity evicted
    by message 1 would still be visible to message 2."""
    _temporal(models)
    rows = np.random.default_rng(9).normal(size=(9, len(FEATURES))).astype(np.float32)
    requests = [encode_request(rows[i:i + 3], [e] * 3, 100.0 + np.arange(i, i + 3))
                for i, e in zip((0, 3, 6), "aba", strict=True)]
    answers = {}
    for together in (True, False):
        thread = ServerThread(server_config(models, "tae", max_entities=1))
        thread.start()
        try:
            answers[together] = _answers(thread, requests, together)
        finally:
            thread.stop()
    assert answers[True][1] is None and answers[False][1] is None
    _same(answers[True][0], answers[False][0])
    assert [r.n_scored for r in answers[True][0]] == [1, 1, 1]  # "a" was evicted by "b"


def test_a_hot_reload_between_groups_sends_the_rest_of_a_batch_to_the_new_model(
    models: Path,
) -> None:
    from ds_serving.bundle import load_bundle
    from ds_serving.runtime import ModelRuntime

    promote(models, "ae", load_bundle(write_point_bundle(models)).manifest.version)
    v2 = ModelRuntime.load(write_point_bundle(models, seed=1), backend="cpu")
    rows = normal_rows(6, seed=10)
    requests = [encode_request(rows[:2], ["a"] * 2, [0.0, 1.0]),
                encode_request(rows[2:4], ["a"] * 2, [2.0, 3.0], explain=True),  # 2nd group
                encode_request(rows[4:], ["a"] * 2, [4.0, 5.0], explain=True)]
    thread = ServerThread(server_config(models))
    owner = thread.start()
    try:
        service = ScorerService(owner.handler)
        handler = service.handler
        scored = handler._score_decoded

        async def then_reload(runtime: Any, decoded: Any, explain: bool) -> Any:
            result = await scored(runtime, decoded, explain)
            v2.inherit_state(runtime)
            owner.runtime = v2  # what ScorerServer.reload does after this group
            return result

        handler._score_decoded = then_reload  # type: ignore[method-assign]

        async def run() -> tuple[list[Any], Any, list[Any]]:
            first, failure = await service._score_messages(requests)
            handler._score_decoded = scored  # type: ignore[method-assign]
            rest, _ = await service._score_messages(requests[len(first):])
            return first, failure, rest

        first, failure, rest = thread.call(run())
    finally:
        thread.stop()
    assert failure is None and len(first) == 1 and len(rest) == 2
    assert first[0].model_version != v2.version
    assert [r.model_version for r in rest] == [v2.version] * 2
    assert v2.tracker.state("a").last_time == 5.0  # the new model took the entity over


@st.composite
def _streams(draw: Any) -> list[scoring_pb2.ScoreRequest]:
    """Random streams of 2-8 messages on entities a/b/c: per-message explain, sometimes a
    message without timestamps (a time-base switch) or one going back in time."""
    n_messages = draw(st.integers(2, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    requests, t = [], 100.0
    for _ in range(n_messages):
        n = draw(st.integers(1, 4))
        rows = rng.normal(size=(n, len(FEATURES))).astype(np.float32) * draw(
            st.sampled_from([1.0, 4.0]))
        hosts = rng.choice(["a", "b", "c"], size=n)
        kind = draw(st.sampled_from(["timed"] * 6 + ["untimed", "back"]))
        times = None if kind == "untimed" else t + np.arange(n) - (50.0 if kind == "back" else 0)
        t += n
        requests.append(encode_request(rows, hosts, times, explain=draw(st.booleans())))
    return requests


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=_streams())
def test_any_stream_batch_answers_as_its_messages_would_alone(
    stream_bundle: Path, requests: list[scoring_pb2.ScoreRequest],
) -> None:
    """Property: for a temporal model with smoothing and alerts, scoring a read-ahead batch
    gives every message the answer (or the first error) it gets when sent one at a time."""
    from ds_serving.runtime import ModelRuntime
    from ds_serving.server import ScorerServer

    def answers(together: bool) -> tuple[list[Any], str | None]:
        owner = ScorerServer(server_config(stream_bundle.parent.parent, "tae", metrics_port=None))
        owner.runtime = ModelRuntime.load(stream_bundle, backend="cpu")
        return asyncio.run(_score_both_ways(ScorerService(owner.handler), requests, together))

    joint, joint_error = answers(True)
    alone, alone_error = answers(False)
    _same(joint, alone)
    assert joint_error == alone_error


@pytest.fixture(scope="module")
def stream_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("stream") / "models"
    bundle = write_bundle(models, "tae", window_model(len(FEATURES), 3), kind="window",
                          features=FEATURES, threshold=0.5, threshold_rule={"rule": "fixed"},
                          window=3, smoothing={"k": 2, "n": 3}, alerting=POLICY)
    promote(models, "tae", bundle.manifest.version)
    return bundle.path
