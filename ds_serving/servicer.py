"""The ``datasentinel.scoring.v1.Scorer`` gRPC service: protobuf in, handler call, protobuf out.

Each RPC parses its request body, turns the message into arrays (``ScoringHandler.decode``),
lets the handler score them, and builds the response message; a failure becomes the handler's
status code. RPCs are counted here by method and status code. ``ScoreStream`` reads its stream
ahead (``ReadAhead``) so the messages that arrived while the previous ones were scored are
scored together.

The service is registered with identity request deserializers (``add_to_server``): gRPC hands
over the raw body and the service parses it itself, after the interceptors (the bearer-token
check) have seen the call. A body that does not parse is ``INVALID_ARGUMENT``, counted, and
logged once per cause and minute (``ThrottledLog``); with grpcio's own deserializer it was
``UNKNOWN`` with a traceback per request, uncounted, and came before the token check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np

from ds_serving.decoding import INVALID_ARGUMENT, Decoded, LiveResult, RequestError
from ds_serving.event_loop import on_worker_if
from ds_serving.groups import FeatureGroups
from ds_serving.handler import ScoringHandler, Unavailable
from ds_serving.proto import SERVICE_NAME, scoring_pb2, scoring_pb2_grpc
from ds_serving.runtime import OFF_LOOP_ROWS, ModelRuntime
from ds_serving.streaming import ReadAhead, held_bytes

log = logging.getLogger(__name__)

_KIND = {"open": scoring_pb2.AlertEvent.OPEN, "close": scoring_pb2.AlertEvent.CLOSE}
_CODES = {c.name: c for c in grpc.StatusCode}
STREAM_READ_AHEAD_MESSAGES = 64  # most stream messages scored together
# unary bodies this large are parsed and checked off the event loop
OFF_LOOP_BYTES = 1 << 20
STREAM_READ_AHEAD_BYTES = 8 * 1024 * 1024  # most message bytes a stream's read-ahead holds


BAD_BODY_LOG_INTERVAL = 60.0  # seconds between log lines about one cause of bad request bodies

M = TypeVar("M", scoring_pb2.ScoreRequest, scoring_pb2.ModelInfoRequest)


class Undecodable(RequestError):
    """A request body that is not a valid protobuf message of the method's request type."""

    def __init__(self, message_type: type[Any], size: int, exc: Exception) -> None:
        super().__init__(
            INVALID_ARGUMENT,
            f"the request body ({size} bytes) is not a valid "
            f"{message_type.DESCRIPTOR.full_name} message ({type(exc).__name__}: "
            f"{str(exc)[:120]})",
        )
        self.cause = type(exc).__name__


def parse(message_type: type[M], body: bytes | M) -> M:
    """``body`` parsed as ``message_type``; a message of that type is returned as it is (the
    in-process callers). Raises ``Undecodable``."""
    if isinstance(body, message_type):
        return body
    try:
        return message_type.FromString(body)
    except Exception as exc:  # DecodeError, or whatever else the parser makes of client bytes
        raise Undecodable(message_type, len(body), exc) from None


