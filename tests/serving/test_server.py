"""The gRPC scorer against a real server on an ephemeral port: round trips, parity with dataset
scoring, temporal windows, alerts, health, reflection, metrics, hot reload and shutdown."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ds_assets.training.dataset_scoring import score_frame
from ds_serving.alerting import AlertPolicy, AlertTracker
from ds_serving.atomic import atomic_write_text
from ds_serving.bundle import CHAMPION_FILE, load_bundle, model_dir, promote, write_bundle
from ds_serving.client import ScorerClient, encode_request
from ds_serving.proto import SERVICE_NAME, scoring_pb2
from ds_serving.scoring import Scorer, score_rows
from ds_serving.server import ServerThread
from ds_serving.smoothing import Smoothing, smooth_flags
from tests.support.models import window_model
from tests.support.serving import (
    FEATURES,
    MEAN,
    POLICY,
    STD,
    normal_rows,
    scraped,
    server_config,
    write_point_bundle,
)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"




@pytest.fixture
def served(models: Path) -> Iterator[tuple[ServerThread, ScorerClient, Path]]:
    """A point model promoted and served; yields (server thread, client, bundle path)."""
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    thread = ServerThread(server_config(models))
    server = thread.start()
    client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
    try:
        yield thread, client, path
    finally:
        client.close()
        thread.stop(0)


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return, attr-defined]


# -- round trips and parity -------------------------------------------------------------------


def test_score_matches_dataset_scoring(served: tuple[ServerThread, ScorerClient, Path]) -> None:
    _, client, path = served
    rows = normal_rows(300, 1)
    rows[::37] += 80.0  # some anomalies
    hosts = np.array([f"h{i % 3}" for i in range(len(rows))])
    result = client.score(rows, hosts, explain=True)

    scorer = Scorer.from_bundle(load_bundle(path), backend="cpu")
    reference = score_rows(scorer, rows, hosts, explain=True)
    np.testing.assert_allclose(result.scores, reference.scores, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.flags, reference.flags)
    assert result.feature_errors is not None and reference.feature_errors is not None
    np.testing.assert_allclose(result.feature_errors, reference.feature_errors, atol=1e-6)
    assert result.model_version == path.name and result.n_scored == len(rows)
    assert result.flags.any() and not result.flags.all()

    # the dataset-scoring asset's function on the same rows
    frame = pd.DataFrame(rows, columns=FEATURES).assign(host_id=hosts)
    scored = score_frame(scorer, frame)
    np.testing.assert_allclose(result.scores, scored["score"].to_numpy(), atol=1e-6)
    np.testing.assert_array_equal(result.flags, scored["is_anomaly"].to_numpy())


@pytest.mark.parametrize("inline_runs", [False, True], ids=["worker-pool", "inline"])
def test_large_batches_score_the_same_on_workers_and_inline(
    models: Path, inline_runs: bool
) -> None:
    """Large batches run on a worker thread, or on the event loop with ``inline_runs`` (the
    stateless tier's processes): same answers, unary and streamed, explained or not."""
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    rows = normal_rows(3000, 4)  # 24,000 values: above offload_min_values
    rows[::53] += 80.0
    expected = score_rows(Scorer.from_bundle(load_bundle(path), backend="cpu"), rows, None,
                          explain=True)
    with ServerThread(server_config(models, inline_runs=inline_runs)) as server:
        assert (server._pool is None) is inline_runs
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        unary = client.score(rows, explain=True)
        streamed = list(client.score_stream(
            [encode_request(rows[:1500]), encode_request(rows[1500:])], timeout=30))
        client.close()
    np.testing.assert_allclose(unary.scores, expected.scores, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(unary.flags, expected.flags)
    assert unary.feature_errors is not None and expected.feature_errors is not None
    np.testing.assert_allclose(unary.feature_errors, expected.feature_errors, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([r.scores for r in streamed]), expected.scores,
                               rtol=0, atol=1e-6)
    assert unary.flags.any()


def test_stream_round_trip_in_order(served: tuple[ServerThread, ScorerClient, Path]) -> None:
    _, client, path = served
    scorer = Scorer.from_bundle(load_bundle(path), backend="cpu")
    batches = [normal_rows(n, seed) for seed, n in enumerate((1, 64, 7, 300))]
    requests = [encode_request(b, request_id=f"r{i}") for i, b in enumerate(batches)]
    results = list(client.score_stream(requests))
    assert [r.request_id for r in results] == ["r0", "r1", "r2", "r3"]
    for batch, result in zip(batches, results, strict=True):
        np.testing.assert_allclose(result.scores, scorer.score(batch).scores, atol=1e-6)


def test_model_info_and_health(served: tuple[ServerThread, ScorerClient, Path]) -> None:
    _, client, path = served
    info = client.info()
    manifest = load_bundle(path).manifest
    assert (info.name, info.version, list(info.features)) == ("ae", path.name, FEATURES)
    assert info.threshold == pytest.approx(manifest.threshold)
    assert info.backend == "cpu" and "CPU" in info.backend_reason
    assert info.loaded_at.endswith("+00:00") and info.loaded_at_unix > 0
    assert json.loads(info.alerting_json) == POLICY
    assert list(info.feature_mean) == MEAN
    assert client.health() == "SERVING" and client.health(SERVICE_NAME) == "SERVING"
    assert _code(lambda: client.info("other")) == grpc.StatusCode.INVALID_ARGUMENT


def test_reflection_lists_the_services(served: tuple[ServerThread, ScorerClient, Path]) -> None:
    _, client, _ = served
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    responses = list(stub.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
    ])))
    names = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    assert responses[1].file_descriptor_response.file_descriptor_proto  # generic tools work


