"""Benchmark of the gRPC scorer against the in-process onnxruntime ceiling, in one run.

    python -m bench.scorer            (``make bench``; a few minutes on 2 cores)

Measures, on the same model (default: a dense autoencoder with the production detector's layer
sizes, 8 features; ``--models/--name`` serves a real bundle instead):

* ceiling: onnxruntime ``session.run`` in this process on 4096-row batches and on single rows;
* (a) ``Score`` with 4096-row batches from concurrent clients (rows/s, p50/p99);
* (b) single-row ``Score`` at concurrency 16 (requests/s, p50/p99); also with one entity id
  per client on the point model and on a temporal model (window 16), whose stateful requests
  take the state lock in turn instead of sharing graph runs;
* (c) one ``ScoreStream`` of 64-row messages, pipelined (rows/s, p50/p99 per message).

The server runs as a real ``ds-scorer serve`` subprocess (its own GIL); the clients are grpc.aio
in this process. Results are printed as a table and written to bench/results/scorer-*.json.
Numbers on a shared machine are noisy: the ratios to the ceiling measured in the same run are
the comparable figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ds_serving.atomic import atomic_write_text
from ds_serving.bundle import load_champion, promote, write_bundle
from ds_serving.client import encode_request
from ds_serving.event_loop import run_event_loop
from ds_serving.proto import SERVICE_NAME, scoring_pb2, scoring_pb2_grpc
from ds_serving.servicer import OFF_LOOP_BYTES
from tests.support.models import conv_autoencoder, dense_autoencoder, window_model

RESULTS = Path(__file__).parent / "results"
SCORE_METHOD = "datasentinel.scoring.v1.Scorer/Score"
FEATURES = ["cpu", "memory", "disk_io", "net_in", "net_out", "latency", "error_rate", "req_rate"]
TEMPORAL_WINDOW = 16  # rows per window of the temporal model of the entity-per-client phase
# (d) on the temporal AE: the largest requests' entities, each with 65,536 / this rows, so
# every request completes windows and the graph runs (one row per entity completes none)
TEMPORAL_LARGE_ENTITIES = 4096


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000.0
    p50, p99 = np.percentile(arr, [50, 99])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3)}


def _session(model_path: Path, threads: int, backend: str = "cpu") -> Any:
    """The graph on the provider the server is asked to use (``cuda``: the CUDA provider with
    TF32 off, as ``ds_serving.engines`` runs it), so the ceiling matches the served backend."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers: list[Any] = ["CPUExecutionProvider"]
    if backend == "cuda":
        providers.insert(0, ("CUDAExecutionProvider", {"use_tf32": "0"}))
    session = ort.InferenceSession(str(model_path), options, providers=providers)
    if backend == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise SystemExit("--backend cuda: onnxruntime has no usable CUDAExecutionProvider here")
    return session


def _timed_runs(session: Any, x: np.ndarray, seconds: float) -> list[float]:
    for _ in range(50):
        session.run(["score"], {"features": x})
    lat: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        session.run(["score"], {"features": x})
        lat.append(time.perf_counter() - t)
    return lat


def ceiling(model_path: Path, seconds: float, backend: str = "cpu") -> dict[str, Any]:
    """Raw onnxruntime throughput in-process, the upper bound for any server around it: the
    better of one session using every core per run, and one single-threaded run per core in
    parallel (what the server does for large batches)."""
    from concurrent.futures import ThreadPoolExecutor

    cores = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for label, n in (("batch_4096", 4096), ("single_row", 1)):
        x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
        lat = _timed_runs(_session(model_path, 0, backend), x, seconds)
        configs = {"intra_op_all_cores": {
            "rows_per_s": round(n * len(lat) / sum(lat)),
            "calls_per_s": round(len(lat) / sum(lat)), **_pct(lat)}}
        session = _session(model_path, 1, backend)
        with ThreadPoolExecutor(cores) as pool:
            start = time.perf_counter()
            futures = [pool.submit(_timed_runs, session, x, seconds) for _ in range(cores)]
            runs = [f.result() for f in futures]
            elapsed = time.perf_counter() - start
        calls = sum(len(r) for r in runs)
        configs[f"{cores}_threads_x_1"] = {
            "rows_per_s": round(n * calls / elapsed), "calls_per_s": round(calls / elapsed),
            **_pct([v for r in runs for v in r])}
        best = max(configs.values(), key=lambda c: c["rows_per_s"])
        out[label] = {**best, "configs": configs}
    return out


