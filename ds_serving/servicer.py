"""The ``datasentinel.scoring.v1.Scorer`` gRPC service: protobuf in, handler call, protobuf out.

Each RPC turns its request message into arrays (``ScoringHandler.decode``), lets the handler
score them, and builds the response message; a failure becomes the handler's status code. RPCs
are counted here by method and status code. ``ScoreStream`` reads its stream ahead
(``ReadAhead``) so the messages that arrived while the previous ones were scored are scored
together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from ds_serving.decoding import Decoded, LiveResult
from ds_serving.handler import ScoringHandler, Unavailable
from ds_serving.proto import scoring_pb2, scoring_pb2_grpc
from ds_serving.runtime import ModelRuntime
from ds_serving.streaming import ReadAhead

_KIND = {"open": scoring_pb2.AlertEvent.OPEN, "close": scoring_pb2.AlertEvent.CLOSE}
_CODES = {c.name: c for c in grpc.StatusCode}
STREAM_READ_AHEAD_MESSAGES = 64  # most stream messages scored together
STREAM_READ_AHEAD_BYTES = 8 * 1024 * 1024  # most feature bytes a stream's read-ahead holds


def _bytes_of(request: scoring_pb2.ScoreRequest) -> int:
    return max(1, len(request.features))


def _response(
    runtime: ModelRuntime, request: scoring_pb2.ScoreRequest, result: LiveResult
) -> scoring_pb2.ScoreResponse:
    response = scoring_pb2.ScoreResponse(
        model=runtime.name,
        model_version=runtime.version,
        n_rows=request.n_rows,
        scores=result.scores.tobytes(),
        flags=result.flags.tobytes(),
        n_anomalies=result.n_anomalies,
        n_scored=result.n_scored,
        request_id=request.request_id,
    )
    if result.feature_errors is not None:
        response.feature_errors = result.feature_errors.tobytes()
    for event in result.alerts:
        response.alerts.add(
            entity_id=event.entity,
            kind=_KIND[event.kind],
            at=event.at,
            opened_at=event.opened_at,
            peak_score=event.peak_score,
            row=event.position,
        )
    return response


class ScorerService(scoring_pb2_grpc.ScorerServicer):
    """The domain RPCs; all of them read the current runtime once and finish on it."""

    def __init__(self, handler: ScoringHandler) -> None:
        self.handler = handler
        self._metrics = handler.metrics

    def _decode(self, runtime: ModelRuntime, request: scoring_pb2.ScoreRequest) -> Decoded:
        return self.handler.decode(
            runtime,
            model=request.model,
            n_rows=request.n_rows,
            n_features=request.n_features,
            data=request.features,
            entity_ids=request.entity_ids,
            timestamps=request.timestamps,
        )

    async def _score(
        self, runtime: ModelRuntime, request: scoring_pb2.ScoreRequest
    ) -> scoring_pb2.ScoreResponse:
        decoded = self._decode(runtime, request)
        result = await self.handler.score(runtime, decoded, request.explain)
        return _response(runtime, request, result)

    async def _score_messages(
        self, requests: list[scoring_pb2.ScoreRequest]
    ) -> tuple[list[scoring_pb2.ScoreResponse], Exception | None]:
        """Answers for the first consecutive stream messages, and the error of the first
        message that fails (``ScoringHandler.score_consecutive``); on a hot reload the answers
        so far, without an error."""
        try:
            runtime = self.handler.runtime()
        except Unavailable as exc:
            return [], exc
        decoded: list[Decoded] = []
        failure: Exception | None = None
        for request in requests:
            try:
                decoded.append(self._decode(runtime, request))
            except Exception as exc:
                failure = exc
                break
        results, error = await self.handler.score_consecutive(
            runtime, [(d, r.explain) for d, r in zip(decoded, requests, strict=False)]
        )
        responses = [_response(runtime, r, res)
                     for r, res in zip(requests, results, strict=False)]
        if error is None and len(results) == len(decoded):
            error = failure  # all before the message that failed to decode were scored
        return responses, error

    async def _fail(
        self, context: grpc.aio.ServicerContext, method: str, start: float, exc: Exception,
        prefix: str = "",
    ) -> None:
        code, message = self.handler.status(exc, method)
        self._metrics.record(method, code, time.perf_counter() - start)
        await context.abort(_CODES[code], prefix + message)

    async def Score(
        self, request: scoring_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> scoring_pb2.ScoreResponse:
        start = time.perf_counter()
        try:
            response = await self._score(self.handler.runtime(), request)
        except asyncio.CancelledError:  # the client went away or its deadline passed
            self._metrics.record("Score", "CANCELLED", time.perf_counter() - start)
            raise
        except Exception as exc:
            await self._fail(context, "Score", start, exc)
            raise  # abort raised already; keeps type checkers aware
        self._metrics.record("Score", "OK", time.perf_counter() - start)
        return response

    async def ScoreStream(
        self,
        request_iterator: AsyncIterator[scoring_pb2.ScoreRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[scoring_pb2.ScoreResponse]:
        """Messages that arrived while the previous ones were scored are scored together
        (``ReadAhead``); each still gets its own answer, in order. A stream that ends before
        its client finished it (cancelled, deadline, disconnect) counts once as CANCELLED."""
        reader = ReadAhead(request_iterator, _bytes_of, STREAM_READ_AHEAD_BYTES)
        context.add_done_callback(lambda _: reader.close())  # also when the client goes away
        index = 0
        accounted = False  # the stream's end is counted: finished, or failed with its code
        try:
            while True:
                runtime = self.handler.serving
                max_bytes = runtime.max_rows * runtime.n_features * 4 if runtime else 1
                pending = await reader.batch(STREAM_READ_AHEAD_MESSAGES, max_bytes)
                if not pending:
                    accounted = True
                    return
                while pending:
                    start = time.perf_counter()
                    responses, failure = await self._score_messages(pending)
                    # messages scored together share the time: each is counted with its share
                    share = (time.perf_counter() - start) / max(len(responses), 1)
                    for response in responses:
                        self._metrics.record("ScoreStream", "OK", share)
                        index += 1
                        yield response
                    if failure is not None:
                        request = pending[len(responses)]
                        rid = f" (request_id {request.request_id!r})" if request.request_id else ""
                        accounted = True  # _fail counts it with its code
                        await self._fail(context, "ScoreStream", start, failure,
                                         f"message {index}{rid}: ")
                        raise failure
                    pending = pending[len(responses):]  # the rest after a hot reload
        finally:
            reader.close()
            if not accounted:  # cancelled, or closed by gRPC while a response was sent
                self._metrics.record("ScoreStream", "CANCELLED", None)

    async def GetModelInfo(
        self, request: scoring_pb2.ModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> scoring_pb2.ModelInfo:
        start = time.perf_counter()
        try:
            info = scoring_pb2.ModelInfo(**self.handler.model_info(request.model))
        except Exception as exc:
            await self._fail(context, "GetModelInfo", start, exc)
            raise
        self._metrics.record("GetModelInfo", "OK", time.perf_counter() - start)
        return info