def test_health_transitions_and_unavailable_before_a_model(models: Path) -> None:
    thread = ServerThread(server_config(models, poll_interval=3600))
    server = thread.start()
    try:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        assert client.health() == "NOT_SERVING"
        code = _code(lambda: client.score(normal_rows(1)))
        assert code == grpc.StatusCode.UNAVAILABLE
        # a champion that cannot load: the client is told why, not 'waiting for a valid ...'
        broken = write_point_bundle(models, seed=3)
        (broken / "model.onnx").write_bytes(b"garbage")
        atomic_write_text(model_dir(models, "ae") / CHAMPION_FILE,
                          json.dumps({"name": "ae", "version": broken.name}))
        assert thread.reload() == "failure"
        with pytest.raises(grpc.RpcError) as refused:
            client.score(normal_rows(1))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details().startswith(
            "no model is serving: the champion was refused: ")
        assert "checksum mismatch" in refused.value.details()
        path = write_point_bundle(models)
        promote(models, "ae", path.name)
        assert thread.reload() == "success"
        assert client.health() == "SERVING"
        assert len(client.score(normal_rows(2)).scores) == 2
        client.close()
    finally:
        thread.stop(0)


# -- temporal models: per-entity ring buffers --------------------------------------------------


def test_stream_of_single_rows_equals_dataset_scoring_for_a_temporal_model(models: Path) -> None:
    window = 4
    smoothing = {"k": 2, "n": 3}
    bundle = write_bundle(models, "tae", window_model(len(FEATURES), window), kind="window",
                          features=FEATURES, threshold=0.5, threshold_rule={"rule": "fixed"},
                          window=window, smoothing=smoothing, alerting=POLICY)
    promote(models, "tae", bundle.manifest.version)
    rng = np.random.default_rng(3)
    n = 90
    rows = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    hosts = np.array(["a", "b", "c"])[rng.integers(0, 3, size=n)]
    times = 1000.0 + 60.0 * np.arange(n)

    with ServerThread(server_config(models, "tae")) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        requests = [encode_request(rows[i : i + 1], hosts[i : i + 1], times[i : i + 1])
                    for i in range(n)]
        results = list(client.score_stream(requests))
        client.close()
    scores = np.concatenate([r.scores for r in results])
    flags = np.concatenate([r.flags for r in results])
    alerts = [(r_i, a) for r_i, r in enumerate(results) for a in r.alerts]

    scorer = Scorer.from_bundle(bundle, backend="cpu")
    reference = score_rows(scorer, rows, hosts)
    np.testing.assert_array_equal(np.isnan(scores), np.isnan(reference.scores))
    assert np.isnan(scores).sum() == 3 * (window - 1)  # each host's warm-up rows
    np.testing.assert_allclose(scores, reference.scores, atol=1e-6)
    expected_flags = smooth_flags(reference.flags, Smoothing.from_dict(smoothing), hosts)
    np.testing.assert_array_equal(flags, expected_flags)
    # alerts: the same shared tracker over the whole table gives the same events
    events = AlertTracker(AlertPolicy.from_dict(POLICY)).update(
        hosts, expected_flags, reference.scores, times
    )
    assert [(e.position, e.entity, e.kind) for e in events] == [
        (i, a.entity, a.kind) for i, a in alerts
    ]
    assert events, "the data should open at least one alert"


