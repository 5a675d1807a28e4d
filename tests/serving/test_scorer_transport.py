"""The scorer against hostile transport: undecodable request bodies, broken champion pointers,
and SIGTERM with requests in flight, on live servers (a ``ServerThread`` and ``ds-scorer serve``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ds_serving.atomic import atomic_write_bytes, atomic_write_text
from ds_serving.bundle import CHAMPION_FILE, model_dir, promote, write_bundle
from ds_serving.client import ScorerClient, encode_request
from ds_serving.proto import SERVICE_NAME, scoring_pb2
from ds_serving.server import ServerConfig, ServerThread
from ds_serving.servicer import ThrottledLog
from tests.support.models import dense_autoencoder
from tests.support.serving import FEATURES, MEAN, STD, free_port, normal_rows, write_point_bundle

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "transport-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SCORE = f"/{SERVICE_NAME}/Score"
STREAM = f"/{SERVICE_NAME}/ScoreStream"
INFO = f"/{SERVICE_NAME}/GetModelInfo"
CHECK = "/grpc.health.v1.Health/Check"
REFLECT = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
RAW = {"request_serializer": None, "response_deserializer": None}  # bytes in, bytes out


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


def server_config(models: Path, **kw: object) -> ServerConfig:
    params: dict[str, object] = {
        "models_dir": models, "name": "ae", "host": "127.0.0.1", "port": 0,
        "metrics_port": None, "poll_interval": 3600.0, "grace": 2.0,
    }
    params.update(kw)
    return ServerConfig(**params)  # type: ignore[arg-type]


def _serve(models: Path, **kw: object) -> ServerThread:
    promote(models, "ae", write_point_bundle(models).name)
    thread = ServerThread(server_config(models, **kw))
    thread.start()
    return thread


def _requests(thread: ServerThread, method: str) -> dict[str, float]:
    """``ds_scorer_requests_total`` of ``method`` by code."""
    counts: dict[str, float] = {}
    for family in thread.server.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "ds_scorer_requests_total" and sample.labels["method"] == method:
                counts[sample.labels["code"]] = sample.value
    return counts


def _code(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return, attr-defined]
    return grpc.StatusCode.OK


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# -- undecodable request bodies -----------------------------------------------------------------


def test_undecodable_unary_bodies_are_invalid_argument_counted_and_logged_once(
    models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    thread = _serve(models, token=TOKEN)
    channel = grpc.insecure_channel(f"127.0.0.1:{thread.server.port}")
    try:
        score, info = channel.unary_unary(SCORE, **RAW), channel.unary_unary(INFO, **RAW)
        with caplog.at_level(logging.INFO):
            for _ in range(50):
                with pytest.raises(grpc.RpcError) as bad:
                    score(b"\xff\xff\xff", metadata=AUTH, timeout=5)
                assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
                details = bad.value.details()  # type: ignore[attr-defined]
                assert "not a valid datasentinel.scoring.v1.ScoreRequest" in details
                assert len(details) < 300
                # no token: refused before the body is read, whatever the body
                assert _code(lambda: score(b"\xff\xff\xff", timeout=5)) == (
                    grpc.StatusCode.UNAUTHENTICATED)
            assert _code(lambda: info(b"\xff", metadata=AUTH, timeout=5)) == (
                grpc.StatusCode.INVALID_ARGUMENT)
            ok = score(encode_request(normal_rows(3)).SerializeToString(), metadata=AUTH,
                       timeout=5)
        assert len(scoring_pb2.ScoreResponse.FromString(ok).scores) == 3 * 4
        assert _requests(thread, "Score") == {"INVALID_ARGUMENT": 50, "UNAUTHENTICATED": 50,
                                              "OK": 1}
        assert _requests(thread, "GetModelInfo") == {"INVALID_ARGUMENT": 1}
        assert _tracebacks(caplog) == []
        warned = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
        assert len(warned) == 2, warned  # once per cause (Score, GetModelInfo), not per call
        assert warned[0].startswith("Score: refused an undecodable request")
    finally:
        channel.close()
        thread.stop(0)


def test_an_undecodable_stream_message_ends_the_stream_after_the_ones_before_it(
    models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    thread = _serve(models, token=TOKEN)
    channel = grpc.insecure_channel(f"127.0.0.1:{thread.server.port}")
    try:
        stream = channel.stream_stream(STREAM, **RAW)
        good = encode_request(normal_rows(2), request_id="good").SerializeToString()
        answers = []
        with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as bad:
            for answer in stream(iter([good, good, b"\x0a\xff\xff\xff\x0f"]), metadata=AUTH,
                                 timeout=5):
                answers.append(scoring_pb2.ScoreResponse.FromString(answer).request_id)
        assert answers == ["good", "good"]
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert bad.value.details().startswith("message 2: ")  # type: ignore[attr-defined]
        assert _code(lambda: list(stream(iter([b"\xff"]), timeout=5))) == (
            grpc.StatusCode.UNAUTHENTICATED)
        assert _requests(thread, "ScoreStream") == {"OK": 2, "INVALID_ARGUMENT": 1,
                                                    "UNAUTHENTICATED": 1}
        assert _tracebacks(caplog) == []
    finally:
        channel.close()
        thread.stop(0)


def test_health_and_reflection_refuse_undecodable_bodies_without_tracebacks(
    models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    thread = _serve(models, token=TOKEN)
    channel = grpc.insecure_channel(f"127.0.0.1:{thread.server.port}")
    try:
        check = channel.unary_unary(CHECK, **RAW)
        watch = channel.unary_stream("/grpc.health.v1.Health/Watch", **RAW)
        reflect = channel.stream_stream(REFLECT, **RAW)
        with caplog.at_level(logging.INFO):
            for _ in range(20):  # health needs no token: anyone can send it garbage
                assert _code(lambda: check(b"\xff\xff", timeout=5)) == (
                    grpc.StatusCode.INVALID_ARGUMENT)
                assert _code(lambda: list(watch(b"\xff\xff", timeout=5))) == (
                    grpc.StatusCode.INVALID_ARGUMENT)
                assert _code(lambda: list(reflect(iter([b"\xff"]), metadata=AUTH,
                                                  timeout=5))) == grpc.StatusCode.INVALID_ARGUMENT
                assert _code(lambda: list(reflect(iter([b"\xff"]), timeout=5))) == (
                    grpc.StatusCode.UNAUTHENTICATED)
        assert _tracebacks(caplog) == []
        assert len([r for r in caplog.records if "undecodable" in r.getMessage()]) == 3
        with ScorerClient(f"127.0.0.1:{thread.server.port}", token=TOKEN, timeout=5) as client:
            assert client.health() == "SERVING"
        listed = list(reflect(iter([reflection_pb2.ServerReflectionRequest(
            list_services="").SerializeToString()]), metadata=AUTH, timeout=5))
        services = reflection_pb2.ServerReflectionResponse.FromString(listed[0])
        assert SERVICE_NAME in [s.name for s in services.list_services_response.service]
    finally:
        channel.close()
        thread.stop(0)


def test_throttled_log_reports_a_cause_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttled = ThrottledLog(logging.getLogger("tests.throttled"), 60.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="tests.throttled"):
        logged = [throttled(logging.WARNING, "a", "bad a") for _ in range(1000)]
        assert throttled(logging.WARNING, "b", "bad b")  # another cause is not held back
        now[0] = 61.0
        assert throttled(logging.WARNING, "a", "bad a")
    assert logged.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "bad a", "bad b", "bad a (and 999 more like it in the last 61 s)"]


_VALID = encode_request(normal_rows(3), entities=["a", "b", "c"], timestamps=[1.0, 2.0, 3.0],
                        request_id="r").SerializeToString()
_PROBE = encode_request(normal_rows(3)).SerializeToString()
_BODIES = st.one_of(
    st.binary(max_size=200),
    st.integers(0, len(_VALID) - 1).map(lambda n: _VALID[:n]),  # truncated valid messages
    st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)).map(
        lambda p: _VALID[:p[0]] + bytes([p[1]]) + _VALID[p[0] + 1:]),  # one byte changed
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread,
                                                                            grpc.Channel]]:
    thread = _serve(tmp_path_factory.mktemp("fuzz") / "models", token=TOKEN)
    channel = grpc.insecure_channel(f"127.0.0.1:{thread.server.port}")
    try:
        yield thread, channel
    finally:
        channel.close()
        thread.stop(0)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(_BODIES, min_size=1, max_size=3),
       method=st.sampled_from([SCORE, STREAM, INFO, CHECK]), token=st.booleans())
def test_fuzzed_request_bytes_get_a_clean_status_and_the_server_keeps_answering(
    fuzz_server: tuple[ServerThread, grpc.Channel], bodies: list[bytes], method: str,
    token: bool,
) -> None:
    thread, channel = fuzz_server
    metadata = AUTH if token else ()
    if method == STREAM:  # a stream of up to three messages
        stream = channel.stream_stream(method, **RAW)
        code = _code(lambda: list(stream(iter(bodies), metadata=metadata, timeout=10)))
    else:
        unary = channel.unary_unary(method, **RAW)
        code = _code(lambda: unary(bodies[0], metadata=metadata, timeout=10))
    # RESOURCE_EXHAUSTED: a body that claims more rows than --max-rows (b"\x10\x80\x80\x05")
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED), code
    if not token and method != CHECK:  # probes need no token
        assert code == grpc.StatusCode.UNAUTHENTICATED
    answer = channel.unary_unary(SCORE, **RAW)(_PROBE, metadata=AUTH, timeout=10)
    assert len(scoring_pb2.ScoreResponse.FromString(answer).scores) == 3 * 4
    counted = _requests(thread, method.rsplit("/", 1)[-1])
    assert not {"UNKNOWN", "INTERNAL"} & set(counted), counted


# -- champion pointers that cannot be read --------------------------------------------------------


def test_unreadable_champion_pointers_are_refused_counted_and_logged_once_each(
    models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    thread = _serve(models)
    served = thread.server.runtime
    assert served is not None
    pointer = model_dir(models, "ae") / CHAMPION_FILE
    failures = thread.server.metrics.reload_failures
    forms = {
        "not UTF-8": lambda: atomic_write_bytes(pointer, b'{"version": "\xff\xfe"}'),
        "nested 100,000 deep": lambda: atomic_write_text(
            pointer, "[" * 100_000 + "]" * 100_000),
        "no version": lambda: atomic_write_text(pointer, '{"name": "ae"}'),
        "a version that does not exist": lambda: atomic_write_text(
            pointer, '{"name": "ae", "version": "99"}'),
    }
    client = ScorerClient(f"127.0.0.1:{thread.server.port}", timeout=10)
    try:
        for count, (form, write) in enumerate(forms.items(), start=1):
            write()
            with caplog.at_level(logging.INFO):
                caplog.clear()
                for _ in range(5):  # five polls of one unchanged file
                    assert thread.reload() == "failure", form
            refused = [r for r in caplog.records if "model reload refused" in r.getMessage()]
            assert len(refused) == 1, (form, [r.getMessage() for r in caplog.records])
            assert not refused[0].exc_info and str(pointer) in refused[0].getMessage()
            assert not [r for r in caplog.records if "watcher" in r.getMessage()]
            assert failures.labels("pointer")._value.get() == count, form
            assert thread.server.last_failure is not None
            assert client.score(normal_rows(1)).model_version == served.version
            assert client.health() == "SERVING"
        assert failures.labels("bundle")._value.get() == 0
        promote(models, "ae", served.version)  # a valid pointer again: nothing refused
        assert thread.reload() == "unchanged"
        assert failures.labels("pointer")._value.get() == len(forms)
    finally:
        client.close()
        thread.stop(0)


# -- SIGTERM / stop with requests in flight -------------------------------------------------------


def _slow_bundle(models: Path) -> str:
    """A point model whose 65,536-row runs take about 0.1 s on one thread."""
    model = dense_autoencoder(len(FEATURES), (128, 128), mean=MEAN, std=STD, seed=0)
    bundle = write_bundle(models, "ae", model, kind="dense_ae", features=FEATURES,
                          threshold=1e9, threshold_rule={"rule": "fixed"},
                          extra={"normalization": {"mean": MEAN, "std": STD}})
    promote(models, "ae", bundle.path.name)
    return bundle.path.name


def _in_flight(port: int) -> tuple[grpc.Channel, list[grpc.Future]]:
    """20 unary requests of mixed sizes (6 of 65,536 rows, 14 of 64 rows) on two channels."""
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(2)]
    calls = [c.unary_unary(SCORE, request_serializer=scoring_pb2.ScoreRequest.SerializeToString,
                           response_deserializer=scoring_pb2.ScoreResponse.FromString)
             for c in channels]
    big, small = encode_request(normal_rows(65_536)), encode_request(normal_rows(64))
    for call in calls:  # connected and warm
        call(small, timeout=30)
    futures = [calls[i % 2].future(big if i % 10 < 3 else small, timeout=30) for i in range(20)]
    return channels[0], futures


def _outcomes(futures: list[grpc.Future]) -> Counter[str]:
    codes: Counter[str] = Counter()
    for future in futures:
        try:
            future.result()
            codes["OK"] += 1
        except grpc.RpcError as exc:
            codes[exc.code().name] += 1  # type: ignore[attr-defined]
    return codes


def test_stop_lets_every_request_that_arrived_before_it_finish(models: Path) -> None:
    _slow_bundle(models)
    # graph runs on the event loop: while one runs, arriving calls queue in gRPC core, which
    # is where a shutdown used to cancel them
    thread = ServerThread(server_config(models, inline_runs=True, grace=10.0))
    server = thread.start()
    channel, futures = _in_flight(server.port)
    health = health_pb2_grpc.HealthStub(channel)
    try:
        time.sleep(0.05)
        assert not all(f.done() for f in futures)
        stopper = threading.Thread(target=thread.stop, args=(10.0,))
        stopper.start()
        outcomes = _outcomes(futures)
        stopper.join(20)
        assert not stopper.is_alive()
        assert outcomes == {"OK": 20}, outcomes
        assert _code(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=2)) == (
            grpc.StatusCode.UNAVAILABLE)
        with ScorerClient(f"127.0.0.1:{server.port}", timeout=5) as late:
            assert _code(lambda: late.score(normal_rows(1))) == grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()
        thread.stop(0)



def test_sigterm_drains_requests_in_flight_and_refuses_new_ones(models: Path) -> None:
    _slow_bundle(models)
    port = free_port()
    env = {**os.environ, "DS_SCORER_TOKEN": "", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ds_serving.cli", "serve", "--models", str(models), "--name",
         "ae", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1",
         "--grace", "5", "--workers", "1"],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    channel = None
    try:
        deadline = time.time() + 60
        while True:
            try:
                with ScorerClient(f"127.0.0.1:{port}", timeout=2) as probe:
                    if probe.health() == "SERVING":
                        break
            except grpc.RpcError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"scorer exited with {proc.returncode}: {proc.communicate()[1]}")
            assert time.time() < deadline, "scorer did not start within 60 s"
            time.sleep(0.2)
        channel, futures = _in_flight(port)
        # the 20 calls must have reached the server before the signal (those still in the
        # client when it arrives are rightly refused); 0.2 s sends 12 MB over loopback even on
        # a busy machine, while one worker needs ~0.6 s for the six large runs, so many are
        # still queued in gRPC core, not yet taken by the scorer
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert not all(f.done() for f in futures)
        outcomes = _outcomes(futures)
        assert outcomes == {"OK": 20}, outcomes  # none CANCELLED
        with ScorerClient(f"127.0.0.1:{port}", timeout=5) as late:
            assert _code(lambda: late.score(normal_rows(1))) == grpc.StatusCode.UNAVAILABLE
        assert proc.wait(30) == 0
    finally:
        if channel is not None:
            channel.close()
        if proc.poll() is None:
            proc.kill()
        stderr = proc.communicate()[1]
    assert "signal received" in stderr and "scorer stopped" in stderr
    assert "Traceback" not in stderr