class ThrottledLog:
    """Log lines about a cause (e.g. a method's undecodable bodies) at most once per
    ``interval`` seconds: the first occurrence at once, later ones as a count with the next line
    due. A client sending garbage in a loop costs a line a minute, not a traceback a request."""

    MAX_CAUSES = 256  # causes remembered at once (a fixed, small set in practice)

    def __init__(
        self, logger: logging.Logger, interval: float = BAD_BODY_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._causes: dict[str, list[float]] = {}  # cause -> [last logged at, suppressed since]

    def __call__(self, level: int, cause: str, message: str) -> bool:
        """Log ``message`` unless ``cause`` was logged less than ``interval`` ago; whether it
        was logged."""
        now = self._clock()
        seen = self._causes.get(cause)
        if seen is None:
            if len(self._causes) >= self.MAX_CAUSES:
                self._causes.pop(next(iter(self._causes)))
            self._causes[cause] = [now, 0]
            self._log.log(level, "%s", message)
            return True
        if now - seen[0] < self._interval:
            seen[1] += 1
            return False
        self._log.log(level, "%s (and %d more like it in the last %.0f s)", message,
                      int(seen[1]), now - seen[0])
        seen[0], seen[1] = now, 0
        return True


def _bytes_of(request: scoring_pb2.ScoreRequest) -> int:
    return max(1, len(request.features))


def _weight_of(received: _Received) -> int:
    return _bytes_of(received.message)


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
    errors = result.feature_errors
    if errors is not None:
        response.feature_errors = errors.tobytes()
    groups = runtime.groups if errors is not None and runtime.groups.any_declared else None
    for event in result.alerts:
        response.alerts.add(
            entity_id=event.entity,
            kind=_KIND[event.kind],
            at=event.at,
            opened_at=event.opened_at,
            peak_score=event.peak_score,
            row=event.position,
            top_group=_top_group(groups, errors, event.position),
        )
    return response


def _responses(
    runtime: ModelRuntime, requests: list[scoring_pb2.ScoreRequest], results: list[LiveResult]
) -> list[scoring_pb2.ScoreResponse]:
    return [_response(runtime, r, res) for r, res in zip(requests, results, strict=False)]


def _top_group(groups: FeatureGroups | None, errors: np.ndarray | None, row: int) -> str:
    """The declared feature group that contributes most to the alert row's error."""
    if groups is None or errors is None or not 0 <= row < len(errors):
        return ""
    return str(groups.top(errors[row : row + 1])[0] or "")


@dataclass(frozen=True)
class _Received:
    """A stream message and the bytes it arrived as: what the read-ahead budget counts, known
    without reading its 65,536 ids back out of the parsed message on the event loop."""

    message: scoring_pb2.ScoreRequest
    size: int


async def _parsed(
    bodies: AsyncIterator[bytes | scoring_pb2.ScoreRequest],
) -> AsyncIterator[_Received]:
    """A stream's request bodies parsed one by one (large ones on a worker thread, as ``Score``
    does); ``Undecodable`` ends it (``ReadAhead`` raises it once the messages before it are
    handed out)."""
    async for body in bodies:
        if not isinstance(body, bytes):
            yield _Received(body, held_bytes(body))
        else:
            message = await on_worker_if(len(body) >= OFF_LOOP_BYTES, parse,
                                         scoring_pb2.ScoreRequest, body)
            yield _Received(message, len(body))


class ScorerService(scoring_pb2_grpc.ScorerServicer):
    """The domain RPCs; all of them read the current runtime once and finish on it."""

    def __init__(self, handler: ScoringHandler) -> None:
        self.handler = handler
        self._metrics = handler.metrics
        self.calls = 0  # RPCs taken from gRPC so far (``ScorerServer.stop`` watches it)
        self.bad_bodies = ThrottledLog(log)

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """The RPCs by method name, taking raw request bodies (no request deserializer):
        each parses its body after the interceptors ran (``parse``)."""
        return {
            "Score": grpc.unary_unary_rpc_method_handler(
                self.Score, response_serializer=scoring_pb2.ScoreResponse.SerializeToString),
            "ScoreStream": grpc.stream_stream_rpc_method_handler(
                self.ScoreStream,
                response_serializer=scoring_pb2.ScoreResponse.SerializeToString),
            "GetModelInfo": grpc.unary_unary_rpc_method_handler(
                self.GetModelInfo, response_serializer=scoring_pb2.ModelInfo.SerializeToString),
        }

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register the service as ``add_ScorerServicer_to_server`` would, but with the bodies
        parsed here rather than by grpcio."""
        handlers = self.method_handlers()
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)

    def _decode(self, runtime: ModelRuntime, request: scoring_pb2.ScoreRequest) -> Decoded:
        return self.handler.decode(runtime, request)

    def _parse_and_decode(
        self, runtime: ModelRuntime, body: bytes
    ) -> tuple[scoring_pb2.ScoreRequest, Decoded]:
        """Parse and check a large body on a worker thread (``Score``)."""
        message = parse(scoring_pb2.ScoreRequest, body)
        return message, self._decode(runtime, message)

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
        # checking tens of thousands of rows' ids and building their answers would hold the
        # event loop (tens of milliseconds), as in ``Score``: large batches do it on a worker
        large = sum(r.n_rows for r in requests) >= OFF_LOOP_ROWS
        decoded, failure = await on_worker_if(large, self._decode_each, runtime, requests)
        results, error = await self.handler.score_consecutive(
            runtime, [(d, r.explain) for d, r in zip(decoded, requests, strict=False)]
        )
        responses = await on_worker_if(large, _responses, runtime, requests, results)
        if error is None and len(results) == len(decoded):
            error = failure  # all before the message that failed to decode were scored
        return responses, error

    def _decode_each(
        self, runtime: ModelRuntime, requests: list[scoring_pb2.ScoreRequest]
    ) -> tuple[list[Decoded], Exception | None]:
        """The messages decoded up to the first that fails, and its error."""
        decoded: list[Decoded] = []
        for request in requests:
            try:
                decoded.append(self._decode(runtime, request))
            except Exception as exc:
                return decoded, exc
        return decoded, None

    async def _fail(
        self, context: grpc.aio.ServicerContext, method: str, start: float, exc: Exception,
        prefix: str = "",
    ) -> None:
        code, message = self.handler.status(exc, method)
        self._metrics.record(method, code, time.perf_counter() - start)
        if isinstance(exc, Undecodable):
            self.bad_bodies(logging.WARNING, f"{method}: {exc.cause}",
                            f"{method}: refused an undecodable request: {prefix}{message}")
        await context.abort(_CODES[code], prefix + message)

    async def Score(
        self, request: bytes | scoring_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> scoring_pb2.ScoreResponse:
        start = time.perf_counter()
        self.calls += 1
        try:
            runtime = self.handler.runtime()
            if isinstance(request, bytes) and len(request) >= OFF_LOOP_BYTES:
                # parsing and checking a large body (tens of ms for 65,536 rows with long
                # entity ids) would hold the event loop, delaying every other client
                loop = asyncio.get_running_loop()
                message, decoded = await loop.run_in_executor(
                    None, self._parse_and_decode, runtime, request)
                while (serving := self.handler.runtime()) is not runtime:
                    # reloaded meanwhile: the old model's per-entity state has moved to the
                    # new one, so the request is checked against it and scored there (as a
                    # stream's later messages are), not committed into state no one reads
                    runtime = serving
                    decoded = await loop.run_in_executor(None, self._decode, runtime, message)
                result = await self.handler.score(runtime, decoded, message.explain)
                # so is the answer's (thousands of alert events when many entities flag at once)
                response = await loop.run_in_executor(None, _response, runtime, message, result)
            else:
                response = await self._score(runtime, parse(scoring_pb2.ScoreRequest, request))
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
        request_iterator: AsyncIterator[bytes | scoring_pb2.ScoreRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[scoring_pb2.ScoreResponse]:
        """Messages that arrived while the previous ones were scored are scored together
        (``ReadAhead``); each still gets its own answer, in order. A stream that ends before
        its client finished it (cancelled, deadline, disconnect) counts once as CANCELLED; a
        message that does not parse ends it with INVALID_ARGUMENT after the answers to the
        messages before it."""
        self.calls += 1
        reader = ReadAhead(_parsed(request_iterator), _weight_of, STREAM_READ_AHEAD_BYTES,
                           size=lambda received: max(_weight_of(received), received.size))
        context.add_done_callback(lambda _: reader.close())  # also when the client goes away
        index = 0
        accounted = False  # the stream's end is counted: finished, or failed with its code
        try:
            while True:
                runtime = self.handler.serving
                max_bytes = runtime.max_rows * runtime.n_features * 4 if runtime else 1
                try:
                    pending = [received.message for received in
                               await reader.batch(STREAM_READ_AHEAD_MESSAGES, max_bytes)]
                except Undecodable as exc:  # every message before it is answered
                    accounted = True
                    await self._fail(context, "ScoreStream", time.perf_counter(), exc,
                                     f"message {index}: ")
                    raise
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
                        accounted = True  # _fail counts it with its code
                        # the request_id is the client's string: quoted by a bounded prefix
                        await self._fail(context, "ScoreStream", start, failure,
                                         self.handler.message_prefix(index, request.request_id))
                        raise failure
                    pending = pending[len(responses):]  # the rest after a hot reload
        finally:
            reader.close()
            if not accounted:  # cancelled, or closed by gRPC while a response was sent
                self._metrics.record("ScoreStream", "CANCELLED", None)

    async def GetModelInfo(
        self, request: bytes | scoring_pb2.ModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> scoring_pb2.ModelInfo:
        start = time.perf_counter()
        self.calls += 1
        try:
            model = parse(scoring_pb2.ModelInfoRequest, request).model
            info = scoring_pb2.ModelInfo(**self.handler.model_info(model))
        except Exception as exc:
            await self._fail(context, "GetModelInfo", start, exc)
            raise
        self._metrics.record("GetModelInfo", "OK", time.perf_counter() - start)
        return info