async def _unary_load(
    target: str, request: scoring_pb2.ScoreRequest | Sequence[scoring_pb2.ScoreRequest],
    concurrency: int, seconds: float, channels: int,
) -> dict[str, Any]:
    """Closed-loop unary load from ``concurrency`` coroutines; worker i sends request
    i mod len(requests) (e.g. one entity per worker)."""
    requests = [request] if isinstance(request, scoring_pb2.ScoreRequest) else list(request)
    chans = [grpc.aio.insecure_channel(target, options=[
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20)]) for _ in range(channels)]
    stubs = [scoring_pb2_grpc.ScorerStub(c) for c in chans]
    for stub in stubs:  # warm up connections and the server path
        for _ in range(20):
            for each in requests:
                await stub.Score(each)
    lat: list[float] = []
    errors = 0
    stop_at = 0.0

    async def worker(i: int) -> None:
        nonlocal errors
        stub = stubs[i % len(stubs)]
        mine = requests[i % len(requests)]
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            try:
                await stub.Score(mine)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            lat.append(time.perf_counter() - t)

    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    for c in chans:
        await c.close()
    return {"requests": len(lat), "errors": errors, "seconds": round(elapsed, 3),
            "requests_per_s": round(len(lat) / elapsed),
            "rows_per_s": round(len(lat) * requests[0].n_rows / elapsed), **_pct(lat)}


def _h2load_unary(port: int, request: scoring_pb2.ScoreRequest, concurrency: int,
                  seconds: float, connections: int, workdir: Path) -> dict[str, Any] | None:
    """Unary ``Score`` load from h2load (see :func:`h2load_unary`); the exact bytes are checked
    once through a gRPC client first. None when h2load is not installed."""
    if shutil.which("h2load") is None:
        return None
    payload = request.SerializeToString()
    _check_payload(port, payload, request.n_rows)
    return h2load_unary(port, SCORE_METHOD, payload, request.n_rows, concurrency, seconds,
                        connections, workdir)


def h2load_unary(port: int, method: str, payload: bytes, rows_per_request: int,
                 concurrency: int, seconds: float, connections: int, workdir: Path,
                 ) -> dict[str, Any] | None:
    """Unary gRPC load on ``method`` from h2load (nghttp2's C load generator) instead of Python.

    A Python grpc.aio client spends about 200 us of CPU per call on the same two cores as the
    server; h2load about 40-50 us (reported as the phase's client CPU), so this measures the
    server more nearly as remote clients would see it. gRPC over HTTP/2 is a POST of a
    length-prefixed message with ``content-type: application/grpc``; h2load only sees HTTP
    status 200, so callers check the payload once through a gRPC client and the gRPC status
    codes in the server's metrics. None when h2load is not installed.
    """
    exe = shutil.which("h2load")
    if exe is None:
        return None
    body = workdir / "request.grpc"
    body.write_bytes(b"\x00" + len(payload).to_bytes(4, "big") + payload)
    log = workdir / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends to an existing log
    streams = max(1, concurrency // connections)
    warm_up = f"{round(min(1.0, seconds / 2) * 1000)}ms"  # 1 s, or half a short (--quick) phase
    cmd = [exe, "--duration", str(max(1, round(seconds))), "--warm-up-time", warm_up, "--clients",
           str(connections), "--max-concurrent-streams", str(streams), "--threads", "1",
           "--data", str(body), "--header", "content-type: application/grpc",
           "--header", "te: trailers", "--log-file", str(log),
           f"http://127.0.0.1:{port}/{method}"]
    cpu0 = _children_cpu_seconds()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    client_cpu = _children_cpu_seconds() - cpu0
    if done.returncode != 0:
        raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr or done.stdout}")
    lines = [ln.split("\t") for ln in log.read_text().splitlines() if ln.strip()]
    ok = [int(f[2]) / 1e6 for f in lines if f[1] == "200"]
    if not ok or len(ok) != len(lines):
        statuses = sorted({f[1] for f in lines})
        raise RuntimeError(
            f"h2load: {len(lines) - len(ok)} of {len(lines)} requests did not get HTTP 200 "
            f"(statuses {statuses}); see {log}"
        )
    starts = [int(f[0]) for f in lines]
    span = (max(starts) - min(starts)) / 1e6 if len(starts) > 1 else seconds
    return {"client": "h2load", "connections": connections, "streams_per_connection": streams,
            "requests": len(ok), "errors": 0, "seconds": round(span, 3),
            "requests_per_s": round(len(ok) / span),
            "rows_per_s": round(len(ok) * rows_per_request / span),
            "client_cpu_us_per_call": round(client_cpu / len(ok) * 1e6, 1), **_pct(ok)}


def _children_cpu_seconds() -> float:
    """CPU time of this process's finished children (h2load, once ``subprocess.run`` returns)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _check_payload(port: int, payload: bytes, n_rows: int) -> None:
    """Send the exact bytes h2load will send, once, through a gRPC client: the method path and
    the message must be answered with status OK (h2load itself only sees HTTP 200)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"/{SCORE_METHOD}")
        answer = scoring_pb2.ScoreResponse.FromString(call(payload, timeout=30))
    if answer.n_rows != n_rows:
        raise RuntimeError(f"the h2load payload was answered for {answer.n_rows} rows, "
                           f"expected {n_rows}")