# -- alerts ---------------------------------------------------------------------------------------


def test_alert_hysteresis_and_cooldown(served: tuple[ServerThread, ScorerClient, Path]) -> None:
    _, client, _ = served
    normal = np.asarray(MEAN, np.float32)
    spike = normal + np.asarray(STD, np.float32) * 20
    pattern = "NAANNNAAAAA" + "N" * 6 + "AA"  # k=2 of n=3 opens, m=2 normal closes
    rows = np.stack([spike if c == "A" else normal for c in pattern])
    times = 100.0 * np.arange(len(pattern))  # rows 100 s apart: the cooldown never blocks
    result = client.score(rows, ["h1"] * len(rows), times)
    assert result.flags.tolist() == [c == "A" for c in pattern]
    got = [(a.kind, a.row, a.at) for a in result.alerts]
    # open at the 2nd anomaly (row 2), close after 2 normal rows (row 4); rows 6-7 re-open once
    # the 100 s cooldown since the close (t=400) has passed (t=700 >= 500)
    assert got[:3] == [("open", 2, 200.0), ("close", 4, 400.0), ("open", 7, 700.0)]
    assert got[3:] == [("close", 12, 1200.0), ("open", 18, 1800.0)]
    # cooldown: a re-open within 100 s of a close is suppressed
    t2 = 5000.0 + np.arange(8) * 10.0
    r2 = client.score(rows[:8], ["h2"] * 8, t2)
    assert [(a.kind, a.row) for a in r2.alerts] == [("open", 2), ("close", 4)]
    # the same policy object, fed the same flags, agrees (shared with the alerts asset)
    tracker = AlertTracker(AlertPolicy.from_dict(POLICY))
    ref = tracker.update(np.array(["h2"] * 8), r2.flags, r2.scores, t2)
    assert [(e.kind, e.position) for e in ref] == [(a.kind, a.row) for a in r2.alerts]
    # without entity ids no alert state is touched
    assert client.score(rows, None, None).alerts == []


# -- bad input ----------------------------------------------------------------------------------


def _request(rows: np.ndarray, **fields: object) -> scoring_pb2.ScoreRequest:
    request = encode_request(rows)
    for key, value in fields.items():
        if isinstance(value, list):
            getattr(request, key).extend(value)
        else:
            setattr(request, key, value)
    return request


