"""The GPU paths, run for real on a lent device: CUDA training, CUDA/TensorRT scoring parity,
the served backend, and the in-process ceilings per execution provider.

    python -m bench.gpu_check --out results.json      (bench/gpu_check.sh runs it on a device)

Each section records what it measured or why it could not run (``error``/``skipped``), so one
missing library does not hide the other results. On a CPU-only machine every GPU section says
so and the CPU figures are still produced (the script itself is tested that way).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = [f"f{i}" for i in range(1, 9)]
N_HOSTS = 8


def telemetry(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated 8-feature rows for ``N_HOSTS`` hosts (time-ordered per host) and host ids."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows) / 288.0
    latent = np.stack([np.sin(2 * np.pi * t), np.cos(2 * np.pi * t)], axis=1)
    mix = rng.normal(size=(2, len(FEATURES)))
    rows = latent @ mix + 0.1 * rng.normal(size=(n_rows, len(FEATURES))) + 50.0
    hosts = np.repeat(np.arange(N_HOSTS), -(-n_rows // N_HOSTS))[:n_rows]
    return rows.astype(np.float32), hosts


def section(results: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one check; keep its figures, or its error with the traceback's last lines."""
    print(f"== {name}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:
        results[name] = {"error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc().splitlines()[-8:]}
    results[name]["section_seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(results[name], indent=1, default=str)[:4000], file=sys.stderr, flush=True)


def environment() -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from ds_assets.training.tensorrt_build import unavailable_reason

    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             check=False).stdout.strip()
    except FileNotFoundError:
        smi = "nvidia-smi not found"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "nvidia_smi": smi,
        "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
        "tensorrt_unavailable_reason": unavailable_reason(),
        "cpus": os.cpu_count(),
    }


def training(epochs: int, rows: int) -> dict[str, Any]:
    """Dense and temporal AE on the same rows, on CUDA and on CPU: wall time, best validation
    loss, and ONNX export parity of the CUDA-trained model (the exporter moves it to CPU).
    One untimed run per device first, so CUDA start-up (context, cuBLAS/cuDNN) is not counted
    against the first family."""
    import torch

    from ds_assets.training.detectors import DetectorParams, train_detector
    from ds_assets.training.export import check_parity, export_onnx, model_inputs

    train, train_hosts = telemetry(rows, 0)
    val, val_hosts = telemetry(rows // 5, 1)
    devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    for device in devices:
        for family in ("dense_ae", "temporal_ae"):
            train_detector(DetectorParams(family=family, epochs=1), train[:2048],
                           val[:512], FEATURES, train_entities=train_hosts[:2048],
                           val_entities=val_hosts[:512], device=torch.device(device))
    out: dict[str, Any] = {"train_rows": len(train), "val_rows": len(val), "epochs": epochs}
    for family in ("dense_ae", "temporal_ae"):
        params = DetectorParams(family=family, epochs=epochs, patience=epochs, seed=0,
                                batch_size=512)
        runs: dict[str, Any] = {}
        for device in devices:
            trained = train_detector(params, train, val, FEATURES, train_entities=train_hosts,
                                     val_entities=val_hosts, device=torch.device(device))
            s = trained.training_summary
            runs[device] = {"device": s.get("device"), "wall_time_s": s["wall_time_s"],
                            "best_val_loss": s.get("best_val_loss"),
                            "epochs_run": s.get("epochs_run")}
            if device == devices[0]:
                onnx_bytes = export_onnx(trained)
                parity = check_parity(trained, onnx_bytes, model_inputs(trained, val[:512]))
                runs[device]["onnx_parity"] = {"max_rel_diff": parity.max_rel_diff,
                                               "tolerance": parity.tolerance,
                                               "passed": parity.passed}
        if "cuda" in runs:
            runs["cpu_over_cuda_time"] = round(
                runs["cpu"]["wall_time_s"] / runs["cuda"]["wall_time_s"], 2)
        out[family] = runs
    return out


def _bundle(tmp: Path) -> Any:
    """A dense-AE bundle (production layer sizes) trained here, as the graph would publish."""
    from ds_assets.training.detectors import DetectorParams, train_detector
    from ds_assets.training.export import export_onnx
    from ds_serving.bundle import promote, write_bundle

    train, _ = telemetry(20_000, 2)
    val, _ = telemetry(4_000, 3)
    trained = train_detector(DetectorParams(epochs=3), train, val, FEATURES)
    bundle = write_bundle(tmp / "models", "gpu-check", export_onnx(trained), kind=trained.kind,
                          features=FEATURES, threshold=3.0, threshold_rule={"rule": "fixed"})
    promote(tmp / "models", "gpu-check", bundle.manifest.version)
    return bundle


def cuda_parity(tmp: Path) -> dict[str, Any]:
    """ORT CUDA against ORT CPU on the same 100k rows, judged by the export parity rule."""
    from ds_assets.training.parity import compare_outputs
    from ds_assets.training.tensorrt_build import FP32_RTOL
    from ds_serving.scoring import Scorer

    bundle = _bundle(tmp)
    rows, _ = telemetry(100_000, 4)
    rows[::97] *= 1.5  # some clearly anomalous rows: large errors must agree too
    cpu = Scorer.from_bundle(bundle, backend="cpu")
    cuda = Scorer.from_bundle(bundle, backend="cuda")
    out: dict[str, Any] = {"backend": cuda.backend, "reason": cuda.backend_reason}
    if cuda.backend != "cuda":
        out["skipped"] = "CUDA backend not obtained"
        return out
    want = cpu.run(rows, explain=True)
    got = cuda.run(rows, explain=True)
    assert want[1] is not None and got[1] is not None
    parity = compare_outputs((want[0], want[1]), (got[0], got[1]), FP32_RTOL, "ort-cpu")
    out.update(rows=len(rows), max_abs_diff_score=parity.max_abs_diff_score,
               max_abs_diff_feature_errors=parity.max_abs_diff_feature_errors,
               max_rel_diff=parity.max_rel_diff, tolerance=parity.tolerance,
               passed=parity.passed,
               flags_differ=int(((want[0] > 3.0) != (got[0] > 3.0)).sum()))
    return out


def tensorrt(tmp: Path) -> dict[str, Any]:
    """FP16 and FP32 engines from the bundle's graph, parity against ORT CPU, then served."""
    from ds_assets.training import tensorrt_build
    from ds_serving.bundle import load_bundle
    from ds_serving.scoring import Scorer

    reason = tensorrt_build.unavailable_reason()
    if reason:
        return {"skipped": reason}
    bundle = _bundle(tmp)
    rows, _ = telemetry(20_000, 5)
    out: dict[str, Any] = {}
    for fp16 in (True, False):
        # FP16 first: compile_and_check keeps it only within FP16_RTOL, else rebuilds FP32
        compiled = tensorrt_build.compile_and_check(
            bundle.model_bytes(), rows, n_features=len(FEATURES), window=None, fp16=fp16,
            opt_batch=4096, max_batch=16_384, latency_batches=(1, 4096, 16_384))
        out["fp16_requested" if fp16 else "fp32"] = compiled.info()
    fp32 = out["fp32"]
    if fp32["parity"]["passed"]:
        build = tensorrt_build.build_engine(bundle.model_bytes(), n_features=len(FEATURES),
                                            window=None, fp16=False, opt_batch=4096,
                                            max_batch=16_384)
        tensorrt_build.attach_engine(bundle.path, build.plan, build.info())
        served = Scorer.from_bundle(load_bundle(bundle.path), backend="auto")
        out["served_backend"] = served.backend
        out["served_reason"] = served.backend_reason
    return out


def served_backend(tmp: Path) -> dict[str, Any]:
    """``ds-scorer serve --backend auto`` (and ``cuda``) as a process: what GetModelInfo says."""
    import grpc

    from ds_serving.proto import scoring_pb2, scoring_pb2_grpc

    bundle = _bundle(tmp)
    out: dict[str, Any] = {}
    for backend in ("auto", "cuda", "cpu"):
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "ds_serving.cli", "--log-level", "INFO", "serve",
             "--models", str(tmp / "models"), "--name", bundle.manifest.name, "--host",
             "127.0.0.1", "--port", str(port), "--metrics-port", str(_free_port()),
             "--metrics-host", "127.0.0.1", "--backend", backend],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=60)
                stub = scoring_pb2_grpc.ScorerStub(channel)
                deadline = time.time() + 60
                while True:
                    try:
                        info = stub.GetModelInfo(scoring_pb2.ModelInfoRequest(), timeout=5)
                        break
                    except grpc.RpcError:
                        if time.time() > deadline:
                            raise
                        time.sleep(0.2)
                rows, _ = telemetry(4096, 6)
                from ds_serving.client import encode_request

                answer = stub.Score(encode_request(rows), timeout=30)
            out[backend] = {"backend": info.backend, "reason": info.backend_reason,
                            "scored_rows": answer.n_rows}
        finally:
            server.terminate()
            try:
                log, _ = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                log, _ = server.communicate()
            out.setdefault(backend, {})["log_tail"] = log.splitlines()[-4:]
    return out