def _start_server(
    models: Path, name: str, args: argparse.Namespace, processes: int,
    coalesce_ms: float | None = None,
) -> tuple[subprocess.Popen[bytes], int, int]:
    """A ``ds-scorer serve`` subprocess (``processes`` of them sharing the port), once every
    process answers: (process, gRPC port, first metrics port)."""
    port = _free_port()
    metrics_port = _free_port()
    while port in range(metrics_port, metrics_port + processes):
        metrics_port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ds_serving.cli", "--log-level", "WARNING", "serve",
         "--models", str(models), "--name", name, "--host", "127.0.0.1", "--port",
         str(port), "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1",
         "--backend", args.backend, "--threads", str(args.threads), "--workers",
         str(args.workers), "--poll-interval", "5", "--event-loop", args.event_loop,
         "--processes", str(processes), "--coalesce-ms",
         str(args.coalesce_ms if coalesce_ms is None else coalesce_ms)],
    )
    deadline = time.time() + 60
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = scoring_pb2_grpc.ScorerStub(channel)
    while True:
        try:  # every process has loaded the model (a gRPC call reaches only one of them)
            if all(_model_loaded(metrics_port + i) for i in range(processes)):
                stub.GetModelInfo(scoring_pb2.ModelInfoRequest(), timeout=5)
                break
        except (grpc.RpcError, OSError):
            pass
        if time.time() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError("the scorer did not start within 60 s")
        time.sleep(0.2)
    channel.close()
    return server, port, metrics_port


SCORER_REQUESTS = "ds_scorer_requests_total"


def _checked_h2load(
    pid: int, metrics_ports: list[int], load: Callable[[], dict[str, Any] | None],
    method: str = "Score", counter: str = SCORER_REQUESTS,
) -> dict[str, Any] | None:
    """Run an h2load phase and fail unless every request ended with gRPC status OK (h2load
    itself only sees HTTP 200): the server's request counters by code, before and after
    (``counter`` of ``method``: ours by default, or a peer server's)."""
    before = [_status_counts(p, method, counter) for p in metrics_ports]
    result = _measured_sync(pid, load)
    if result is None:
        return None
    failed: dict[str, float] = {}
    answered_ok = cancelled = 0.0
    for port, old in zip(metrics_ports, before, strict=True):
        for code, value in _status_counts(port, method, counter).items():
            delta = value - old.get(code, 0)
            if code == "OK":
                answered_ok += delta
            elif code == "CANCELLED":
                cancelled += delta
            elif delta > 0:
                failed[code] = failed.get(code, 0) + delta
    # h2load stops at the end of its duration with up to one request per stream in flight:
    # the server counts those as CANCELLED; more than that would be a real failure
    in_flight = result["connections"] * result["streams_per_connection"]
    if cancelled > in_flight:
        failed["CANCELLED"] = cancelled
    result["grpc_status_not_ok"] = sum(failed.values())
    result["grpc_status_ok"] = answered_ok
    result["cancelled_at_end"] = cancelled
    # h2load's logged requests plus its warm-up second must all have reached the handler
    if failed or answered_ok < result["requests"]:
        raise RuntimeError(
            f"h2load requests failed on the server: {failed or 'none counted'}; the server "
            f"answered {answered_ok:.0f} with OK for {result['requests']} logged requests"
        )
    return result


