"""Hostile clients against the scorer's user strings: long entity ids cost O(bytes) and are
bounded (``--max-entity-id-bytes``, ``--max-request-metadata-mb``) before any per-row work, so
they neither exhaust memory nor stall the event loop for other clients; error messages quote
user strings by a bounded prefix (gRPC clients refuse status metadata over 8 KiB); a stream's
read-ahead counts whole messages against its budget; and ids are kept exactly as sent (ids
that differ by a trailing NUL are different entities)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ds_serving import handler as handler_module
from ds_serving import servicer
from ds_serving.alerting import AlertPolicy, AlertTracker, TimeOrderError
from ds_serving.bundle import promote, write_bundle
from ds_serving.client import ScorerClient, encode_request
from ds_serving.decoding import (
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    RequestError,
    RequestLimits,
    check_metadata,
)
from ds_serving.handler import MAX_STATUS_BYTES, bounded
from ds_serving.proto import scoring_pb2
from ds_serving.runtime import OFF_LOOP_ROWS
from ds_serving.server import ServerConfig, ServerThread
from ds_serving.streaming import ReadAhead, held_bytes
from ds_serving.windows import QUOTE_CHARS, EntityWindows, entity_groups, quoted
from tests.support.models import window_model
from tests.support.serving import FEATURES, normal_rows, server_config, write_point_bundle

SCORE = "/datasentinel.scoring.v1.Scorer/Score"
SHORT = 400  # a status message quoting a user string by its prefix stays about this short


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


def _request(n: int, ids: list[str] | None = None, **fields: Any) -> scoring_pb2.ScoreRequest:
    return encode_request(normal_rows(n, 1), ids, **fields)


def _error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def _serve(models: Path, **config: Any) -> ServerThread:
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    thread = ServerThread(server_config(models, metrics_port=None, **config))
    thread.start()
    return thread


@pytest.fixture
def served(models: Path) -> Iterator[tuple[ServerThread, ScorerClient]]:
    thread = _serve(models)
    client = ScorerClient(f"127.0.0.1:{thread.server.port}", timeout=30)
    try:
        yield thread, client
    finally:
        client.close()
        thread.stop(0)


# -- the limits, unit by unit ----------------------------------------------------------------


def test_ids_within_the_limits_come_back_as_the_strings_sent() -> None:
    limits = RequestLimits(max_entity_id_bytes=8, max_metadata_bytes=64)
    ids = ["a" * 8, "é" * 4, "h\x00"]  # 8 bytes, 8 bytes (2 each in UTF-8), 2 bytes
    assert check_metadata(limits, entity_ids=ids) == ids
    with pytest.raises(RequestError) as info:
        check_metadata(limits, entity_ids=["ok", "é" * 5])  # 5 characters, 10 bytes
    assert info.value.code == INVALID_ARGUMENT
    assert "row 1 has an id of 10 bytes, over the limit of 8" in str(info.value)
    with pytest.raises(RequestError) as info:
        check_metadata(limits, entity_ids=["a" * 8] * 8, model="m")  # 64 + 1 bytes
    assert info.value.code == RESOURCE_EXHAUSTED
    assert "65 bytes together exceed the limit of 64" in str(info.value)
    with pytest.raises(RequestError) as info:
        check_metadata(limits, entity_ids=[], request_id="r" * 65)
    assert info.value.code == RESOURCE_EXHAUSTED and "request_id" in str(info.value)


def test_a_huge_id_is_refused_in_time_linear_in_its_bytes() -> None:
    """No fixed-width array: the refusal reads each id once (a 16 MiB id took 25 s before)."""
    start = time.perf_counter()
    with pytest.raises(RequestError) as info:
        check_metadata(RequestLimits(), entity_ids=["x" * (16 << 20)])
    assert time.perf_counter() - start < 0.5
    assert len(str(info.value)) < SHORT and "16777216 bytes" in str(info.value)


def test_messages_quote_a_bounded_prefix() -> None:
    assert quoted("host-1") == "'host-1'"
    long = quoted("x" * 20_000)
    assert long.startswith("'" + "x" * QUOTE_CHARS + "'") and long.endswith("(20000 chars)")
    assert len(long) < 100
    assert len(quoted("\x00" * 40)) < 100 and quoted("\x00" * 40).endswith("(40 chars)")
    assert len(quoted("\U0002ebe1" * 100)) < 100
    assert len(bounded("\u00e9" * 5000).encode()) <= MAX_STATUS_BYTES


def test_object_id_grouping_equals_the_sorted_grouping() -> None:
    """Big batches of string ids are grouped through a dict (hash once per id, no sort): the
    groups and their order are exactly what np.unique's grouping gives for the same ids."""
    rng = np.random.default_rng(3)
    for n in (65, 300, 5000):
        codes = rng.integers(0, max(2, n // 7), size=n)
        as_strings = np.array([f"e{c}" for c in codes], dtype=object)
        expected = entity_groups(codes)  # integers: the np.unique path
        got = entity_groups(as_strings)
        assert [key for key, _ in got] == [f"e{key}" for key, _ in expected]
        for (_, a), (_, b) in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_ids_differing_by_a_trailing_nul_are_different_entities() -> None:
    ids = ["hostX", "hostX\x00"] * 40  # beyond the small-batch dict path too
    for batch in (ids[:2], ids):
        groups = entity_groups(batch)
        assert [key for key, _ in groups] == ["hostX", "hostX\x00"]
    windows = EntityWindows(window=3, n_features=1)
    positions, _ = windows.push(["hostX", "hostX", "hostX\x00"], np.zeros((3, 1), np.float32))
    assert len(positions) == 0 and len(windows) == 2  # neither has 3 rows
    tracker = AlertTracker(AlertPolicy(k=1, n=1, m=1, cooldown=0))
    events = tracker.update(["hostX", "hostX\x00"], np.array([True, False]), np.ones(2))
    assert [(e.entity, e.kind) for e in events] == [("hostX", "open")]
    assert tracker.is_open("hostX") and not tracker.is_open("hostX\x00")
    with pytest.raises(TimeOrderError) as info:  # messages quote ids by a bounded prefix
        tracker.update(["y" * 5000] * 2, np.zeros(2, bool), np.zeros(2), np.array([2.0, 1.0]))
    assert len(str(info.value)) < SHORT


def test_the_client_sends_ids_exactly() -> None:
    request = encode_request(np.zeros((3, 1)), ["hostX", "hostX\x00", 7])
    assert list(request.entity_ids) == ["hostX", "hostX\x00", "7"]


# -- the stream's read-ahead budget -----------------------------------------------------------


def test_read_ahead_counts_whole_messages_against_its_budget() -> None:
    """One-row messages with 4 MiB request_ids: the budget stops the pump after what fits,
    though their features are 16 bytes each (the weight ``batch`` limits)."""
    big = 4 << 20
    pulled: list[int] = []

    async def source() -> AsyncIterator[scoring_pb2.ScoreRequest]:
        for i in range(100):
            pulled.append(i)
            yield _request(1, request_id="r" * big)

    async def scenario() -> tuple[int, int, list[int]]:
        reader = ReadAhead(source(), servicer._bytes_of, 8 << 20)
        await asyncio.sleep(0.05)  # the pump has read what the budget lets it
        read_first = len(pulled)
        sizes = [len(await reader.batch(64, 1 << 20)) for _ in range(2)]
        reader.close()
        return read_first, reader.max_held, sizes

    read_first, max_held, sizes = asyncio.run(scenario())
    # one message held (a second would pass 8 MiB) plus the one the pump waits to add
    assert read_first == 2
    assert max_held <= 8 << 20
    assert sizes == [1, 1]  # batch still joins by features: what is held decides
    assert held_bytes(_request(1, ["a" * 100], request_id="r" * 10)) > 100 + 10 + 16


class _Recording(ReadAhead[Any]):
    """How many messages a stream's read-ahead read and had not yet handed out, at most."""

    seen: list[_Recording] = []

    def __init__(self, source: AsyncIterator[Any], *args: Any, **kwargs: Any) -> None:
        self.pulled = self.handed = self.most_waiting = 0

        async def counted() -> AsyncIterator[Any]:
            async for item in source:
                self.pulled += 1
                self.most_waiting = max(self.most_waiting, self.pulled - self.handed)
                yield item

        super().__init__(counted(), *args, **kwargs)
        _Recording.seen.append(self)

    async def batch(self, max_items: int, max_weight: int) -> list[Any]:
        out = await super().batch(max_items, max_weight)
        self.handed += len(out)
        return out


def test_a_stream_that_reads_no_answers_cannot_make_the_server_hold_its_messages(
    served: tuple[ServerThread, ScorerClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = served
    monkeypatch.setattr(servicer, "ReadAhead", _Recording)
    _Recording.seen.clear()
    messages = [_request(1, request_id=f"{i:03d}" + "r" * (4 << 20)) for i in range(12)]
    stream = client._stub.ScoreStream(iter(messages), timeout=60)  # not read yet
    time.sleep(1.5)  # the client sends what flow control lets it; the server reads ahead
    answers = [response.request_id[:3] for response in stream]
    assert answers == [f"{i:03d}" for i in range(12)]
    (reader,) = _Recording.seen
    assert reader.pulled == 12
    assert reader.most_waiting <= 2  # 4 MiB each against 8 MiB; before: all of them


# -- live: the event loop keeps answering while long ids are decoded ------------------------


def _probe_during_big_calls(
    port: int, payload: bytes, rounds: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]], list[str]]:
    """(probe calls, big calls) as (start, end), and the big calls' status codes: a 1-row
    client calls back to back while another sends ``payload`` ``rounds`` times."""
    big_channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)]
    )
    probe_channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    big = big_channel.unary_unary(SCORE, request_serializer=None, response_deserializer=None)
    probe = probe_channel.unary_unary(SCORE, request_serializer=None, response_deserializer=None)
    one_row = _request(1).SerializeToString()
    probes: list[tuple[float, float]] = []
    stop = threading.Event()

    def probing() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            probe(one_row, timeout=30)
            probes.append((start, time.perf_counter()))
            time.sleep(0.001)

    worker = threading.Thread(target=probing, daemon=True)
    worker.start()
    calls: list[tuple[float, float]] = []
    codes: list[str] = []
    try:
        time.sleep(0.3)
        for _ in range(rounds):
            start = time.perf_counter()
            try:
                big(payload, timeout=60)
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
            calls.append((start, time.perf_counter()))
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(30)
        big_channel.close()
        probe_channel.close()
    return probes, calls, codes


