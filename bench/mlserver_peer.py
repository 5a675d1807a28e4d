"""Our gRPC scorer against MLServer on the same ``model.onnx``: phases (a) and (b), one run.

MLServer 1.7.1 runs in its own pinned environment under ``bench/results/peers/`` (created on
first use, not in git; uvloop 0.21.0, because 0.22 breaks its worker pool with "There is no
current event loop", SeldonIO/MLServer#2286), serving the model through
``bench/mlserver_runtime.py`` (MLServer ships no ONNX runtime) over KServe v2 gRPC with raw
bytes. Its configurations: in-process (``parallel_workers`` 0, onnxruntime on every core), its
worker pool (one worker per core, one thread each), and the worker pool with adaptive batching
(at most 16 requests or 4 ms, like our 4 ms coalescing window). Each is driven by h2load like
``bench.scorer``: (a) 4096-row requests at concurrency 4, (b) single rows at concurrency 16;
every request must end with gRPC status OK in the server's own counters. Ours runs before and
after the peers (interleaved), and the ratios use the lower of our two runs.

    .venv/bin/python -m bench.mlserver_peer [--seconds 8]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench.peers import ensure_env
from bench.scorer import (
    FEATURES,
    _checked_h2load,
    _free_port,
    _h2load_unary,
    _start_server,
    ceiling,
    h2load_unary,
)
from ds_serving.atomic import atomic_write_text
from ds_serving.bundle import load_champion, promote, write_bundle
from ds_serving.client import encode_request
from tests.support.models import dense_autoencoder

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODEL = "bench-ae"
INFER = "inference.GRPCInferenceService/ModelInfer"
THRESHOLD = 2.0
MLSERVER_HANDLED = "grpc_server_handled_total"  # by grpc_method and grpc_code


def pins() -> tuple[str, ...]:
    import onnxruntime

    return ("mlserver==1.7.1", "uvloop==0.21.0", f"onnxruntime=={onnxruntime.__version__}")


CONFIGS: dict[str, dict[str, Any]] = {
    "in_process": {"parallel_workers": 0, "intra_op_threads": 0},
    "worker_pool": {"parallel_workers": os.cpu_count() or 1, "intra_op_threads": 1},
    "worker_pool_adaptive_batching": {"parallel_workers": os.cpu_count() or 1,
                                      "intra_op_threads": 1, "max_batch_size": 16,
                                      "max_batch_time": 0.004},
}


def _start_mlserver(python: Path, workdir: Path, model_path: Path, config: dict[str, Any]
                    ) -> tuple[subprocess.Popen[bytes], int, int]:
    folder = workdir / "mlserver"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / MODEL).mkdir(parents=True)
    port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
    (folder / "settings.json").write_text(json.dumps({
        "debug": False, "parallel_workers": config["parallel_workers"], "grpc_port": port,
        "http_port": http_port, "metrics_port": metrics_port, "host": "127.0.0.1"}))
    model_settings: dict[str, Any] = {
        "name": MODEL, "implementation": "mlserver_runtime.OnnxAnomalyScorer",
        "parameters": {"uri": str(model_path), "extra": {
            "threshold": THRESHOLD, "intra_op_threads": config["intra_op_threads"]}}}
    for key in ("max_batch_size", "max_batch_time"):
        if key in config:
            model_settings[key] = config[key]
    (folder / MODEL / "model-settings.json").write_text(json.dumps(model_settings))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bench")}
    server = subprocess.Popen([str(python.parent / "mlserver"), "start", str(folder)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    ready = f"http://127.0.0.1:{http_port}/v2/models/{MODEL}/ready"
    while True:
        try:
            if urllib.request.urlopen(ready, timeout=5).status == 200:
                return server, port, metrics_port
        except OSError:
            pass
        if time.time() > deadline or server.poll() is not None:
            server.kill()
            err = server.stderr.read().decode()[-2000:] if server.stderr else ""
            raise RuntimeError(f"MLServer did not start within 120 s: {err}")
        time.sleep(0.5)


def _mlserver_phase(python: Path, server: subprocess.Popen[bytes], port: int,
                    metrics_port: int, payload: Path, n_rows: int, concurrency: int,
                    connections: int, seconds: float, workdir: Path) -> dict[str, Any]:
    """One h2load phase against MLServer; fails unless its counters show every request OK."""
    subprocess.run([str(python), str(ROOT / "bench" / "mlserver_runtime.py"), "check",
                    str(port), str(payload), str(n_rows)], check=True)
    result = _checked_h2load(
        server.pid, [metrics_port],
        lambda: h2load_unary(port, INFER, payload.read_bytes(), n_rows, concurrency, seconds,
                             connections, workdir),
        method="ModelInfer", counter=MLSERVER_HANDLED)
    assert result is not None
    return result


def _rate(run: dict[str, Any], phase: str) -> float:
    return float(run[phase]["rows_per_s" if phase == "a" else "requests_per_s"])


def summarize(runs: dict[str, Any]) -> dict[str, Any]:
    """Per phase: ours (the lower of the runs before and after the peers) over each MLServer
    configuration and over its best, against the targets (3x on (a), 2x on (b))."""
    peers = [k for k in runs if k.startswith("mlserver_")]
    summary: dict[str, Any] = {}
    for phase, target in (("a", 3.0), ("b", 2.0)):
        ours = min(_rate(runs["ours_before"], phase), _rate(runs["ours_after"], phase))
        best = max(peers, key=lambda k: _rate(runs[k], phase))
        summary[phase] = {
            "ours": ours, "mlserver_best": best, "mlserver_best_rate": _rate(runs[best], phase),
            "ratio_to_best": round(ours / _rate(runs[best], phase), 2),
            "ratios": {k: round(ours / _rate(runs[k], phase), 2) for k in peers},
            "target": target, "met": ours / _rate(runs[best], phase) >= target,
            "unit": "rows/s" if phase == "a" else "requests/s"}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each phase")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if shutil.which("h2load") is None:
        print("h2load not installed (apt-get install nghttp2-client): nothing to compare")
        return 1
    python = ensure_env("mlserver-1.7.1", pins())
    ours_args = argparse.Namespace(backend="cpu", threads=1, workers=0, event_loop="auto",
                                   coalesce_ms=4.0)
    tmp = Path(tempfile.mkdtemp(prefix="ds-mlserver-peer-"))
    rng = np.random.default_rng(1)
    rows = {"a": rng.normal(size=(4096, len(FEATURES))).astype(np.float32),
            "b": rng.normal(size=(1, len(FEATURES))).astype(np.float32)}
    shape = {"a": (4, 2), "b": (16, 1)}  # (concurrency, connections), as bench.scorer
    try:
        models = tmp / "models"
        bundle = write_bundle(models, MODEL, dense_autoencoder(len(FEATURES), (32, 16, 4)),
                              kind="dense_ae", features=FEATURES, threshold=THRESHOLD,
                              threshold_rule={"rule": "fixed"})
        promote(models, MODEL, bundle.manifest.version)
        model_path = load_champion(models, MODEL).model_path
        payloads = {}
        for phase, x in rows.items():
            np.save(tmp / f"{phase}.npy", x)
            payloads[phase] = tmp / f"{phase}.v2"
            subprocess.run([str(python), str(ROOT / "bench" / "mlserver_runtime.py"), "encode",
                            str(tmp / f"{phase}.npy"), str(payloads[phase]), MODEL], check=True)
        print("ceiling: in-process onnxruntime", file=sys.stderr)
        ceil = ceiling(model_path, args.seconds / 2)

        def ours() -> dict[str, Any]:
            server, port, metrics_port = _start_server(models, MODEL, ours_args, processes=1)
            try:
                out = {}
                for phase, x in rows.items():
                    c, conns = shape[phase]
                    print(f"ours ({phase})", file=sys.stderr)
                    out[phase] = _checked_h2load(
                        server.pid, [metrics_port],
                        lambda x=x, c=c, conns=conns: _h2load_unary(  # type: ignore[misc]
                            port, encode_request(x), c, args.seconds, conns, tmp))
                return out
            finally:
                server.terminate()
                server.wait(30)

        runs: dict[str, Any] = {"ours_before": ours()}
        for name, config in CONFIGS.items():
            server, port, metrics_port = _start_mlserver(python, tmp, model_path, config)
            try:
                runs[f"mlserver_{name}"] = {}
                for phase, x in rows.items():
                    c, conns = shape[phase]
                    print(f"MLServer {name} ({phase})", file=sys.stderr)
                    runs[f"mlserver_{name}"][phase] = _mlserver_phase(
                        python, server, port, metrics_port, payloads[phase], len(x), c, conns,
                        args.seconds, tmp)
            finally:
                server.terminate()
                try:
                    server.wait(30)
                except subprocess.TimeoutExpired:
                    server.kill()
        runs["ours_after"] = ours()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary = summarize(runs)
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_after": os.getloadavg()},
        "pins": list(pins()), "configs": CONFIGS, "seconds": args.seconds,
        "ceiling_onnxruntime_in_process": ceil, "runs": runs, "summary": summary,
    }
    print(f"\n{'':34} {'(a) rows/s':>12} {'p99 ms':>8} {'(b) req/s':>10} {'p99 ms':>8}")
    for name, run in runs.items():
        print(f"{name:34} {run['a']['rows_per_s']:>12,} {run['a']['p99_ms']:>8.2f} "
              f"{run['b']['requests_per_s']:>10,} {run['b']['p99_ms']:>8.2f}")
    for phase, s in summary.items():
        print(f"({phase}) ours / MLServer's best ({s['mlserver_best']}): {s['ratio_to_best']}x "
              f"(target >= {s['target']:g}x)")
    out = args.out or RESULTS / f"mlserver-peer-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