def _scrape(metrics_port: int) -> str:
    """The scorer's Prometheus exposition text."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    return str(urllib.request.urlopen(url, timeout=10).read().decode())


def _model_loaded(metrics_port: int) -> bool:
    return "\nds_scorer_model_loaded 1.0" in _scrape(metrics_port)


def _status_counts(metrics_port: int, method: str, counter: str = SCORER_REQUESTS,
                   ) -> dict[str, float]:
    """A request counter of one method by gRPC code, scraped from the server: labels ending in
    ``method`` and ``code`` (ours: ``method``/``code``; MLServer: ``grpc_method``/``grpc_code``)."""
    counts: dict[str, float] = {}
    prefix = counter + "{"
    for line in _scrape(metrics_port).splitlines():
        if line.startswith(prefix) and f'method="{method}"' in line:
            labels, value = line[len(prefix):].rsplit("} ", 1)
            code = labels.split('code="', 1)[1].split('"', 1)[0]
            counts[code] = counts.get(code, 0.0) + float(value)
    return counts


LARGE_REQUEST_PERIOD_S = 0.5  # (d): one largest request starts every this often


def _send_largest_requests(target: str, n_features: int, stop: Any, count: Any,
                           entities: int = 65_536) -> None:
    """In its own process (own GIL, like a remote client): start the largest request the
    server accepts by default every ``LARGE_REQUEST_PERIOD_S`` (or as soon as the one before
    answered) until ``stop`` is set. A fixed rate, so the scorer and the empty handler are
    measured under the same load: sent back to back, the faster server would take more large
    requests, and its small calls would meet more of them. Its 65,536 rows belong to
    ``entities`` entities (256-byte ids), 65,536 / ``entities`` consecutive rows each."""
    rng = np.random.default_rng(2)
    ids = [f"{i:0256d}" for i in range(entities)] * (65_536 // entities)
    big = encode_request(rng.normal(size=(len(ids), n_features)).astype(np.float32), ids)
    options = [("grpc.max_receive_message_length", 64 << 20),
               ("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = scoring_pb2_grpc.ScorerStub(channel)
        while not stop.is_set():
            started = time.perf_counter()
            stub.Score(big, timeout=60)
            with count.get_lock():
                count.value += 1
            stop.wait(max(0.0, LARGE_REQUEST_PERIOD_S - (time.perf_counter() - started)))


async def _probe_under_big_requests(target: str, n_features: int, seconds: float,
                                    model_info: bool = False, entity: str | None = None,
                                    entities: int = 65_536) -> dict[str, Any]:
    """Event-loop blocking seen by a small client: 1-row ``Score`` latency on its own, then
    while another process sends the largest request the server accepts by default (65,536
    rows, each with its own 256-byte entity id: decoding and per-entity work at their most),
    two a second. ``model_info``: probe with ``GetModelInfo`` instead (a temporal model's
    scoring requests wait for the ones before them by design; this one needs no turn).
    ``entity``: the probe's rows carry this entity id (a temporal model needs one), and the
    large requests hold ``entities`` entities (``_send_largest_requests``)."""
    import multiprocessing

    probe_request = encode_request(
        np.random.default_rng(3).normal(size=(1, n_features)).astype(np.float32),
        None if entity is None else [entity])
    async with grpc.aio.insecure_channel(target) as channel:
        stub = scoring_pb2_grpc.ScorerStub(channel)

        async def call() -> None:
            if model_info:
                await stub.GetModelInfo(scoring_pb2.ModelInfoRequest())
            else:
                await stub.Score(probe_request)

        for _ in range(20):
            await call()

        async def probe(duration: float) -> list[float]:
            lat: list[float] = []
            end = time.perf_counter() + duration
            while time.perf_counter() < end:
                t = time.perf_counter()
                await call()
                lat.append(time.perf_counter() - t)
            return lat

        idle = await probe(seconds / 2)
        ctx = multiprocessing.get_context("spawn")
        stop, count = ctx.Event(), ctx.Value("i", 0)
        sender = ctx.Process(target=_send_largest_requests,
                             args=(target, n_features, stop, count, entities))
        sender.start()
        while count.value < 1 and sender.is_alive():  # the sender's first call has landed
            await asyncio.sleep(0.05)
        loaded = await probe(seconds / 2)
        stop.set()
        sender.join(60)

    def summary(lat: list[float]) -> dict[str, Any]:
        return {"requests": len(lat), **_pct(lat), "max_ms": round(max(lat) * 1000, 3)}

    out = {"idle": summary(idle), "loaded": summary(loaded), "large_requests": count.value}
    out["p99_loaded_over_idle"] = round(out["loaded"]["p99_ms"] / out["idle"]["p99_ms"], 2)
    return out


async def _stream_load(target: str, rows: np.ndarray, seconds: float,
                       window: int) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = scoring_pb2_grpc.ScorerStub(channel)
        request = encode_request(rows)
        call = stub.ScoreStream()
        sent_at: list[float] = []
        lat: list[float] = []
        in_flight = asyncio.Semaphore(window)
        done = asyncio.Event()

        async def writer() -> None:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                await in_flight.acquire()
                sent_at.append(time.perf_counter())
                await call.write(request)
            await call.done_writing()
            done.set()

        async def reader() -> None:
            i = 0
            async for _response in call:
                lat.append(time.perf_counter() - sent_at[i])
                i += 1
                in_flight.release()

        start = time.perf_counter()
        await asyncio.gather(writer(), reader())
        elapsed = time.perf_counter() - start
    n = len(lat)
    return {"messages": n, "rows_per_message": len(rows), "seconds": round(elapsed, 3),
            "messages_per_s": round(n / elapsed), "rows_per_s": round(n * len(rows) / elapsed),
            "in_flight_window": window, **_pct(lat)}


def _echo_server(port: int, event_loop: str) -> None:
    """Answers ``Score`` without scoring, accepting messages as large as the scorer does: the
    cost of grpc.aio itself on this machine (the floor of (b) and (d)). Like the scorer it
    parses small bodies on the loop (to answer their ``n_rows``) and leaves large ones
    (``OFF_LOOP_BYTES``, which the scorer parses on a worker thread) unparsed."""

    async def score(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        n_rows = 0
        if len(request) < OFF_LOOP_BYTES:
            n_rows = scoring_pb2.ScoreRequest.FromString(request).n_rows
        return scoring_pb2.ScoreResponse(n_rows=n_rows).SerializeToString()

    async def run() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE_NAME, {"Score": grpc.unary_unary_rpc_method_handler(score)}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    run_event_loop(run(), event_loop)


def _wait_ready(target: str) -> None:
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=60)
    channel.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children's processes (Linux /proc: a
    multi-process scorer's work is in its children), to report CPU cost per request."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            children.update(int(c) for c in task.read_text().split())
    return total + sum(_cpu_seconds(c) for c in children)


def _measured(pid: int, coro: Any) -> dict[str, Any]:
    """Run a grpc.aio load coroutine here; add server and client CPU per call."""
    result = _measured_sync(pid, lambda: asyncio.run(coro), time.process_time)
    assert result is not None
    return result


def _measured_sync(
    pid: int, load: Callable[[], dict[str, Any] | None],
    client_clock: Callable[[], float] | None = None,
) -> dict[str, Any] | None:
    """Run ``load``; add the server's CPU per call (and the client's, given its clock:
    None for a subprocess client such as h2load, whose CPU is not this process's)."""
    server0 = _cpu_seconds(pid)
    client0 = client_clock() if client_clock else 0.0
    result = load()
    if result is None:
        return None
    n = max(1, result.get("requests", result.get("messages", 1)))
    result["server_cpu_us_per_call"] = round((_cpu_seconds(pid) - server0) / n * 1e6, 1)
    if client_clock is not None:
        result["client_cpu_us_per_call"] = round((client_clock() - client0) / n * 1e6, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each phase")
    parser.add_argument("--threads", type=int, default=1,
                        help="server: onnxruntime intra-op threads per run (0 = per core)")
    parser.add_argument("--workers", type=int, default=0,
                        help="server: parallel graph runs for large batches (0 = per core)")
    parser.add_argument("--event-loop", default="auto", choices=["auto", "uvloop", "asyncio"],
                        help="server (and empty-handler floor) event loop")
    parser.add_argument("--models", help="serve this models directory instead of a synthetic AE")
    parser.add_argument("--name", default="telemetry-ae", help="model name under --models")
    parser.add_argument("--processes", type=int, default=2,
                        help="scorer processes of the extra stateless-tier phase of (b) "
                             "(1 skips it)")
    parser.add_argument("--coalesce-ms", type=float, default=4.0,
                        help="server: --coalesce-ms (an extra phase of (b) runs with 0)")
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--unary-concurrency", type=int, default=16)
    parser.add_argument("--backend", default="cpu", choices=["cpu", "cuda"],
                        help="server backend and the ceiling's execution provider (cuda needs "
                             "onnxruntime-gpu and a GPU)")
    parser.add_argument("--out", help="JSON result path (default bench/results/scorer-<ts>.json)")
    args = parser.parse_args(argv)
    if args.echo_server:
        _echo_server(args.echo_server, args.event_loop)
        return 0

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="ds-bench-"))
    try:
        if args.models:
            models, name = Path(args.models), args.name
        else:
            models, name = tmp / "models", "bench-ae"
            bundle = write_bundle(models, name, dense_autoencoder(len(FEATURES), (32, 16, 4)),
                                  kind="dense_ae", features=FEATURES, threshold=2.0,
                                  threshold_rule={"rule": "fixed"})
            promote(models, name, bundle.manifest.version)
        bundle = load_champion(models, name)
        n_features = bundle.manifest.n_features
        if bundle.manifest.window is not None:
            raise SystemExit("the benchmark needs a point-wise model (no window)")
        server, port, metrics_port = _start_server(models, name, args, processes=1)
        target = f"127.0.0.1:{port}"
        try:
            rng = np.random.default_rng(1)
            batch = rng.normal(size=(4096, n_features)).astype(np.float32)
            single = rng.normal(size=(1, n_features)).astype(np.float32)
            stream_rows = rng.normal(size=(64, n_features)).astype(np.float32)
            print(f"ceiling: in-process onnxruntime ({args.seconds:.0f}s per phase)",
                  file=sys.stderr)
            ceil = ceiling(bundle.model_path, args.seconds / 2, args.backend)
            print("(a) Score, 4096-row batches, h2load client", file=sys.stderr)
            a_native = _checked_h2load(server.pid, [metrics_port], lambda: _h2load_unary(
                port, encode_request(batch), args.batch_concurrency, args.seconds, 2, tmp))
            print("(a) Score, 4096-row batches, Python grpc.aio client", file=sys.stderr)
            a_py = _measured(server.pid, _unary_load(
                target, encode_request(batch), args.batch_concurrency, args.seconds, channels=2))
            print("(b) Score, single rows, h2load client", file=sys.stderr)
            b_native = _checked_h2load(server.pid, [metrics_port], lambda: _h2load_unary(
                port, encode_request(single), args.unary_concurrency, args.seconds, 1, tmp))
            print("(b) Score, single rows with an entity id (alert state), h2load client",
                  file=sys.stderr)
            b_entity = _checked_h2load(server.pid, [metrics_port], lambda: _h2load_unary(
                port, encode_request(single, ["bench-host"]), args.unary_concurrency,
                args.seconds, 1, tmp))
            print("(b) Score, single rows, h2load client, concurrency 1", file=sys.stderr)
            b_sequential = _checked_h2load(server.pid, [metrics_port], lambda: _h2load_unary(
                port, encode_request(single), 1, args.seconds, 1, tmp))
            print("(b) Score, single rows, Python grpc.aio client", file=sys.stderr)
            b_py = _measured(server.pid, _unary_load(
                target, encode_request(single), args.unary_concurrency, args.seconds, channels=1))
            print("(b) Score, single rows, one entity per client, Python grpc.aio client",
                  file=sys.stderr)
            entity_requests = [encode_request(single, [f"bench-host-{i}"])
                               for i in range(args.unary_concurrency)]
            b_entities_point = _measured(server.pid, _unary_load(
                target, entity_requests, args.unary_concurrency, args.seconds, channels=1))
            print("(c) ScoreStream, 64-row messages", file=sys.stderr)
            c = _measured(server.pid, _stream_load(target, stream_rows, args.seconds, window=8))
            print("(d) 1-row probe while the largest accepted request (65,536 rows, 256-byte "
                  "entity ids) is in flight", file=sys.stderr)
            d = asyncio.run(_probe_under_big_requests(target, n_features, args.seconds))
        finally:
            server.terminate()
            server.wait(30)
        b_uncoalesced = None
        if shutil.which("h2load") and args.coalesce_ms > 0:
            print("(b) Score, single rows, h2load, --coalesce-ms 0 (one graph run per request)",
                  file=sys.stderr)
            server, port, metrics_port = _start_server(models, name, args, 1, coalesce_ms=0)
            try:
                b_uncoalesced = _checked_h2load(server.pid, [metrics_port], lambda: _h2load_unary(
                    port, encode_request(single), args.unary_concurrency, args.seconds, 1, tmp))
            finally:
                server.terminate()
                server.wait(30)
        a_processes = b_processes = None
        if shutil.which("h2load") and args.processes > 1:
            server, port, metrics_port = _start_server(models, name, args, args.processes)
            try:
                print(f"(a) Score, 4096-row batches, h2load, {args.processes} processes "
                      "(stateless tier)", file=sys.stderr)
                # the kernel spreads connections, not requests: with 4 connections all of them
                # land on one of 2 processes in 1 run of 8, so this phase opens twice as many
                # (one request in flight on each; one process gains nothing from c=8 over c=4)
                connections = 2 * args.batch_concurrency
                a_processes = _checked_h2load(
                    server.pid, [metrics_port + i for i in range(args.processes)],
                    lambda: _h2load_unary(port, encode_request(batch), connections,
                                          args.seconds, connections, tmp))
                print(f"(b) Score, single rows, h2load, {args.processes} processes "
                      "(stateless tier)", file=sys.stderr)
                b_processes = _checked_h2load(
                    server.pid, [metrics_port + i for i in range(args.processes)],
                    lambda: _h2load_unary(port, encode_request(single), args.unary_concurrency,
                                          args.seconds, args.unary_concurrency, tmp))
            finally:
                server.terminate()
                server.wait(30)
        print(f"(b) Score, single rows, one entity per client, Python client, temporal model "
              f"(window {TEMPORAL_WINDOW})", file=sys.stderr)
        temporal_models = tmp / "temporal-models"
        temporal = write_bundle(
            temporal_models, "bench-temporal", window_model(n_features, TEMPORAL_WINDOW),
            kind="window", features=list(bundle.manifest.features), threshold=0.5,
            threshold_rule={"rule": "fixed"}, window=TEMPORAL_WINDOW)
        promote(temporal_models, "bench-temporal", temporal.manifest.version)
        server, port, metrics_port = _start_server(temporal_models, "bench-temporal", args, 1)
        try:
            b_entities_temporal = _measured(server.pid, _unary_load(
                f"127.0.0.1:{port}", entity_requests, args.unary_concurrency, args.seconds,
                channels=1))
            print("(d) GetModelInfo probe while the largest request goes to the temporal "
                  "model", file=sys.stderr)
            d_temporal = asyncio.run(_probe_under_big_requests(
                f"127.0.0.1:{port}", n_features, args.seconds, model_info=True))
        finally:
            server.terminate()
            server.wait(30)
        print("(d) 1-row Score of its own entity while the largest requests (4,096 entities x "
              f"16 rows) go to a temporal AE of the default's size (window {TEMPORAL_WINDOW})",
              file=sys.stderr)
        ae_models = tmp / "temporal-ae-models"
        ae = write_bundle(ae_models, "bench-temporal-ae",
                          conv_autoencoder(n_features, TEMPORAL_WINDOW),
                          kind="temporal_autoencoder", features=list(bundle.manifest.features),
                          threshold=0.5, threshold_rule={"rule": "fixed"},
                          window=TEMPORAL_WINDOW)
        promote(ae_models, "bench-temporal-ae", ae.manifest.version)
        server, port, metrics_port = _start_server(ae_models, "bench-temporal-ae", args, 1)
        try:
            d_temporal_score = asyncio.run(_probe_under_big_requests(
                f"127.0.0.1:{port}", n_features, args.seconds, entity="probe",
                entities=TEMPORAL_LARGE_ENTITIES))
        finally:
            server.terminate()
            server.wait(30)
        print("floor: empty grpc.aio handler, single rows", file=sys.stderr)
        echo_port = _free_port()
        echo = subprocess.Popen([sys.executable, "-m", "bench.scorer", "--echo-server",
                                 str(echo_port), "--event-loop", args.event_loop])
        try:
            _wait_ready(f"127.0.0.1:{echo_port}")
            floor_native = _measured_sync(echo.pid, lambda: _h2load_unary(
                echo_port, encode_request(single), args.unary_concurrency, args.seconds, 1,
                tmp))
            floor_py = _measured(echo.pid, _unary_load(
                f"127.0.0.1:{echo_port}", encode_request(single), args.unary_concurrency,
                args.seconds, channels=1))
            print("floor: (d) against the empty grpc.aio handler", file=sys.stderr)
            d["floor_empty_grpc_handler"] = asyncio.run(
                _probe_under_big_requests(f"127.0.0.1:{echo_port}", n_features, args.seconds))
        finally:
            echo.terminate()
            echo.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # (b) is judged on the native client where h2load exists: it measures the server rather
    # than a Python client competing with it for the same two cores.
    b = b_native if b_native is not None else b_py
    single_ceiling = ceil["single_row"]["calls_per_s"]
    # like (b), (a) is judged on the native client where h2load exists: the Python client
    # spends ~285 us of CPU per 4096-row call on the server's two cores
    for phase in (a_native, a_py, a_processes):
        if phase is not None:
            phase["ratio_to_ceiling"] = round(
                phase["rows_per_s"] / ceil["batch_4096"]["rows_per_s"], 3)
    a = a_native if a_native is not None else a_py
    for phase, empty in ((b_native, floor_native), (b_py, floor_py),
                         (b_processes, floor_native), (b_sequential, floor_native),
                         (b_entity, floor_native), (b_entities_point, floor_py),
                         (b_entities_temporal, floor_py), (b_uncoalesced, floor_native)):
        if phase is not None and empty is not None:
            phase["ratio_to_ceiling"] = round(phase["requests_per_s"] / single_ceiling, 3)
            phase["ratio_to_empty_grpc_handler"] = round(
                phase["requests_per_s"] / empty["requests_per_s"], 3)
    c["ratio_to_ceiling"] = round(c["rows_per_s"] / ceil["batch_4096"]["rows_per_s"], 3)
    # what the scorer adds to a small call's tail beyond what receiving the same large
    # requests costs grpc.aio itself (it hands each message over on the event loop's thread)
    d["p99_over_floor_ms"] = round(
        d["loaded"]["p99_ms"] - d["floor_empty_grpc_handler"]["loaded"]["p99_ms"], 3)
    targets = {
        "a_rows_per_s>=4M": a["rows_per_s"] >= 4_000_000,
        "a_ratio>=0.25": a["ratio_to_ceiling"] >= 0.25,
        "b_requests_per_s>=4000": b["requests_per_s"] >= 4000,
        "b_p99<=5ms": b["p99_ms"] <= 5.0,
    }
    if a_processes is not None:
        targets["a_processes_rows_per_s>=4M"] = a_processes["rows_per_s"] >= 4_000_000
        targets["a_processes_ratio>=0.25"] = a_processes["ratio_to_ceiling"] >= 0.25
    if b_processes is not None:
        targets["b_processes_requests_per_s>=4000"] = b_processes["requests_per_s"] >= 4000
        targets["b_processes_p99<=5ms"] = b_processes["p99_ms"] <= 5.0
    result = {
        "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "model": {"name": name, "features": n_features, "kind": bundle.manifest.kind},
        "settings": vars(args),
        "ceiling_onnxruntime_in_process": ceil,
        "floor_empty_grpc_handler_single_row": floor_native,
        "floor_empty_grpc_handler_single_row_python_client": floor_py,
        "a_score_batch_4096": a_native,
        "a_score_batch_4096_python_client": a_py,
        "a_score_batch_4096_processes": a_processes,
        "a_judged_on": "h2load" if a_native is not None else "python client (h2load missing)",
        "b_score_single_row": b_native,
        "b_score_single_row_python_client": b_py,
        "b_score_single_row_processes": b_processes,
        "b_score_single_row_concurrency_1": b_sequential,
        "b_score_single_row_entity_keyed": b_entity,
        "b_score_single_row_uncoalesced": b_uncoalesced,
        "b_score_single_row_entity_per_client_python": b_entities_point,
        "b_score_single_row_entity_per_client_python_temporal": b_entities_temporal,
        "b_coalescing_gain": (
            round(b_native["requests_per_s"] / b_uncoalesced["requests_per_s"], 3)
            if b_native is not None and b_uncoalesced is not None else None
        ),
        "c_score_stream_64": c,
        "d_probe_during_largest_request": d,
        "d_model_info_probe_during_largest_temporal_request": d_temporal,
        "d_entity_score_probe_during_largest_temporal_ae_request": d_temporal_score,
        "b_judged_on": "h2load" if b_native is not None else "python client (h2load missing)",
        "targets_met": targets,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else RESULTS / f"scorer-{stamp}.json"
    atomic_write_text(out, json.dumps(result, indent=2))
    _table(result)
    print(f"\nwritten to {out}")
    return 0


def _table(r: dict[str, Any]) -> None:
    ceil = r["ceiling_onnxruntime_in_process"]
    c = r["c_score_stream_64"]
    rows: list[tuple[str, str, dict[str, Any], str]] = [
        ("ceiling: ORT in-process, 4096 rows", f"{ceil['batch_4096']['rows_per_s']:,} rows/s",
         ceil["batch_4096"], "1.000"),
        ("ceiling: ORT in-process, 1 row", f"{ceil['single_row']['calls_per_s']:,} calls/s",
         ceil["single_row"], "1.000"),
    ]
    for key, label in (("a_score_batch_4096", "(a) Score 4096-row batches, c=4, h2load"),
                       ("a_score_batch_4096_python_client", "(a) 4096-row batches, c=4, Python"),
                       ("a_score_batch_4096_processes", "(a) 4096 rows, c=8, h2load, N procs")):
        a = r[key]
        if a is None:
            why = ("h2load not installed (apt-get install nghttp2-client)"
                   if not shutil.which("h2load") else "--processes 1")
            print(f"{label}: skipped, {why}")
            continue
        label = label.replace("N procs", f"{r['settings']['processes']} procs")
        rows.append((label, f"{a['rows_per_s']:,} rows/s", a, f"{a['ratio_to_ceiling']:.3f}"))
    for key, label in (("b_score_single_row", "(b) Score 1 row, c=16, h2load"),
                       ("b_score_single_row_python_client", "(b) Score 1 row, c=16, Python"),
                       ("b_score_single_row_uncoalesced", "(b) 1 row, c=16, h2load, no coalescing"),
                       ("b_score_single_row_entity_keyed", "(b) 1 row + entity id, c=16, h2load"),
                       ("b_score_single_row_concurrency_1", "(b) 1 row, c=1, h2load"),
                       ("b_score_single_row_processes", "(b) 1 row, c=16, h2load, N procs"),
                       ("b_score_single_row_entity_per_client_python",
                        "(b) 1 row, entity/client, Python"),
                       ("b_score_single_row_entity_per_client_python_temporal",
                        "(b) same, temporal model (W=16)"),
                       ("floor_empty_grpc_handler_single_row", "floor: empty handler, h2load"),
                       ("floor_empty_grpc_handler_single_row_python_client",
                        "floor: empty handler, Python")):
        m = r[key]
        if m is None:
            why = ("h2load not installed (apt-get install nghttp2-client)"
                   if not shutil.which("h2load")
                   else "--processes 1" if key.endswith("_processes") else "--coalesce-ms 0")
            print(f"{label}: skipped, {why}")
            continue
        label = label.replace("N procs", f"{r['settings']['processes']} procs")
        ratio = f"{m['ratio_to_ceiling']:.3f}" if "ratio_to_ceiling" in m else "-"
        rows.append((label, f"{m['requests_per_s']:,} req/s", m, ratio))
    rows.append(("(c) ScoreStream 64-row msgs", f"{c['rows_per_s']:,} rows/s", c,
                 f"{c['ratio_to_ceiling']:.3f}"))
    d = r["d_probe_during_largest_request"]
    rows.append(("(d) 1-row probe, idle", f"{d['idle']['requests']:,} calls", d["idle"], "-"))
    rows.append(("(d) 1-row probe, largest request in flight",
                 f"{d['loaded']['requests']:,} calls", d["loaded"], "-"))
    dt = r.get("d_model_info_probe_during_largest_temporal_request")
    if dt is not None:
        rows.append(("(d) GetModelInfo, temporal model, loaded",
                     f"{dt['loaded']['requests']:,} calls", dt["loaded"], "-"))
    ds = r.get("d_entity_score_probe_during_largest_temporal_ae_request")
    if ds is not None:
        rows.append(("(d) Score 1 row + id, temporal AE, loaded",
                     f"{ds['loaded']['requests']:,} calls", ds["loaded"], "-"))
    floor = d.get("floor_empty_grpc_handler")
    if floor is not None:
        rows.append(("(d) same, empty grpc.aio handler (floor)",
                     f"{floor['loaded']['requests']:,} calls", floor["loaded"], "-"))
    print(f"\n| {'phase':<40} | {'throughput':>18} | p50 ms | p99 ms | ratio | "
          "server CPU us/call | client CPU us/call |")
    print(f"|{'-' * 42}|{'-' * 20}|--------|--------|-------|--------------------|"
          "--------------------|")
    for name, thr, m, ratio in rows:
        srv = m.get("server_cpu_us_per_call", "-")
        cli = m.get("client_cpu_us_per_call", "-")
        print(f"| {name:<40} | {thr:>18} | {m['p50_ms']:6.3f} | {m['p99_ms']:6.3f} | "
              f"{ratio:>5} | {srv!s:>18} | {cli!s:>18} |")
    print("(a) judged on:", r["a_judged_on"], "| (b) judged on:", r["b_judged_on"])
    if r.get("b_coalescing_gain") is not None:
        print(f"(b) coalescing gain (c=16, h2load): {r['b_coalescing_gain']:.2f}x")
    if floor is not None:
        print(f"(d) large requests in the phase: scorer {d['large_requests']}, empty handler "
              f"{floor['large_requests']}; probe p99 over the floor: {d['p99_over_floor_ms']} ms")
    print("targets:", json.dumps(r["targets_met"]))
    print("load average before/after:", r["machine"]["loadavg_before"],
          r["machine"]["loadavg_after"])


if __name__ == "__main__":
    raise SystemExit(main())
