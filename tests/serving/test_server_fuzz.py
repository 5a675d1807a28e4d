"""Random and malformed requests against a live temporal-model server: every one is answered OK,
INVALID_ARGUMENT or RESOURCE_EXHAUSTED, and afterwards the server still scores exactly right.
The requests reuse a small pool of entity ids and a shadow keeps what the accepted ones sent, so
the probe after each request checks those entities' windows: a rejected request must not leave
anything behind in them, and an accepted one must leave exactly its rows."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ds_serving.bundle import promote, write_bundle
from ds_serving.client import ScorerClient, encode_request
from ds_serving.proto import scoring_pb2
from ds_serving.scoring import Scorer
from ds_serving.server import ServerConfig, ServerThread
from tests.support.models import window_model

N_FEATURES, WINDOW, MAX_ROWS = 3, 3, 16
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
           grpc.StatusCode.RESOURCE_EXHAUSTED}
ENTITIES = ("a", "b", "c")
_probe_seeds = itertools.count()


class Shadow:
    """What the server should hold per entity: its rows so far and its time base."""

    def __init__(self) -> None:
        self.rows: dict[str, list[np.ndarray]] = {}
        self.timed: dict[str, bool] = {}
        self.last_time: dict[str, float] = {}

    def accept(self, request: scoring_pb2.ScoreRequest) -> None:
        if not request.entity_ids:
            return
        rows = np.frombuffer(request.features, "<f4").reshape(request.n_rows, N_FEATURES)
        times = list(request.timestamps) or None
        for i, entity in enumerate(request.entity_ids):
            self.rows.setdefault(entity, []).append(rows[i])
            self.timed[entity] = times is not None
            if times is not None:
                self.last_time[entity] = times[i]

    def history(self, entity: str) -> np.ndarray:
        return np.array(self.rows.get(entity, []), np.float32).reshape(-1, N_FEATURES)


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ScorerClient, Scorer, Shadow]]:
    models = tmp_path_factory.mktemp("fuzz") / "models"
    bundle = write_bundle(models, "tm", window_model(N_FEATURES, WINDOW), kind="window",
                          features=["a", "b", "c"], threshold=1.0, threshold_rule={},
                          window=WINDOW, smoothing={"k": 2, "n": 2})
    promote(models, "tm", bundle.manifest.version)
    config = ServerConfig(models_dir=models, name="tm", host="127.0.0.1", port=0,
                          metrics_port=None, max_rows=MAX_ROWS, max_message_bytes=4096)
    with ServerThread(config) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        yield client, Scorer.from_bundle(bundle, backend="cpu"), Shadow()
        client.close()


floats = st.floats(width=32, allow_nan=True, allow_infinity=True)


@st.composite
def valid_requests(draw: st.DrawFn) -> scoring_pb2.ScoreRequest:
    """Well-formed rows for entities of the pool: the requests that change state."""
    n_rows = draw(st.integers(1, 6))
    values = draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=n_rows * N_FEATURES,
                           max_size=n_rows * N_FEATURES))
    request = scoring_pb2.ScoreRequest(
        n_rows=n_rows, n_features=N_FEATURES, features=np.asarray(values, "<f4").tobytes(),
        explain=draw(st.booleans()),
    )
    request.entity_ids.extend(draw(st.lists(st.sampled_from(ENTITIES), min_size=n_rows,
                                            max_size=n_rows)))
    if draw(st.booleans()):  # times move on from a point that may lie before an entity's last
        start = draw(st.floats(0, 1e4))
        request.timestamps.extend((start + np.arange(n_rows)).tolist())
    return request


@st.composite
def requests(draw: st.DrawFn) -> scoring_pb2.ScoreRequest:
    if draw(st.booleans()):
        return draw(valid_requests())
    n_rows = draw(st.integers(0, 6))
    n_features = draw(st.sampled_from([0, 1, N_FEATURES, N_FEATURES, 4]))
    how = draw(st.sampled_from(["exact", "exact", "bytes"]))
    if how == "exact":
        values = draw(st.lists(floats, min_size=n_rows * n_features,
                               max_size=n_rows * n_features))
        data = np.asarray(values, dtype="<f4").tobytes()
    else:
        data = draw(st.binary(max_size=120))
    declared = draw(st.one_of(st.just(n_rows), st.integers(0, 2**32 - 1)))
    request = scoring_pb2.ScoreRequest(
        model=draw(st.sampled_from(["", "tm", "other", "tm "])),
        n_rows=declared, n_features=n_features, features=data,
        explain=draw(st.booleans()), request_id=draw(st.text(max_size=4)),
    )
    n_ids = draw(st.sampled_from([0, n_rows, n_rows, n_rows + 1]))
    ids = st.one_of(st.sampled_from(ENTITIES), st.text(max_size=3))
    request.entity_ids.extend(draw(st.lists(ids, min_size=n_ids, max_size=n_ids)))
    n_ts = draw(st.sampled_from([0, n_rows, max(0, n_rows - 1)]))
    request.timestamps.extend(draw(st.lists(st.floats(allow_nan=True), min_size=n_ts,
                                            max_size=n_ts)))
    return request


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests(), via_stream=st.booleans(), probe=st.sampled_from(ENTITIES))
def test_random_requests_never_break_the_server(
    live: tuple[ScorerClient, Scorer, Shadow], request: scoring_pb2.ScoreRequest,
    via_stream: bool, probe: str,
) -> None:
    client, reference, shadow = live
    try:
        if via_stream:
            responses = [r.n_scored for r in client.score_stream([request])]
            assert len(responses) == 1
        else:
            response = client.score_raw(request)
            assert len(response.scores) == 4 * response.n_rows == 4 * request.n_rows
        code = grpc.StatusCode.OK
        shadow.accept(request)
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        assert exc.details()  # type: ignore[attr-defined]  # always says what is wrong
    event(f"status {code.name}")
    assert code in ALLOWED, code

    # an entity of the pool scored right after: exactly the dataset-scoring result of the rows
    # the accepted requests sent it, followed by the probe's rows
    rows = np.random.default_rng(next(_probe_seeds)).normal(
        size=(WINDOW + 1, N_FEATURES)).astype(np.float32)
    times = None
    if shadow.timed.get(probe):
        times = shadow.last_time[probe] + 1.0 + np.arange(len(rows))
    probe_request = encode_request(rows, [probe] * len(rows), times)
    result = client.score_raw(probe_request)
    shadow.accept(probe_request)
    history = shadow.history(probe)
    expected = np.full(len(history), np.nan)
    if len(history) >= WINDOW:
        windows = np.lib.stride_tricks.sliding_window_view(history, WINDOW, axis=0)
        expected[WINDOW - 1:] = reference.score(windows.transpose(0, 2, 1)).scores
    got = np.frombuffer(result.scores, "<f4")
    np.testing.assert_allclose(got, expected[-len(rows):], atol=1e-6)
