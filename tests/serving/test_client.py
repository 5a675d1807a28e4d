"""ScorerClient: what it sends for the inputs it is given; a stream whose connection closes
after its last answer."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from ds_serving.client import ScorerClient, encode_request
from ds_serving.proto import scoring_pb2


class _Dropped(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


class _Stub:
    """Answers ``answers`` of the messages it reads, then fails with ``code``."""

    def __init__(self, answers: int, code: grpc.StatusCode, read: int | None = None) -> None:
        self.answers, self.code, self.read = answers, code, read

    def ScoreStream(self, requests: Iterator[scoring_pb2.ScoreRequest], **_: object
                    ) -> Iterator[scoring_pb2.ScoreResponse]:
        taken = list(itertools.islice(requests, self.read))
        for request in taken[:self.answers]:
            yield scoring_pb2.ScoreResponse(request_id=request.request_id,
                                            n_scored=request.n_rows)
        raise _Dropped(self.code)


def _client(stub: _Stub) -> ScorerClient:
    client = ScorerClient("127.0.0.1:1")
    client._stub = stub  # type: ignore[assignment]
    return client


def _requests(n: int) -> list[scoring_pb2.ScoreRequest]:
    return [encode_request(np.zeros((2, 3)), request_id=str(i)) for i in range(n)]


def test_a_connection_closed_after_every_answer_ends_the_stream_normally() -> None:
    client = _client(_Stub(answers=3, code=grpc.StatusCode.UNAVAILABLE))
    results = list(client.score_stream(_requests(3)))
    assert [r.request_id for r in results] == ["0", "1", "2"]
    client.close()


@pytest.mark.parametrize("stub", [
    _Stub(answers=2, code=grpc.StatusCode.UNAVAILABLE),  # one message unanswered
    _Stub(answers=2, code=grpc.StatusCode.UNAVAILABLE, read=2),  # requests not all sent
    _Stub(answers=3, code=grpc.StatusCode.INTERNAL),  # a real failure
])
def test_a_lost_answer_or_another_failure_still_raises(stub: _Stub) -> None:
    client = _client(stub)
    with pytest.raises(grpc.RpcError) as caught:
        list(client.score_stream(_requests(3)))
    assert caught.value.code() == stub.code
    client.close()


def test_times_ids_and_frames_are_sent_as_the_server_reads_them() -> None:
    """datetime64 times went out as nanoseconds read as seconds (1.7e18, breaking cooldowns),
    bytes ids as "b'host-1'", and a frame's columns in its own order, however the model
    orders its features (a median score of 6e6)."""
    import datetime as dt

    import pandas as pd

    times = np.array(["2026-11-01T00:00:00", "2026-11-01T00:01:00"], dtype="datetime64[ns]")
    request = encode_request(np.zeros((2, 3)), [b"host-1", "host-2"], times)
    assert list(request.timestamps) == [1793491200.0, 1793491260.0]
    assert list(request.entity_ids) == ["host-1", "host-2"]
    aware = pd.Series(pd.to_datetime(times).tz_localize("Europe/Berlin"))
    assert list(encode_request(np.zeros((2, 3)), None, aware).timestamps) == [
        1793487600.0, 1793487660.0]
    stamps = [dt.datetime(2026, 11, 1, tzinfo=dt.UTC)]
    assert list(encode_request(np.zeros((1, 3)), None, stamps).timestamps) == [1793491200.0]
    assert list(encode_request(np.zeros((1, 3)), None, [12.5]).timestamps) == [12.5]
    with pytest.raises(ValueError, match="timestamps must be epoch seconds or datetime64"):
        encode_request(np.zeros((1, 3)), None, ["yesterday"])

    frame = pd.DataFrame({"host_id": ["a"], "mem": [2.0], "cpu": [1.0], "disk": [3.0]})
    with pytest.raises(ValueError, match=r"rows has named columns: pass rows\[features\]"):
        encode_request(frame)

    class Info:
        features = ["cpu", "mem", "disk"]

    client = ScorerClient("127.0.0.1:1")
    client.info = lambda model="": Info()  # type: ignore[method-assign]
    sent: list[scoring_pb2.ScoreRequest] = []
    client.score_raw = lambda r: (sent.append(r), scoring_pb2.ScoreResponse())[1]  # type: ignore[method-assign]
    client.score(frame)
    assert np.frombuffer(sent[0].features, np.float32).tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match=r"rows lack feature column\(s\) \['disk'\]"):
        client.score(frame.drop(columns=["disk"]))
    client.close()
