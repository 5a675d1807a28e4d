"""The gRPC scorer: ``datasentinel.scoring.v1.Scorer`` plus grpc.health.v1 and reflection.

One asyncio event loop (``grpc.aio``) handles every RPC; small inputs are scored on that loop,
concurrent ones together in one graph run (``RunCoalescer``), large inputs on worker threads
(onnxruntime releases the GIL). Stateful (entity-keyed) requests keep each entity's rows in
arrival order: on a point model they commit smoothing and alert updates in arrival order after
their (possibly shared) graph run; on a temporal model they hold one asyncio lock across the
run, since their windows depend on the request before, and the one holding it scores those
queued right behind it in the same run. None changes per-entity state until its graph has run,
so a cancelled request leaves none behind.
The served model is one immutable ``ModelRuntime`` reference: a request takes it once and
finishes on it, and a hot reload (load, verify, warm up in a worker thread) replaces the reference
in one assignment, so in-flight requests finish on the old model and no request ever sees a
half-loaded one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ds_serving.bundle import (
    CHAMPION_FILE,
    MANIFEST_FILE,
    BundleError,
    champion_version,
    model_dir,
    version_dir,
)
from ds_serving.coalescing import GroupPolicy, RunCoalescer
from ds_serving.metrics import ScorerMetrics
from ds_serving.proto import SERVICE_NAME, scoring_pb2, scoring_pb2_grpc
from ds_serving.runtime import (
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    Decoded,
    LiveResult,
    ModelRuntime,
    RequestError,
    can_concat,
    concat_decoded,
)
from ds_serving.scoring import Scorer
from ds_serving.streaming import ReadAhead

log = logging.getLogger(__name__)

_OPEN_METHODS = ("/grpc.health.v1.Health/",)  # probes work without the token
_KIND = {"open": scoring_pb2.AlertEvent.OPEN, "close": scoring_pb2.AlertEvent.CLOSE}
_CODES = {c.name: c for c in grpc.StatusCode}
STATELESS_REFUSAL = (
    "entity_ids: this scorer runs several processes (--processes > 1), which keep no "
    "per-entity state, so it cannot track alerts per entity; leave entity_ids empty for "
    "stateless scores, or send entity-keyed rows to a scorer started with --processes 1"
)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset), which can
    be fewer than the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass
class ServerConfig:
    """Everything ``ds-scorer serve`` can set; see the README section "Scorer service"."""

    models_dir: Path
    name: str
    host: str = "[::]"
    port: int = 50051  # 0 picks a free port (tests)
    metrics_port: int | None = 8001  # None disables the metrics endpoint; 0 picks a free port
    metrics_host: str = "0.0.0.0"
    backend: str = "auto"
    intra_op_threads: int = 1  # per graph run; 0 = onnxruntime default (one per core)
    workers: int = 0  # graph runs in parallel on worker threads; 0 = one per core
    # large graph runs on the event loop thread instead of a worker (the GIL is released while
    # onnxruntime runs): for a stateless-tier process that has a core to itself, where the
    # processes give the parallelism and a thread hop only adds cost (see processes.py)
    inline_runs: bool = False
    offload_min_values: int = 4096  # smaller inputs run inline (a thread hop costs more)
    coalesce_window: float = 0.004  # seconds a small run may wait to share a graph run
    allow_spinning: bool = False
    max_rows: int = 65_536
    max_message_bytes: int = 64 * 1024 * 1024
    max_entities: int = 100_000
    poll_interval: float = 1.0
    grace: float = 10.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set to require client certificates (mutual TLS)
    token: str | None = None
    reuse_port: bool = False  # share the port with sibling scorer processes (SO_REUSEPORT)
    stateless: bool = False  # keep no per-entity state: refuse entity ids and stateful models
    extra_options: list[tuple[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("mutual TLS (--tls-client-ca) needs --tls-cert and --tls-key too")
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        if self.token is not None and not self.token.strip():
            raise ValueError("the bearer token must not be empty")
        if not self.poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {self.poll_interval} "
                             "(0 would re-read champion.json in a busy loop)")
        if self.max_entities < 1:
            raise ValueError(f"max_entities must be >= 1, got {self.max_entities} (with 0 no "
                             "entity keeps a window, so a temporal model never scores)")
        if self.workers < 0 or self.intra_op_threads < 0:
            raise ValueError(f"workers and intra_op_threads must be >= 0 (0 = one per core), "
                             f"got {self.workers} and {self.intra_op_threads}")
        if not 0 <= self.coalesce_window <= 1:
            raise ValueError(f"coalesce window must be 0-1000 ms, got "
                             f"{self.coalesce_window * 1000:g} ms")
        if self.grace < 0:
            raise ValueError(f"grace must be >= 0 seconds, got {self.grace}")


class _TokenInterceptor(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` metadata; answers UNAUTHENTICATED otherwise."""

    def __init__(self, token: str, metrics: ScorerMetrics) -> None:
        self._expected = f"Bearer {token}".encode()
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN_METHODS):
            return handler
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                if hmac.compare_digest(given, self._expected):
                    return handler
        method = details.method.rsplit("/", 1)[-1]
        self._metrics.record(method, "UNAUTHENTICATED", 0.0)
        return _deny(handler)


