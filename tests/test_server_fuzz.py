"""Random and malformed requests against a live temporal-model server: every one is answered OK,
INVALID_ARGUMENT or RESOURCE_EXHAUSTED, and afterwards the server still scores exactly right
(a rejected request must not leave anything behind in the per-entity windows)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bench.models import window_model
from ds_serving.bundle import promote, write_bundle
from ds_serving.client import ScorerClient
from ds_serving.proto import scoring_pb2
from ds_serving.scoring import Scorer
from ds_serving.server import ServerConfig, ServerThread

N_FEATURES, WINDOW, MAX_ROWS = 3, 3, 16
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
           grpc.StatusCode.RESOURCE_EXHAUSTED}
_probe_ids = itertools.count()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ScorerClient, Scorer]]:
    models = tmp_path_factory.mktemp("fuzz") / "models"
    bundle = write_bundle(models, "tm", window_model(N_FEATURES, WINDOW), kind="window",
                          features=["a", "b", "c"], threshold=1.0, threshold_rule={},
                          window=WINDOW, smoothing={"k": 2, "n": 2})
    promote(models, "tm", bundle.manifest.version)
    config = ServerConfig(models_dir=models, name="tm", host="127.0.0.1", port=0,
                          metrics_port=None, max_rows=MAX_ROWS, max_message_bytes=4096)
    with ServerThread(config) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        yield client, Scorer.from_bundle(bundle, backend="cpu")
        client.close()


floats = st.floats(width=32, allow_nan=True, allow_infinity=True)


@st.composite
def requests(draw: st.DrawFn) -> scoring_pb2.ScoreRequest:
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
    request.entity_ids.extend(draw(st.lists(st.text(max_size=3), min_size=n_ids,
                                            max_size=n_ids)))
    n_ts = draw(st.sampled_from([0, n_rows, max(0, n_rows - 1)]))
    request.timestamps.extend(draw(st.lists(st.floats(allow_nan=True), min_size=n_ts,
                                            max_size=n_ts)))
    return request


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests(), via_stream=st.booleans())
def test_random_requests_never_break_the_server(
    live: tuple[ScorerClient, Scorer], request: scoring_pb2.ScoreRequest, via_stream: bool
) -> None:
    client, reference = live
    try:
        if via_stream:
            responses = [r.n_scored for r in client.score_stream([request])]
            assert len(responses) == 1
        else:
            response = client.score_raw(request)
            assert len(response.scores) == 4 * response.n_rows == 4 * request.n_rows
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        assert exc.details()  # type: ignore[attr-defined]  # always says what is wrong
    event(f"status {code.name}")
    assert code in ALLOWED, code

    # a fresh entity scored right after: exactly the dataset-scoring result
    rows = np.random.default_rng(next(_probe_ids)).normal(size=(WINDOW + 2, N_FEATURES))
    probe = f"probe-{next(_probe_ids)}"
    result = client.score(rows, [probe] * len(rows))
    expected = reference.score(np.lib.stride_tricks.sliding_window_view(
        rows.astype(np.float32), WINDOW, axis=0).transpose(0, 2, 1)).scores
    assert np.isnan(result.scores[: WINDOW - 1]).all()
    np.testing.assert_allclose(result.scores[WINDOW - 1 :], expected, atol=1e-6)
