"""The gRPC scorer: ``datasentinel.scoring.v1.Scorer`` plus grpc.health.v1 and reflection.

``ScorerServer`` wires the pieces together and owns their lifecycle: the grpc.aio server with its
token check (``_TokenInterceptor``), the service (``ds_serving.servicer``, a thin adapter over
``ds_serving.handler``), graph execution, the champion watcher and the metrics endpoint. One
asyncio event loop handles every RPC; small inputs are scored on that loop, concurrent ones
together in one graph run (``RunCoalescer``), large inputs on worker threads (onnxruntime
releases the GIL). The served model is one immutable ``ModelRuntime`` reference: a request takes
it once and finishes on it, and a hot reload (``ChampionLoader``: load, verify, warm up in a
worker thread) replaces the reference in one assignment, so in-flight requests finish on the old
model and no request ever sees a half-loaded one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import inspect
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from ds_serving.champion import Candidate, ChampionLoader
from ds_serving.coalescing import GroupPolicy, RunCoalescer
from ds_serving.handler import ScoringHandler
from ds_serving.metrics import ScorerMetrics
from ds_serving.proto import SERVICE_NAME
from ds_serving.runpool import RunPool
from ds_serving.runtime import ModelRuntime
from ds_serving.scoring import Scorer
from ds_serving.servicer import ScorerService, ThrottledLog

log = logging.getLogger(__name__)

_OPEN_METHODS = ("/grpc.health.v1.Health/",)  # probes work without the token
# on stop, calls queued in gRPC core are taken until none came for SETTLE_QUIET_S and
# SETTLE_QUIET_TURNS polls (event-loop turns, one every SETTLE_POLL_S at most), for at most
# SETTLE_MAX_S (ScorerServer.stop)
SETTLE_QUIET_S = 0.02
SETTLE_QUIET_TURNS = 10
SETTLE_POLL_S = 0.002
SETTLE_MAX_S = 1.0
# after the grace period, runs of cancelled calls get at least this long to end (ScorerServer.stop)
RUN_DRAIN_MIN_S = 1.0


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
    # user strings per request (``ds_serving.decoding.RequestLimits``): UTF-8 bytes of one
    # entity id, and of a request's entity ids and model together
    max_entity_id_bytes: int = 256
    max_request_metadata_bytes: int = 16 * 1024 * 1024
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
        if self.max_entity_id_bytes < 1:
            raise ValueError(f"max_entity_id_bytes must be >= 1, got {self.max_entity_id_bytes}")
        if self.max_request_metadata_bytes < self.max_entity_id_bytes:
            raise ValueError(
                f"max_request_metadata_bytes ({self.max_request_metadata_bytes}) must be at "
                f"least max_entity_id_bytes ({self.max_entity_id_bytes}): a request with one "
                "id of the longest allowed would be refused"
            )
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
    """``handler``'s method answering UNAUTHENTICATED, without parsing the request body: an
    unauthenticated caller's bytes are never read (garbage gets UNAUTHENTICATED too)."""
    message = "missing or wrong bearer token: send metadata 'authorization: Bearer <token>'"

    async def unary(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(_requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kwargs = {"request_deserializer": None, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(streaming, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(unary, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)


class _Undecodable:
    """What a guarded request deserializer returns for a body that does not parse."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class _BadBody(Exception):
    """Raised into a streaming handler by its guarded request iterator."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _GuardedRegistration:
    """Stands in for the server when the health and reflection services register, so that a
    request body they cannot parse ends the call with INVALID_ARGUMENT, logged once per cause
    and interval (``ThrottledLog``), instead of grpcio's UNKNOWN with a traceback per request
    (the health service takes calls without the token). The Scorer service parses its bodies
    itself (``ScorerService.add_to_server``)."""

    def __init__(self, server: grpc.aio.Server, bad_bodies: ThrottledLog) -> None:
        self._server = server
        self._bad_bodies = bad_bodies

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_GuardedGeneric(h, self) for h in handlers))

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service, {name: self.guard(f"/{service}/{name}", handler)
                      for name, handler in handlers.items()})

    def guard(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` with a request deserializer that does not raise, and a behaviour that
        answers an undecodable body with INVALID_ARGUMENT."""
        parse = handler.request_deserializer
        if parse is None:
            return handler

        def deserialize(body: bytes) -> Any:
            try:
                return parse(body)
            except Exception as exc:  # DecodeError, or whatever else the parser raises
                return _Undecodable(exc)

        async def refuse(context: grpc.aio.ServicerContext, error: Exception) -> None:
            message = (f"the request body is not a valid {method} request "
                       f"({type(error).__name__}: {str(error)[:120]})")
            self._bad_bodies(logging.WARNING, f"{method}: {type(error).__name__}",
                             f"{method}: refused an undecodable request: {message}")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

        if handler.request_streaming:
            inner = handler.stream_stream or handler.stream_unary
            kind = (grpc.stream_stream_rpc_method_handler if handler.response_streaming
                    else grpc.stream_unary_rpc_method_handler)
            behaviour = _guard_streaming(inner, refuse)
        else:
            inner = handler.unary_stream or handler.unary_unary
            kind = (grpc.unary_stream_rpc_method_handler if handler.response_streaming
                    else grpc.unary_unary_rpc_method_handler)
            behaviour = _guard_unary(inner, refuse)
        return kind(behaviour, request_deserializer=deserialize,
                    response_serializer=handler.response_serializer)


Refuse = Callable[[grpc.aio.ServicerContext, Exception], Awaitable[None]]


def _guard_unary(inner: Callable[..., Any], refuse: Refuse) -> Callable[..., Any]:
    """``inner`` (a coroutine or async generator function) refusing an undecodable request."""
    if inspect.isasyncgenfunction(inner):
        async def responses(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                await refuse(context, request.error)
            async for response in inner(request, context):
                yield response

        return responses

    async def response(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            await refuse(context, request.error)
        return await _result(inner(request, context))

    return response


def _guard_streaming(inner: Callable[..., Any], refuse: Refuse) -> Callable[..., Any]:
    """``inner`` reading a request stream in which an undecodable message ends the call (it
    must iterate its requests, not ``context.read()`` them)."""
    async def checked(requests: Any) -> Any:
        async for request in requests:
            if isinstance(request, _Undecodable):
                raise _BadBody(request.error)
            yield request

    if inspect.isasyncgenfunction(inner):
        async def responses(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                async for response in inner(checked(requests), context):
                    yield response
            except _BadBody as exc:
                await refuse(context, exc.error)

        return responses

    async def response(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await _result(inner(checked(requests), context))
        except _BadBody as exc:
            await refuse(context, exc.error)

    return response


async def _result(value: Any) -> Any:
    """A behaviour's result, awaited when it is a coroutine."""
    return await value if inspect.isawaitable(value) else value


class _GuardedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, registration: _GuardedRegistration) -> None:
        self._inner = inner
        self._registration = registration
        self._guarded: dict[str, grpc.RpcMethodHandler] = {}  # by method (a fixed set)

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        guarded = self._guarded.get(details.method)
        if guarded is None:
            handler = self._inner.service(details)
            if handler is None:
                return None
            guarded = self._guarded[details.method] = self._registration.guard(
                details.method, handler)
        return guarded


class _Health(health.aio.HealthServicer):
    """gRPC's health service, whose ``Watch`` streams end once a shutdown has told them
    NOT_SERVING: client-side health checking keeps a Watch open on every connection, and an
    open one held the graceful stop for its whole grace period."""

    def __init__(self) -> None:
        super().__init__()
        self._watches: set[asyncio.Task[Any]] = set()
        self._ending = False

    async def Watch(self, request: Any, context: Any) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._watches.add(task)
        try:
            await super().Watch(request, context)
        except asyncio.CancelledError:
            if not self._ending:
                raise  # the client went away
        finally:
            if task is not None:
                self._watches.discard(task)

    async def end_watches(self, settle_s: float = 0.05) -> None:
        """End every Watch after it had ``settle_s`` to send the last status (NOT_SERVING)."""
        self._ending = True
        if self._watches:
            await asyncio.sleep(settle_s)
            for task in list(self._watches):
                task.cancel()


class ScorerServer:
    """Owns the gRPC server, the served runtime, the champion watcher and the metrics endpoint."""

    def __init__(self, config: ServerConfig, metrics: ScorerMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or ScorerMetrics()
        self.runtime: ModelRuntime | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self.champion = ChampionLoader(config.models_dir, config.name, self.metrics,
                                       load=self._load, stateless=config.stateless)
        self.champion_path = self.champion.path
        self.handler = ScoringHandler(self, self.metrics, stateless=config.stateless)
        self.metrics.watch_entities(
            lambda: {} if self.runtime is None else self.runtime.entity_counts())
        self.service = ScorerService(self.handler)
        self._server: grpc.aio.Server | None = None
        self._health = _Health()
        self._watch_task: asyncio.Task[None] | None = None
        self._metrics_http: Any = None
        self._reload_lock = asyncio.Lock()
        workers = config.workers or usable_cores()
        self._pool = (
            None if config.inline_runs
            else RunPool(workers, "ds-scorer-run")
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
        return await self._pool.run(scorer, inputs, explain)

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
            # answers are not capped: an explain answer is larger than its request, and one
            # refused after its rows were scored would leave their state committed while the
            # client retries (RESOURCE_EXHAUSTED promises no state changed)
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1 if cfg.reuse_port else 0),
            *cfg.extra_options,
        ]
        interceptors = [_TokenInterceptor(cfg.token, self.metrics)] if cfg.token else []
        server = grpc.aio.server(options=options, interceptors=interceptors)
        self.service.add_to_server(server)  # it parses request bodies after the token check
        guarded = _GuardedRegistration(server, self.service.bad_bodies)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, guarded)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(
                (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)),
            guarded,
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
            tls = (" with TLS: are --tls-cert and --tls-key a matching PEM certificate and key,"
                   " or is the port in use?" if cfg.tls_cert is not None
                   else "; is the port in use, or --host not an address of this machine?")
            raise OSError(f"cannot bind the gRPC port {address} ({exc}){tls}") from exc
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
        """Stop taking RPCs, let in-flight ones finish within ``grace`` seconds, then close.

        Health goes NOT_SERVING at once. gRPC's shutdown cancels the calls that reached it but
        that the server has not taken yet (gRPC core queues them while the event loop is busy,
        e.g. scoring), so the server first keeps taking calls until none has come for 20 ms and
        10 event-loop turns (``take_queued_calls``, at most ``SETTLE_MAX_S`` and half the grace
        period): every call that arrived before the stop then runs to its end within the grace
        period. From the shutdown on, new calls are refused (UNAVAILABLE)."""
        grace = self.config.grace if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        await self._health.enter_graceful_shutdown()
        await self._health.end_watches()
        if self._server is not None:
            taken = await self.take_queued_calls(min(SETTLE_MAX_S, grace / 2))
            if taken:
                log.info("took %d queued call(s) before shutting down", taken)
            await self._server.stop(max(0.0, deadline - loop.time()))
        if self._pool is not None:  # runs of calls cancelled at the deadline end first
            running = await asyncio.to_thread(
                self._pool.shutdown, True, max(deadline - loop.time(), RUN_DRAIN_MIN_S))
            if running:
                log.warning("graph run(s) still going at shutdown on %s", ", ".join(running))
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None
        log.info("scorer stopped")

    async def take_queued_calls(self, limit: float) -> int:
        """Keep taking calls until none has reached the service for ``SETTLE_QUIET_S`` and
        ``SETTLE_QUIET_TURNS`` event-loop turns (gRPC hands a queued call over within a few
        turns), or for ``limit`` seconds at most; the number taken meanwhile. Calls that come
        meanwhile are served: nothing tells one queued before the stop from a new one."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        first = seen = self.service.calls
        quiet_since, quiet_turns = start, 0
        while loop.time() - start < limit:
            await asyncio.sleep(SETTLE_POLL_S)
            if self.service.calls != seen:
                seen, quiet_since, quiet_turns = self.service.calls, loop.time(), 0
                continue
            quiet_turns += 1
            if quiet_turns >= SETTLE_QUIET_TURNS and loop.time() - quiet_since >= SETTLE_QUIET_S:
                break
        return self.service.calls - first

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def _set_health(self, status: Any) -> None:
        await self._health.set("", status)
        await self._health.set(SERVICE_NAME, status)

    # -- hot reload --------------------------------------------------------------------------

    async def reload(self) -> str:
        """Serve the current champion if it changed: 'success', 'unchanged', 'failure' or
        'no-champion'. A failure leaves the old model serving and is logged and counted once
        per champion pointer and manifest of the version it names (``ChampionLoader``)."""
        async with self._reload_lock:
            current = self.runtime
            found = await self.champion.candidate(current)
            if not isinstance(found, Candidate):
                return found
            runtime = found.runtime
            if current is not None:
                runtime.inherit_state(current)
            self.runtime = runtime  # the atomic swap; in-flight requests keep the old one
            self.champion.served(found)
            if current is not None:
                await runtime.adopt_inherited()  # frees the old model once its queue drains
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
        """Load, verify and warm up a version as this server runs it (on a worker thread)."""
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

    @property
    def last_failure(self) -> str | None:
        """Why the last reload was refused, while no later one has succeeded."""
        return self.champion.last_failure

    async def _watch(self) -> None:
        last_error = None  # logged with its traceback once, not on every poll
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                await self.reload()
                if self.runtime is not None:
                    self.metrics.open_alerts.set(self.runtime.refresh_open_alerts())
            except Exception as exc:  # the watcher must survive anything a bad bundle can do
                error = f"{type(exc).__name__}: {exc}"
                if error != last_error:
                    log.exception("champion watcher error (logged once until it changes)")
                last_error = error
            else:
                last_error = None


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