def _deny(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    message = "missing or wrong bearer token: send metadata 'authorization: Bearer <token>'"

    async def unary(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(_requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(streaming, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(unary, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)


STREAM_READ_AHEAD_MESSAGES = 64  # most stream messages scored together
STREAM_READ_AHEAD_BYTES = 8 * 1024 * 1024  # most feature bytes a stream's read-ahead holds


def _bytes_of(request: scoring_pb2.ScoreRequest) -> int:
    return max(1, len(request.features))


class ScorerService(scoring_pb2_grpc.ScorerServicer):
    """The domain RPCs; all of them read the current runtime once and finish on it."""

    def __init__(self, owner: ScorerServer) -> None:
        self._owner = owner
        self._metrics = owner.metrics

    def _runtime(self) -> ModelRuntime:
        runtime = self._owner.runtime
        if runtime is None:
            raise _Unavailable(
                f"no model loaded yet: waiting for a valid {self._owner.champion_path}"
            )
        return runtime

    def _decode(self, runtime: ModelRuntime, request: scoring_pb2.ScoreRequest) -> Decoded:
        if request.entity_ids and self._owner.config.stateless:
            raise RequestError(FAILED_PRECONDITION, STATELESS_REFUSAL)
        return runtime.decode(
            model=request.model,
            n_rows=request.n_rows,
            n_features=request.n_features,
            data=request.features,
            entity_ids=request.entity_ids,
            timestamps=request.timestamps,
        )

    async def _score_decoded(
        self, runtime: ModelRuntime, decoded: Decoded, explain: bool
    ) -> LiveResult:
        return await runtime.score_async(
            decoded, explain=explain, run=self._owner.run, run_locked=self._owner.run_locked
        )

    async def _score(
        self, runtime: ModelRuntime, request: scoring_pb2.ScoreRequest
    ) -> scoring_pb2.ScoreResponse:
        decoded = self._decode(runtime, request)
        result = await self._score_decoded(runtime, decoded, request.explain)
        return self._respond(runtime, request, result)

    def _respond(
        self, runtime: ModelRuntime, request: scoring_pb2.ScoreRequest, result: LiveResult
    ) -> scoring_pb2.ScoreResponse:
        n_anomalies = int(np.count_nonzero(result.flags))
        self._metrics.scored(result.scores, result.n_scored, n_anomalies, runtime.threshold)
        response = scoring_pb2.ScoreResponse(
            model=runtime.name,
            model_version=runtime.version,
            n_rows=request.n_rows,
            scores=result.scores.tobytes(),
            flags=result.flags.tobytes(),
            n_anomalies=n_anomalies,
            n_scored=result.n_scored,
            request_id=request.request_id,
        )
        if result.feature_errors is not None:
            response.feature_errors = result.feature_errors.tobytes()
        if result.alerts:
            for event in result.alerts:
                response.alerts.add(
                    entity_id=event.entity,
                    kind=_KIND[event.kind],
                    at=event.at,
                    opened_at=event.opened_at,
                    peak_score=event.peak_score,
                    row=event.position,
                )
                self._metrics.alert_events.labels(event.kind).inc()
            self._metrics.open_alerts.set(runtime.open_alerts)
        return response

    async def _score_messages(
        self, requests: list[scoring_pb2.ScoreRequest]
    ) -> tuple[list[scoring_pb2.ScoreResponse], Exception | None]:
        """Answers for the first consecutive stream messages, scored together where they can
        be, and the error of the first message that fails (the ones after it are not scored).

        Messages join when they agree on ``explain`` and the optional fields, and when their
        entities fit the per-entity state without evictions (an eviction between two messages
        would otherwise not happen). A joint run that fails changed no state, so its messages
        are then scored one by one: every message gets exactly the answer or error it would
        have got alone. On a hot reload the answers so far come back without an error and the
        caller scores the rest on the new model."""
        try:
            runtime = self._runtime()
        except _Unavailable as exc:
            return [], exc
        decoded: list[Decoded] = []
        failure: Exception | None = None
        for request in requests:
            try:
                decoded.append(self._decode(runtime, request))
            except Exception as exc:
                failure = exc
                break
        responses: list[scoring_pb2.ScoreResponse] = []
        i = 0
        while i < len(decoded):
            j = i + 1
            while j < len(decoded) and requests[j].explain == requests[i].explain and (
                can_concat(decoded[i], decoded[j])
            ):
                j += 1
            group, parts = requests[i:j], decoded[i:j]
            joint = concat_decoded(parts)
            if len(parts) > 1 and not runtime.fits_without_eviction(joint):
                group, parts = group[:1], parts[:1]
                joint = parts[0]
            if self._owner.runtime is not runtime:
                return responses, None  # reloaded: the rest goes to the new model
            try:
                result = await self._score_decoded(runtime, joint, group[0].explain)
            except Exception as exc:
                if len(parts) == 1:
                    return responses, exc
                for request, part in zip(group, parts, strict=True):
                    if self._owner.runtime is not runtime:
                        return responses, None
                    try:
                        alone = await self._score_decoded(runtime, part, request.explain)
                    except Exception as exc:
                        return responses, exc
                    responses.append(self._respond(runtime, request, alone))
            else:
                results = result.split([len(p.rows) for p in parts])
                responses.extend(self._respond(runtime, r, res)
                                 for r, res in zip(group, results, strict=True))
            i += len(parts)
        return responses, failure

    async def _fail(
        self, context: grpc.aio.ServicerContext, method: str, start: float, exc: Exception,
        prefix: str = "",
    ) -> None:
        if isinstance(exc, RequestError):
            code = exc.code
        elif isinstance(exc, _Unavailable):
            code = "UNAVAILABLE"
        else:
            log.exception("%s failed", method)
            code = "INTERNAL"
            exc = RuntimeError(f"internal error while scoring ({type(exc).__name__}: {exc})")
        self._metrics.record(method, code, time.perf_counter() - start)
        await context.abort(_CODES[code], prefix + str(exc))

    async def Score(
        self, request: scoring_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> scoring_pb2.ScoreResponse:
        start = time.perf_counter()
        try:
            response = await self._score(self._runtime(), request)
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
                runtime = self._owner.runtime
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
            runtime = self._runtime()
            if request.model and request.model != runtime.name:
                raise RequestError(
                    INVALID_ARGUMENT,
                    f"model: unknown model {request.model!r}; this server serves "
                    f"{runtime.name!r}",
                )
            info = scoring_pb2.ModelInfo(**runtime.info())
        except Exception as exc:
            await self._fail(context, "GetModelInfo", start, exc)
            raise
        self._metrics.record("GetModelInfo", "OK", time.perf_counter() - start)
        return info


def _file_stamp(path: Path) -> Any:
    """What changes when a file is replaced (atomic rename: a new inode) or rewritten."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class _Unavailable(RuntimeError):
    pass


class ScorerServer:
    """Owns the gRPC server, the served runtime, the champion watcher and the metrics endpoint."""

    def __init__(self, config: ServerConfig, metrics: ScorerMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or ScorerMetrics()
        self.runtime: ModelRuntime | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self.champion_path = model_dir(config.models_dir, config.name) / CHAMPION_FILE
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._watch_task: asyncio.Task[None] | None = None
        self._metrics_http: Any = None
        # ((pointer stamp, manifest stamp or None), reason) of the last refused reload
        self._last_failure: tuple[Any, str] | None = None
        self._reload_lock = asyncio.Lock()
        self._served_manifest: Any = None  # stamp of the served version's manifest
        workers = config.workers or usable_cores()
        self._pool = (
            None if config.inline_runs
            else ThreadPoolExecutor(workers, thread_name_prefix="ds-scorer-run")
        )
        self.coalescer = RunCoalescer(
            window=config.coalesce_window, max_values=config.offload_min_values * 16
        )

    async def run(
        self, scorer: Scorer, inputs: np.ndarray, explain: bool, *, may_wait: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Run the graph: small inputs on the loop, coalesced with concurrent ones into one run
        (``RunCoalescer``: one GIL release per group instead of per request), large ones on a
        worker thread so the event loop keeps decoding and answering other requests meanwhile
        (or on the loop with ``inline_runs``)."""
        if inputs.size < self.config.offload_min_values:
            return await self.coalescer.run(scorer, inputs, explain, may_wait=may_wait)
        if self._pool is None:
            return scorer.run(inputs, explain=explain)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(scorer.run, explain=explain), inputs)

    async def run_locked(
        self, scorer: Scorer, inputs: np.ndarray, explain: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``run`` for a request that holds the state lock: no waiting for company, since every
        other stateful request waits on that lock."""
        return await self.run(scorer, inputs, explain, may_wait=False)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        """Bind, start serving (NOT_SERVING until a model loads), load the champion, watch it."""
        cfg = self.config
        options = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.so_reuseport", 1 if cfg.reuse_port else 0),
            *cfg.extra_options,
        ]
        interceptors = [_TokenInterceptor(cfg.token, self.metrics)] if cfg.token else []
        server = grpc.aio.server(options=options, interceptors=interceptors)
        scoring_pb2_grpc.add_ScorerServicer_to_server(ScorerService(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = f"{cfg.host}:{cfg.port}"
        try:
            if cfg.tls_cert is not None and cfg.tls_key is not None:
                credentials = grpc.ssl_server_credentials(
                    [(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())],
                    root_certificates=(
                        cfg.tls_client_ca.read_bytes() if cfg.tls_client_ca else None
                    ),
                    require_client_auth=cfg.tls_client_ca is not None,
                )
                self.port = server.add_secure_port(address, credentials)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc reports a failed bind as RuntimeError
            raise OSError(f"cannot bind the gRPC port {address} ({exc}); is it in use?") from exc
        if not self.port:
            raise OSError(f"cannot bind the gRPC port {address}; is it in use?")
        if cfg.metrics_port is not None:
            try:
                self._metrics_http = self.metrics.serve_http(cfg.metrics_host, cfg.metrics_port)
            except OSError as exc:
                raise OSError(
                    f"cannot serve metrics on {cfg.metrics_host}:{cfg.metrics_port} ({exc}); "
                    "pick another --metrics-port or -1 to disable"
                ) from exc
            self.metrics_port = self._metrics_http.server_port
        await server.start()
        self._server = server
        log.info(
            "scorer listening on %s (port %d, %s%s), metrics on %s",
            cfg.host, self.port, "TLS" if cfg.tls_cert else "plaintext",
            ", mTLS" if cfg.tls_client_ca else "", self.metrics_port,
        )
        await self.reload()
        self._watch_task = asyncio.create_task(self._watch())
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking RPCs, let in-flight ones finish within ``grace`` seconds, then close."""
        grace = self.config.grace if grace is None else grace
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None
        log.info("scorer stopped")

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def _set_health(self, status: Any) -> None:
        await self._health.set("", status)
        await self._health.set(SERVICE_NAME, status)

    # -- hot reload --------------------------------------------------------------------------

    def _pointer_stamp(self) -> Any:
        return _file_stamp(self.champion_path)

    async def reload(self) -> str:
        """Serve the current champion if it changed: 'success', 'unchanged', 'failure' or
        'no-champion'. A failure leaves the old model serving and is logged and counted once
        per champion pointer and manifest of the version it names."""
        async with self._reload_lock:
            stamp = self._pointer_stamp()
            if stamp is None:
                if self.runtime is None and self._last_failure != (None, "no-champion"):
                    log.warning("no champion yet at %s; waiting for one", self.champion_path)
                    self._last_failure = (None, "no-champion")
                return "no-champion"
            # a refusal is remembered per (pointer, manifest of the version it names): retried
            # only after a new promotion or a change to that version (an engine added)
            if self._last_failure is not None and self._last_failure[0] == (stamp, None):
                return "failure"  # an unreadable pointer; wait for a new promotion
            try:
                version = champion_version(self.config.models_dir, self.config.name)
                path = version_dir(self.config.models_dir, self.config.name, str(version))
            except BundleError as exc:
                return self._refuse((stamp, None), str(exc), "pointer")
            current = self.runtime
            # the same version is reloaded only when its manifest changed: an engine added to
            # the served version (tensorrt_engine can finish after the promotion) is picked up
            manifest_stamp = _file_stamp(path / MANIFEST_FILE)
            if (current is not None and version == current.version
                    and manifest_stamp == self._served_manifest):
                return "unchanged"
            key = (stamp, manifest_stamp)
            if self._last_failure is not None and self._last_failure[0] == key:
                return "failure"  # already refused; wait for a new promotion or a change
            loop = asyncio.get_running_loop()
            try:
                runtime = await loop.run_in_executor(None, self._load, path)
            except Exception as exc:  # BundleError, onnxruntime errors, warm-up failures
                return self._refuse(key, str(exc), "bundle")
            if self.config.stateless and runtime.keeps_state:
                return self._refuse(
                    key,
                    f"{path}: the model keeps per-entity state ({runtime.state_description}), "
                    "which a multi-process scorer cannot share between its processes; serve it "
                    "with --processes 1",
                    "stateful_model",
                )
            if current is not None and runtime.features != current.features:
                return self._refuse(
                    key,
                    f"{path}: features {list(runtime.features)} differ from the served model's "
                    f"{list(current.features)}; clients would send the wrong columns (restart "
                    "the scorer to change the feature set)",
                    "features",
                )
            if current is not None:
                runtime.inherit_state(current)
            self.runtime = runtime  # the atomic swap; in-flight requests keep the old one
            self._served_manifest = manifest_stamp
            if current is not None:
                await runtime.adopt_inherited()  # frees the old model once its queue drains
            self._last_failure = None
            self.metrics.reloads.labels("success").inc()
            self.metrics.load_duration.observe(runtime.load_seconds)
            self.metrics.set_model(runtime.name, runtime.version, runtime.backend)
            self.metrics.open_alerts.set(runtime.open_alerts)
            await self._set_health(health_pb2.HealthCheckResponse.SERVING)
            log.info(
                "serving %s v%s on %s (%s); loaded in %.2fs%s",
                runtime.name, runtime.version, runtime.backend, runtime.backend_reason,
                runtime.load_seconds, f", replacing v{current.version}" if current else "",
            )
            return "success"

    def _load(self, path: Path) -> ModelRuntime:
        cfg = self.config
        runtime = ModelRuntime.load(
            path,
            backend=cfg.backend,
            intra_op_threads=cfg.intra_op_threads,
            allow_spinning=cfg.allow_spinning,
            max_rows=cfg.max_rows,
            max_entities=cfg.max_entities,
        )
        # a temporal model's stateful requests wait for company as small graph runs do
        runtime.grouping = GroupPolicy(window=cfg.coalesce_window)
        return runtime

    def _refuse(self, key: Any, reason: str, kind: str) -> str:
        """Keep serving what serves; remember the refusal under ``key`` (pointer and manifest
        stamps) and count it by ``kind`` (RELOAD_FAILURE_KINDS)."""
        self._last_failure = (key, reason)
        self.metrics.reloads.labels("failure").inc()
        self.metrics.reload_failures.labels(kind).inc()
        serving = (
            f"v{self.runtime.version} keeps serving" if self.runtime else "no model is serving"
        )
        log.error("model reload refused: %s; %s", reason, serving)
        return "failure"

    @property
    def last_failure(self) -> str | None:
        return None if self._last_failure is None else self._last_failure[1]

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                await self.reload()
                if self.runtime is not None:
                    self.metrics.open_alerts.set(self.runtime.refresh_open_alerts())
            except Exception:  # the watcher must survive anything a bad bundle can do
                log.exception("champion watcher error")


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM/SIGINT, then drain in-flight RPCs within ``config.grace`` seconds."""
    server = ScorerServer(config)
    # handlers first: a SIGTERM while the model loads (seconds for a TensorRT engine) stops
    # the server cleanly once it is up, instead of killing the process mid-load
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await server.start()
    # what start-up built (modules, gRPC, the loaded model) lives as long as the process: move
    # it out of the collector's reach, so a full collection on the request path scans only what
    # requests allocate (about 10 ms per full collection otherwise, under load on this machine)
    gc.collect()
    gc.freeze()
    log.info("%d start-up objects frozen (out of the garbage collector's scans)",
             gc.get_freeze_count())
    await stopping.wait()
    log.info("signal received: draining in-flight requests (grace %.1fs)", config.grace)
    await server.stop(config.grace)


class ServerThread:
    """A ``ScorerServer`` on its own event loop in a background thread, for tests, benchmarks
    and embedding in a synchronous program."""

    def __init__(self, config: ServerConfig, metrics: ScorerMetrics | None = None) -> None:
        self.server = ScorerServer(config, metrics)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="ds-scorer")

    def start(self, timeout: float = 60.0) -> ScorerServer:
        self._thread.start()
        self.call(self.server.start(), timeout)
        return self.server

    def call(self, coro: Awaitable[Any], timeout: float | None = 60.0) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        async def wrap() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout)

    def reload(self) -> str:
        return str(self.call(self.server.reload()))

    def stop(self, grace: float | None = None) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.call(self.server.stop(grace), None)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> ScorerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(0)