@pytest.mark.parametrize("shape", ["max-rows of 256-byte ids", "one 1000-char id"])
def test_other_clients_stay_fast_while_long_ids_are_decoded(models: Path, shape: str) -> None:
    """The largest accepted shapes: 65,536 rows of 256-byte ids at the default limits; 65,536
    rows with one 1,000-character id where the per-id limit allows it (the audit's request:
    the fixed-width array took 2.5-10 s on the loop, a concurrent 1-row call 1.7-6.5 s)."""
    n = 65_536
    if shape == "one 1000-char id":
        thread = _serve(models, max_entity_id_bytes=1000)
        ids = [f"host-{i % 64:03d}" for i in range(n)]
        ids[n // 2] = "L" * 1000
    else:
        thread = _serve(models)
        ids = [f"host-{i % 64:03d}".ljust(256, "x") for i in range(n)]
        assert sum(map(len, ids)) == RequestLimits().max_metadata_bytes  # fills the budget
    try:
        payload = _request(n, ids).SerializeToString()
        probes, calls, codes = _probe_during_big_calls(thread.server.port, payload, rounds=4)
    finally:
        thread.stop(0)
    assert codes == ["OK"] * 4
    worst = max(end - start for start, end in probes)
    assert worst < 0.25, f"a 1-row call took {worst * 1000:.0f} ms while long ids decoded"
    answered_during = [
        (s, e) for s, e in probes if any(cs < s and e < ce for cs, ce in calls)
    ]
    assert answered_during, "no 1-row call was answered while a big call was in flight"


def test_a_temporal_models_largest_requests_leave_the_event_loop_free(models: Path) -> None:
    """A temporal model's requests of 65,536 entities: grouping, time checks, staging the
    windows (gathering them) and committing run off the loop, so a call that needs no turn
    (GetModelInfo) is answered meanwhile. (Staging ran on the loop: 0.3-0.65 s per request.)"""
    window = 16
    bundle = write_bundle(models, "ae", window_model(len(FEATURES), window), kind="window",
                          features=FEATURES, threshold=1e9, threshold_rule={"rule": "fixed"},
                          window=window)
    promote(models, "ae", bundle.path.name)
    thread = ServerThread(server_config(models, metrics_port=None))
    thread.start()
    n = 65_536
    payload = _request(n, [f"host-{i:05d}".ljust(256, "x") for i in range(n)]).SerializeToString()
    channel = grpc.insecure_channel(
        f"127.0.0.1:{thread.server.port}", options=[("grpc.max_send_message_length", 64 << 20)])
    big = channel.unary_unary(SCORE, request_serializer=None, response_deserializer=None)
    info = channel.unary_unary("/datasentinel.scoring.v1.Scorer/GetModelInfo",
                               request_serializer=None, response_deserializer=None)
    empty = scoring_pb2.ModelInfoRequest().SerializeToString()
    calls: list[tuple[float, float]] = []
    probes: list[tuple[float, float]] = []

    def sending() -> None:
        for _ in range(4):  # the first fills every tail, the others complete 65,536 windows
            start = time.perf_counter()
            scoring_pb2.ScoreResponse.FromString(big(payload, timeout=60))
            calls.append((start, time.perf_counter()))

    sender = threading.Thread(target=sending, daemon=True)
    try:
        info(empty, timeout=10)
        sender.start()
        while sender.is_alive():
            start = time.perf_counter()
            info(empty, timeout=30)
            probes.append((start, time.perf_counter()))
            time.sleep(0.001)
        sender.join()
    finally:
        channel.close()
        thread.stop(0)
    assert len(calls) == 4
    during = [end - start for start, end in probes if any(cs < start < ce for cs, ce in calls)]
    assert during, "no GetModelInfo call was made while a large request was in flight"
    assert max(during) < 0.25, f"GetModelInfo took {max(during) * 1000:.0f} ms beside them"


def test_large_stream_messages_are_parsed_checked_and_answered_off_the_loop(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream message of 4,096 rows or more is parsed, its ids checked and its answer built
    on a worker thread, as a ``Score`` call is, and so is joining messages that arrived together:
    on the loop they held it ~100 ms per 65,536-row message with long ids (a concurrent
    GetModelInfo waited that long)."""
    threads: dict[str, set[str]] = {"parse": set(), "decode": set(), "answer": set()}

    def recorded(what: str, fn: Any, large: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if large(*args):  # small ones stay on the loop by design
                threads[what].add(threading.current_thread().name)
            return fn(*args, **kwargs)
        return call

    def rows(requests: list[Any]) -> int:
        return sum(r.n_rows for r in requests)

    monkeypatch.setattr(servicer, "parse", recorded(
        "parse", servicer.parse,
        lambda kind, body: isinstance(body, bytes) and len(body) >= servicer.OFF_LOOP_BYTES))
    monkeypatch.setattr(servicer.ScorerService, "_decode_each", recorded(
        "decode", servicer.ScorerService._decode_each,
        lambda self, runtime, requests: rows(requests) >= OFF_LOOP_ROWS))
    monkeypatch.setattr(servicer, "_responses", recorded(
        "answer", servicer._responses,
        lambda runtime, requests, results: rows(requests) >= OFF_LOOP_ROWS))
    joins: list[tuple[int, str]] = []  # messages joined into one request, and where

    def joined(runtime: Any, parts: list[Any]) -> Any:
        joins.append((len(parts), threading.current_thread().name))
        return real_joined(runtime, parts)

    real_joined = handler_module._joined
    monkeypatch.setattr(handler_module, "_joined", joined)
    thread = _serve(models)
    try:
        client = ScorerClient(f"127.0.0.1:{thread.server.port}", timeout=60)
        n = 8_192
        request = _request(n, [f"host-{i:05d}".ljust(128, "x") for i in range(n)])
        assert request.ByteSize() >= servicer.OFF_LOOP_BYTES
        small = _request(2_048, [f"host-{i:05d}" for i in range(2_048)])
        answers = list(client.score_stream([request, request, *[small] * 16]))
        client.close()
    finally:
        thread.stop(0)
    assert [len(a.scores) for a in answers] == [n, n, *[2_048] * 16]
    loop_thread = "ds-scorer"  # ServerThread's loop
    for what, names in threads.items():
        assert names and loop_thread not in names, (what, names)
    # messages that arrived while others were scored join; 4,096 rows or more join off the loop
    assert any(count > 1 for count, _ in joins), joins
    assert all(name != loop_thread for count, name in joins if count > 1), joins


def test_an_over_limit_id_is_refused_before_any_per_row_work(
    served: tuple[ServerThread, ScorerClient],
) -> None:
    thread, client = served
    channel = grpc.insecure_channel(
        f"127.0.0.1:{thread.server.port}", options=[("grpc.max_send_message_length", 64 << 20)]
    )
    call = channel.unary_unary(SCORE, request_serializer=None, response_deserializer=None)
    payload = _request(1, ["X" * (16 << 20)]).SerializeToString()
    start = time.perf_counter()
    error = _error(lambda: call(payload, timeout=30))
    took = time.perf_counter() - start
    channel.close()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert took < 1.0, f"refusing a 16 MiB id took {took:.1f} s"
    assert "--max-entity-id-bytes" in error.details() and len(error.details()) < SHORT
    # the budget: 65,536 rows of 256-byte ids fill it exactly, the model name tips it over
    ids = ["y" * 256] * 65_536
    error = _error(lambda: client.score_raw(_request(65_536, ids, model="ae")))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-request-metadata-mb" in error.details()
    assert len(client.score(normal_rows(2), ["ok", "y" * 256]).scores) == 2  # still serving


# -- live: error messages quote user strings by a bounded prefix ----------------------------


def test_a_huge_model_name_is_refused_with_a_short_message(
    served: tuple[ServerThread, ScorerClient],
) -> None:
    _, client = served
    model = "m" * 20_000
    for call in (
        lambda: client.score_raw(_request(1, model=model)),
        lambda: client.info(model),
        lambda: next(client.score_stream([_request(1, model=model, request_id="r1")])),
    ):
        error = _error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert "unknown model" in error.details() and "(20000 chars)" in error.details()
        assert len(error.details()) < SHORT


def test_a_huge_stream_request_id_is_quoted_by_a_prefix(
    served: tuple[ServerThread, ScorerClient],
) -> None:
    _, client = served
    bad = _request(1, model="other", request_id="r" * 20_000)
    error = _error(lambda: next(client.score_stream([bad])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert len(error.details()) < SHORT


# -- live: ids exactly as sent ----------------------------------------------------------------


def test_a_trailing_nul_makes_a_different_entity_on_the_server(models: Path) -> None:
    bundle = write_bundle(models, "tae", window_model(len(FEATURES), 3), kind="window",
                          features=FEATURES, threshold=0.5, threshold_rule={}, window=3)
    promote(models, "tae", bundle.manifest.version)
    with ServerThread(server_config(models, "tae", metrics_port=None)) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        rows = normal_rows(4)
        assert np.isnan(client.score(rows[:2], ["hostX", "hostX"]).scores).all()
        # one entity would have its 3rd row here, and a full window
        assert np.isnan(client.score(rows[2:3], ["hostX\x00"]).scores).all()
        assert not np.isnan(client.score(rows[3:4], ["hostX"]).scores).any()
        client.close()


# -- fuzz: long strings everywhere ------------------------------------------------------------

ID_BYTES, BUDGET = 48, 2048


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScorerClient]:
    models = tmp_path_factory.mktemp("limits") / "models"
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    config = ServerConfig(models_dir=models, name="ae", host="127.0.0.1", port=0,
                          metrics_port=None, max_rows=16, max_entity_id_bytes=ID_BYTES,
                          max_request_metadata_bytes=BUDGET)
    with ServerThread(config) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        yield client
        client.close()


def _long_text() -> st.SearchStrategy[str]:
    """Short text with control characters and NULs, or a repeated chunk of up to 20,000."""
    return st.one_of(
        st.text(max_size=8),
        st.text(min_size=1, max_size=60),
        st.builds(lambda chunk, n: (chunk * n)[:20_000],
                  st.text(min_size=1, max_size=3), st.integers(1, 20_000)),
    )


def _expected(ids: list[str], model: str, request_id: str) -> set[str]:
    """The statuses the limits and the model check may give a request of well-formed rows:
    ``request_id`` counts toward the budget where the servicer passes it to the handler."""
    sizes = [len(e.encode()) for e in ids]
    if any(size > ID_BYTES for size in sizes):
        return {"INVALID_ARGUMENT"}
    out = set()
    for extra in {0, len(request_id.encode())}:
        if sum(sizes) + len(model.encode()) + extra > BUDGET:
            out.add("RESOURCE_EXHAUSTED")
        elif model not in ("", "ae") or not all(ids):
            out.add("INVALID_ARGUMENT")
        else:
            out.add("OK")
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large,
                                                                   HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(_long_text(), min_size=1, max_size=6),
    model=st.one_of(st.just(""), st.just("ae"), _long_text()),
    request_id=_long_text(),
    stream=st.booleans(),
)
def test_long_strings_are_bounded_and_quoted_briefly(
    limited: ScorerClient, ids: list[str], model: str, request_id: str, stream: bool
) -> None:
    client = limited
    request = _request(len(ids), ids, model=model, request_id=request_id)
    expected = _expected(ids, model, request.request_id)
    try:
        if stream:
            response = next(client.score_stream([request], timeout=10))
        else:
            response = client.score_raw(request)
        code = "OK"
        assert response.request_id == request.request_id
    except grpc.RpcError as exc:
        code = exc.code().name
        assert len((exc.details() or "").encode()) <= MAX_STATUS_BYTES
        assert len(exc.details() or "") < SHORT + 2 * QUOTE_CHARS, exc.details()
    assert code in expected
    if model not in ("", "ae"):
        error = _error(lambda: client.info(model))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(error.details()) < SHORT + 2 * QUOTE_CHARS
    # the server still scores exactly as sent ids want it to
    assert client.score(normal_rows(1), ["probe"]).n_scored == 1


def test_ids_are_read_a_slice_at_a_time_and_kept_exactly() -> None:
    from ds_serving.decoding import id_list
    from ds_serving.proto.datasentinel.scoring.v1 import scoring_pb2

    ids = [f"host-{i}" + "\x00" * (i % 2) for i in range(10_000)]  # NUL-trailing ids differ
    request = scoring_pb2.ScoreRequest(entity_ids=ids)
    assert id_list(request.entity_ids) == ids
    assert id_list(ids) is ids
