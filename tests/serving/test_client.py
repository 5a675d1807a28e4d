"""ScorerClient.score_stream: a stream whose connection closes after its last answer."""

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