def ceilings(tmp: Path, seconds: float) -> dict[str, Any]:
    """In-process rows/s of the same graph on each execution provider (the scorer's ceiling)."""
    import onnxruntime as ort

    from ds_serving.bundle import INPUT_NAME, OUTPUT_NAMES

    bundle = _bundle(tmp)
    providers: dict[str, list[Any]] = {"cpu": ["CPUExecutionProvider"]}
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers["cuda"] = [("CUDAExecutionProvider", {"use_tf32": "0"}),
                             "CPUExecutionProvider"]
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for name, chosen in providers.items():
        session = ort.InferenceSession(str(bundle.model_path), providers=chosen)
        results: dict[str, Any] = {"active": session.get_providers()[0]}
        for n in (1, 4096, 65_536):
            x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
            for _ in range(20):
                session.run([OUTPUT_NAMES[0]], {INPUT_NAME: x})
            lat = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t = time.perf_counter()
                session.run([OUTPUT_NAMES[0]], {INPUT_NAME: x})
                lat.append(time.perf_counter() - t)
            ms = np.asarray(lat) * 1000
            results[f"batch_{n}"] = {"rows_per_s": round(n * len(lat) / sum(lat)),
                                     "p50_ms": round(float(np.percentile(ms, 50)), 4),
                                     "p99_ms": round(float(np.percentile(ms, 99)), 4)}
        out[name] = results
    if "cuda" in out:
        out["cuda_over_cpu_rows_per_s"] = {
            k: round(out["cuda"][k]["rows_per_s"] / out["cpu"][k]["rows_per_s"], 3)
            for k in out["cpu"] if k.startswith("batch_")}
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON result path")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--training-rows", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=2.0, help="per ceiling measurement")
    parser.add_argument("--sections", default="all",
                        help="comma-separated subset: environment,training,cuda_parity,"
                             "tensorrt,served_backend,ceilings")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="ds-gpu-") as tmp:
        root = Path(tmp)
        checks: dict[str, Callable[[], dict[str, Any]]] = {
            "environment": environment,
            "training": lambda: training(args.epochs, args.training_rows),
            "cuda_parity": lambda: cuda_parity(root / "parity"),
            "tensorrt": lambda: tensorrt(root / "trt"),
            "served_backend": lambda: served_backend(root / "serve"),
            "ceilings": lambda: ceilings(root / "ceil", args.seconds),
        }
        chosen = list(checks) if args.sections == "all" else args.sections.split(",")
        unknown = sorted(set(chosen) - set(checks))
        if unknown:
            parser.error(f"unknown section(s) {unknown}; choose from {', '.join(checks)}")
        for name in chosen:
            section(results, name, checks[name])
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    print(f"written to {args.out}; sections with errors: {failed or 'none'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