BAD_REQUESTS = {
    "wrong feature count": ({"n_features": 3}, "INVALID_ARGUMENT", "n_features: got 3"),
    "ragged bytes": ({"features": b"\x00" * 17}, "INVALID_ARGUMENT", "not a multiple of 4 x 4"),
    "too few bytes": ({"features": b"\x00" * 16}, "INVALID_ARGUMENT", "expected n_rows"),
    "empty batch": ({"n_rows": 0, "features": b""}, "INVALID_ARGUMENT", "n_rows: empty"),
    "too many rows": ({"n_rows": 100_000}, "RESOURCE_EXHAUSTED", "limit of 1000 rows"),
    "unknown model": ({"model": "nope"}, "INVALID_ARGUMENT", "model: unknown model 'nope'"),
    "entity count": ({"entity_ids": ["a"]}, "INVALID_ARGUMENT", "entity_ids: got 1 ids for 2"),
    "timestamp count": ({"timestamps": [1.0, 2.0, 3.0]}, "INVALID_ARGUMENT", "timestamps: got 3"),
    "nan timestamp": ({"timestamps": [1.0, float("nan")]}, "INVALID_ARGUMENT", "timestamps:"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_clear_errors(models: Path, case: str) -> None:
    fields, code, message = BAD_REQUESTS[case]
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    with ServerThread(server_config(models, max_rows=1000, metrics_port=None)) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            client.score_raw(_request(normal_rows(2), **fields))
        assert info.value.code().name == code  # type: ignore[attr-defined]
        assert message in info.value.details()  # type: ignore[attr-defined]
        # still serving, and the server state is intact
        assert len(client.score(normal_rows(3)).scores) == 3
        client.close()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_features_name_row_and_feature(
    served: tuple[ServerThread, ScorerClient, Path], value: float
) -> None:
    _, client, _ = served
    rows = normal_rows(5)
    rows[3, 2] = value
    with pytest.raises(grpc.RpcError) as info:
        client.score(rows)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "row 3, feature 'latency'" in info.value.details()  # type: ignore[attr-defined]


def test_bad_message_on_a_stream_names_it(served: tuple[ServerThread, ScorerClient, Path]) -> None:
    _, client, _ = served
    good = encode_request(normal_rows(2), request_id="ok")
    bad = _request(normal_rows(2), n_features=5, request_id="broken")
    stream = client.score_stream([good, bad, good])
    assert next(stream).request_id == "ok"
    with pytest.raises(grpc.RpcError) as info:
        next(stream)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "message 1 (request_id 'broken'): n_features" in info.value.details()  # type: ignore[attr-defined]


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_endpoint(served: tuple[ServerThread, ScorerClient, Path]) -> None:
    thread, client, path = served
    rows = normal_rows(50)
    rows[-3:] += 100
    result = client.score(rows, ["h"] * 50)
    opened = sum(1 if a.kind == "open" else -1 for a in result.alerts)
    assert opened >= 1
    _code(lambda: client.score_raw(_request(normal_rows(2), n_features=9)))
    port = thread.server.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'ds_scorer_requests_total{code="OK",method="Score"} 1.0' in text
    assert 'ds_scorer_requests_total{code="INVALID_ARGUMENT",method="Score"} 1.0' in text
    assert 'ds_scorer_request_duration_seconds_count{method="Score"} 2.0' in text
    assert "ds_scorer_rows_scored_total 50.0" in text
    assert f"ds_scorer_anomalies_total {float(result.flags.sum())}" in text
    assert "ds_scorer_anomaly_score_threshold_ratio_count 50.0" in text
    assert f'ds_scorer_model_info{{backend="cpu",name="ae",version="{path.name}"}} 1.0' in text
    assert 'ds_scorer_reloads_total{result="success"} 1.0' in text
    assert "ds_scorer_model_load_duration_seconds_count 1.0" in text
    assert f"ds_scorer_open_alerts {float(opened)}" in text


def _by_store(port: int, family: str) -> dict[str, float]:
    return {dict(labels)["store"]: value
            for (_, labels), value in scraped(port, family).items()}


def test_metrics_count_entities_with_state_and_evictions(models: Path) -> None:
    """An operator sees how many entities hold state and how many were dropped at the
    --max-entities bound (their windows and alert state are lost)."""
    path = write_point_bundle(models, smoothing={"k": 2, "n": 3})
    promote(models, "ae", path.name)
    thread = ServerThread(server_config(models, max_entities=3))
    server = thread.start()
    client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
    try:
        port = server.metrics_port
        before = _by_store(port, "ds_scorer_entity_evictions")
        client.score(normal_rows(2), ["a", "b"])
        held = _by_store(port, "ds_scorer_entities")
        assert (held["alerts"], held["smoothing"]) == (2.0, 2.0)
        client.score(normal_rows(3), ["c", "d", "e"])  # five entities, room for three
        assert _by_store(port, "ds_scorer_entities")["alerts"] == 3.0
        after = _by_store(port, "ds_scorer_entity_evictions")
        for store, evicted in (("alerts", 2.0), ("smoothing", 2.0), ("windows", 0.0)):
            assert after[store] - before[store] == evicted
    finally:
        client.close()
        thread.stop(0)


# -- hot reload ---------------------------------------------------------------------------------


def test_hot_reload_under_load_has_no_failed_requests(
    served: tuple[ServerThread, ScorerClient, Path], models: Path
) -> None:
    thread, client, v1 = served
    rows = normal_rows(64, 5)
    stop = threading.Event()
    seen: dict[str, np.ndarray] = {}
    failures: list[BaseException] = []

    def hammer() -> None:
        with ScorerClient(f"127.0.0.1:{thread.server.port}", timeout=10) as own:
            while not stop.is_set():
                try:
                    result = own.score(rows)
                    seen.setdefault(result.model_version, result.scores)
                except grpc.RpcError as exc:  # pragma: no cover - the assertion reports it
                    failures.append(exc)

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.2)
        v2 = write_point_bundle(models, seed=1)
        promote(models, "ae", v2.name)  # the watcher picks it up (poll 0.05 s)
        deadline = time.time() + 20
        while v2.name not in seen and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not failures
    assert {v1.name, v2.name} <= set(seen)
    ref2 = Scorer.from_bundle(load_bundle(v2), backend="cpu").score(rows).scores
    np.testing.assert_allclose(seen[v2.name], ref2, atol=1e-6)
    assert client.info().version == v2.name


def test_corrupt_or_mismatched_bundle_is_refused_and_old_keeps_serving(
    served: tuple[ServerThread, ScorerClient, Path], models: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    thread, client, v1 = served
    pointer = model_dir(models, "ae") / CHAMPION_FILE

    v2 = write_point_bundle(models, seed=1)
    (v2 / "model.onnx").write_bytes(b"garbage" + (v2 / "model.onnx").read_bytes())
    atomic_write_text(pointer, json.dumps({"name": "ae", "version": v2.name}))
    with caplog.at_level(logging.ERROR, logger="ds_serving.server"):
        assert thread.reload() == "failure"
    assert "checksum mismatch" in (thread.server.last_failure or "")
    refused = [r.getMessage() for r in caplog.records if "model reload refused" in r.getMessage()]
    assert len(refused) == 1 and "checksum mismatch" in refused[0]
    assert f"v{v1.name} keeps serving" in refused[0]
    assert client.info().version == v1.name
    assert client.score(normal_rows(2)).model_version == v1.name
    assert thread.reload() == "failure"  # not retried until the pointer changes

    other = [*FEATURES[:3], "disk"]
    v3 = write_point_bundle(models, seed=2, features=other)
    promote(models, "ae", v3.name)
    assert thread.reload() == "failure"
    assert "differ from the served model" in (thread.server.last_failure or "")
    assert client.health() == "SERVING" and client.info().version == v1.name

    atomic_write_text(pointer, "{not json")
    assert thread.reload() == "failure"
    assert thread.reload() == "failure"  # an unreadable pointer is refused once, too
    assert client.score(normal_rows(1)).model_version == v1.name
    port = thread.server.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'ds_scorer_reloads_total{result="failure"} 3.0' in text
    for reason, count in (("bundle", 1), ("features", 1), ("pointer", 1),
                          ("stateful_model", 0)):
        assert f'ds_scorer_reload_failures_total{{reason="{reason}"}} {count}.0' in text


def test_a_version_repaired_in_place_is_loaded_without_a_new_promotion(
    served: tuple[ServerThread, ScorerClient, Path], models: Path,
) -> None:
    """A refusal waited for a new promotion or manifest: copying the good model.onnx back
    over the damaged one left the server on the old version until champion.json was touched."""
    thread, client, v1 = served
    v2 = write_point_bundle(models, seed=1)
    good = (v2 / "model.onnx").read_bytes()
    (v2 / "model.onnx").write_bytes(b"garbage")
    promote_pointer = json.dumps({"name": "ae", "version": v2.name})
    atomic_write_text(model_dir(models, "ae") / CHAMPION_FILE, promote_pointer)
    assert thread.reload() == "failure" and thread.reload() == "failure"  # refused once
    (v2 / "model.onnx").write_bytes(good)
    assert thread.reload() == "success"
    assert client.score(normal_rows(2)).model_version == v2.name != v1.name


def test_an_open_health_watch_does_not_hold_the_stop_for_its_grace_period(
    models: Path,
) -> None:
    """Client-side health checking keeps a Watch open on each connection: the stop sent it
    NOT_SERVING, then waited the whole grace period for it before closing."""
    promote(models, "ae", write_point_bundle(models).name)
    thread = ServerThread(server_config(models, grace=60.0))
    server = thread.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    seen: list[str] = []

    errors: list[Exception] = []

    def watch() -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            for reply in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120):
                seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        except grpc.RpcError as exc:
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    deadline = time.time() + 10
    while "SERVING" not in seen and time.time() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    thread.stop()
    assert time.monotonic() - started < 30  # not the 60 s grace
    watcher.join(10)
    assert not watcher.is_alive() and errors == []  # the stream ended with OK
    assert seen[0] == "SERVING" and seen[-1] == "NOT_SERVING"
    channel.close()


def test_a_request_in_flight_during_a_reload_finishes_on_the_old_model(
    served: tuple[ServerThread, ScorerClient, Path], models: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hot reload swaps the model for new requests only: one already being scored when v2 is
    promoted and loaded is answered by v1, with v1's scores."""
    import asyncio

    thread, client, v1 = served
    old = thread.server.runtime
    assert old is not None
    entered, release = threading.Event(), threading.Event()
    score_async = old.score_async

    async def held(*args: object, **kwargs: object) -> object:
        entered.set()
        while not release.is_set():
            await asyncio.sleep(0.005)
        return await score_async(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(old, "score_async", held)
    rows = normal_rows(3, seed=11)
    answers: list[object] = []
    waiting = threading.Thread(target=lambda: answers.append(client.score(rows)))
    waiting.start()
    assert entered.wait(10)
    v2 = write_point_bundle(models, seed=5)
    promote(models, "ae", v2.name)
    assert thread.reload() == "success"
    assert client.score(rows).model_version == v2.name  # new requests: v2
    release.set()
    waiting.join(10)
    [answer] = answers
    assert answer.model_version == v1.name  # type: ignore[attr-defined]
    expected = Scorer.from_bundle(load_bundle(v1), backend="cpu").score(rows).scores
    np.testing.assert_allclose(answer.scores, expected, atol=1e-6)  # type: ignore[attr-defined]


def test_requests_whose_client_gave_up_are_counted_as_cancelled(
    served: tuple[ServerThread, ScorerClient, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deadline that passes while the request is scored cancels the handler: it is counted
    (code CANCELLED) rather than vanishing from the request metrics."""
    import asyncio

    thread, _, _ = served
    runtime = thread.server.runtime
    assert runtime is not None

    async def stuck(*_args: object, **_kwargs: object) -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(runtime, "score_async", stuck)
    impatient = ScorerClient(f"127.0.0.1:{thread.server.port}", timeout=0.3)
    try:
        with pytest.raises(grpc.RpcError) as info:
            impatient.score(normal_rows(1))
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    finally:
        impatient.close()
    # a stream left by its client counts once as CANCELLED, with no made-up duration
    streaming = ScorerClient(f"127.0.0.1:{thread.server.port}", timeout=10)
    try:
        with pytest.raises(grpc.RpcError) as info:
            list(streaming.score_stream([encode_request(normal_rows(2))], timeout=0.3))
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    finally:
        streaming.close()
    metrics = thread.server.metrics
    deadline = time.time() + 5
    while time.time() < deadline and (
        metrics.requests.labels("Score", "CANCELLED")._value.get() < 1
        or metrics.requests.labels("ScoreStream", "CANCELLED")._value.get() < 1
    ):
        time.sleep(0.05)
    for method in ("Score", "ScoreStream"):
        assert metrics.requests.labels(method, "CANCELLED")._value.get() == 1, method
        assert metrics.requests.labels(method, "OK")._value.get() == 0, method
    stream_durations = metrics.request_duration.labels("ScoreStream")
    assert stream_durations._sum.get() == 0 and not any(  # nothing observed
        b.get() for b in stream_durations._buckets)


def test_an_engine_added_to_the_served_version_is_picked_up(
    served: tuple[ServerThread, ScorerClient, Path], models: Path
) -> None:
    """tensorrt_engine may finish after the champion was promoted: the served version's
    manifest then changes without a new pointer, and the watcher reloads it (here, without a
    GPU, the plan is refused by the engine selection and onnxruntime keeps serving)."""
    from ds_assets.training.tensorrt_build import attach_engine

    thread, client, v1 = served
    assert thread.reload() == "unchanged"
    attach_engine(v1, b"not an engine", {"precision": "fp16"})
    assert thread.reload() == "success"
    assert "TensorRT unavailable" in client.info().backend_reason
    assert client.score(normal_rows(2)).model_version == v1.name
    assert thread.reload() == "unchanged"

    # a change to the served version that cannot load is refused once, v1 keeps serving, and
    # the next change to that version is tried again (not only a new promotion)
    manifest = v1 / "config.json"
    good = manifest.read_text()
    atomic_write_text(manifest, good.replace('"threshold"', '"thresh"', 1))
    assert thread.reload() == "failure" and thread.reload() == "failure"
    assert client.score(normal_rows(1)).model_version == v1.name
    atomic_write_text(manifest, good)
    assert thread.reload() == "success"


# -- shutdown -----------------------------------------------------------------------------------


def test_graceful_stop_lets_in_flight_streams_finish(models: Path) -> None:
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    thread = ServerThread(server_config(models, metrics_port=None))
    server = thread.start()
    client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
    health = health_pb2_grpc.HealthStub(client.channel)
    go_on = threading.Event()

    def messages() -> Iterator[scoring_pb2.ScoreRequest]:
        yield encode_request(normal_rows(2), request_id="before")
        go_on.wait(10)
        yield encode_request(normal_rows(2), request_id="during")

    stream = client.score_stream(messages())
    assert next(stream).request_id == "before"
    stopper = threading.Thread(target=thread.stop, args=(5.0,))
    stopper.start()
    time.sleep(0.3)  # stop() has begun: health says NOT_SERVING, new RPCs are refused
    with pytest.raises(grpc.RpcError):
        health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    go_on.set()  # ...but the in-flight stream still gets its answer
    assert next(stream).request_id == "during"
    assert list(stream) == []
    stopper.join(10)
    assert not stopper.is_alive()
    assert _code(lambda: client.score(normal_rows(1))) == grpc.StatusCode.UNAVAILABLE
    client.close()


def test_oversized_message_is_refused(models: Path) -> None:
    path = write_point_bundle(models)
    promote(models, "ae", path.name)
    with ServerThread(server_config(models, max_message_bytes=4096, metrics_port=None)) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        assert _code(lambda: client.score(normal_rows(1000))) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert len(client.score(normal_rows(10)).scores) == 10
        client.close()


def test_score_histogram_small_and_large_batches_agree() -> None:
    from ds_serving.metrics import BatchHistogram

    values = np.array([0.05, 0.5, 1.0, 1.01, np.nan, 7.0, 250.0, 3.0], np.float32) * 2.0
    one_by_one, batched = (BatchHistogram("h", "h", (0.1, 1.0, 5.0)) for _ in range(2))
    for v in values:
        one_by_one.observe_many(np.array([v], np.float32), 2.0)  # the small-batch path
    batched.observe_many(np.tile(values, 4), 2.0)  # the numpy path (> 8 values)
    small = {s.labels.get("le"): s.value for s in next(iter(one_by_one.collect())).samples}
    large = {s.labels.get("le"): s.value for s in next(iter(batched.collect())).samples}
    assert small["1.0"] == 3 and small["5.0"] == 5 and small["+Inf"] == 7  # le; NaN skipped
    assert {k: 4 * v for k, v in small.items()} == pytest.approx(large)


def test_reload_keeps_per_entity_windows_and_open_alerts(models: Path) -> None:
    window = 3

    def publish(threshold: float) -> str:
        bundle = write_bundle(models, "tae", window_model(len(FEATURES), window), kind="window",
                              features=FEATURES, threshold=threshold, threshold_rule={},
                              window=window, alerting={"k": 1, "n": 1, "m": 5, "cooldown": 0})
        promote(models, "tae", bundle.manifest.version)
        return bundle.manifest.version

    publish(0.5)
    rows = np.zeros((4, len(FEATURES)), np.float32)
    rows[3] = 10.0  # far from the window mean: flagged, opens an alert
    thread = ServerThread(server_config(models, "tae", poll_interval=3600))
    server = thread.start()
    try:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        first = client.score(rows[:2], ["a", "a"])
        assert np.isnan(first.scores).all()  # warming up: W-1 rows
        old = server.runtime
        v2 = publish(0.25)
        assert thread.reload() == "success" and server.runtime is not old
        second = client.score(rows[2:], ["a", "a"])
        assert second.model_version == v2
        assert np.isfinite(second.scores).all()  # the window survived the swap
        assert [a.kind for a in second.alerts] == ["open"]
        assert server.runtime is not None and server.runtime.open_alerts == 1
        client.close()
    finally:
        thread.stop(0)


@pytest.mark.parametrize(("models_dir", "name", "said"), [
    ("missing", "ae", "does not exist: is --models right?"),
    (".", "typo", "models with a champion there: ['ae']; is --name right?"),
])
def test_a_server_waiting_on_a_wrong_path_or_name_says_what_is_there(
    models: Path, caplog: pytest.LogCaptureFixture, models_dir: str, name: str, said: str,
) -> None:
    """--models /nonexistent or a mistyped --name waited forever after 'no champion yet'."""
    promote(models, "ae", write_point_bundle(models).name)
    with caplog.at_level(logging.WARNING, logger="ds_serving.champion"):
        thread = ServerThread(server_config(models / models_dir, name=name))
        thread.start()
        thread.stop(0)
    waiting = [r.getMessage() for r in caplog.records if "no champion yet" in r.getMessage()]
    assert waiting and said in waiting[0], waiting
