"""Execution backends for the scoring graph: TensorRT engine, ONNX Runtime CUDA, ONNX Runtime CPU.

``select_engine`` walks ``tensorrt -> cuda -> cpu`` from the requested backend down and records
why each better option was skipped, so an operator can tell from the log (and ``GetModelInfo``)
why a model runs where it runs. TensorRT is imported lazily: CPU-only installs never need it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ds_serving.bundle import INPUT_NAME, OUTPUT_NAMES

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "cuda", "cpu")
# An optional output of the scoring graph: each row's largest-error feature (ArgMax of
# ``feature_errors``). Dataset scoring adds it to the graph it loads (``with_top_feature``) so
# the [b, f] errors never leave onnxruntime when only the top feature is kept.
TOP_OUTPUT = "top_feature"
CPU, CUDA, TENSORRT = "cpu", "cuda", "tensorrt"


class EngineUnavailable(RuntimeError):
    """A backend cannot run here (missing library, no GPU, engine built for another GPU)."""


class Engine(Protocol):
    """Runs the scoring graph: inputs [b, f] or [b, W, f] float32 -> score [b], errors [b, f]."""

    name: str  # "tensorrt" | "cuda" | "cpu"
    reason: str  # why this backend was chosen

    def run(self, inputs: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray | None]: ...

    def run_top(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores [b] and each row's largest-error feature index [b]."""
        ...


def top_of(scores: np.ndarray, errors: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``run_top`` from ``run``'s outputs (engines whose graph has no top-feature output)."""
    assert errors is not None
    return scores, np.argmax(errors, axis=1)


class OrtEngine:
    """ONNX Runtime session; ``run`` is thread-safe (ORT sessions allow concurrent runs)."""

    def __init__(
        self,
        model: bytes | Path,
        *,
        providers: list[str | tuple[str, dict[str, str]]],
        reason: str,
        intra_op_threads: int = 0,
        allow_spinning: bool = True,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not allow_spinning:
            # Spinning worker threads burn cores the gRPC threads need on small machines.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = model if isinstance(model, bytes) else str(model)
        self._session = ort.InferenceSession(source, sess_options=options, providers=providers)
        active = self._session.get_providers()[0]
        self.name = CUDA if active == "CUDAExecutionProvider" else CPU
        self.reason = reason
        first = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if first == "CUDAExecutionProvider" and self.name != CUDA:
            raise EngineUnavailable("onnxruntime could not initialise CUDA on this machine")
        self._score_only = [OUTPUT_NAMES[0]]
        self._both = list(OUTPUT_NAMES)
        outputs = {o.name for o in self._session.get_outputs()}
        self._top = [OUTPUT_NAMES[0], TOP_OUTPUT] if TOP_OUTPUT in outputs else None

    def run(self, inputs: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if explain:
            scores, errors = self._session.run(self._both, {INPUT_NAME: inputs})
            return scores, errors
        return self._session.run(self._score_only, {INPUT_NAME: inputs})[0], None

    def run_top(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._top is None:
            return top_of(*self.run(inputs, True))
        scores, top = self._session.run(self._top, {INPUT_NAME: inputs})
        return scores, top


class TensorRTEngine:
    """A serialized TensorRT engine (``model.plan``) built for this GPU.

    Device buffers come from onnxruntime-gpu's CUDA allocator (``OrtValue``), which the GPU
    install already has, so no extra CUDA binding package is needed. Batches are padded to a
    power of two (one buffer set per size, cached) and split at the profile's maximum batch.
    """

    def __init__(self, plan: Path, *, n_features: int, window: int | None) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise EngineUnavailable(f"the tensorrt package is not installed ({exc})") from exc
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineUnavailable(
                "onnxruntime-gpu (CUDAExecutionProvider) is needed for TensorRT device buffers"
            )
        self._ort = ort
        # ERROR: TensorRT warns on every enqueue on the default stream, which this engine uses
        # on purpose (see run)
        self._trt_logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._trt_logger)
        engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if engine is None:
            raise EngineUnavailable(
                f"{plan}: TensorRT could not deserialize the engine (built for another GPU "
                "architecture or TensorRT version?)"
            )
        self._engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        missing = [n for n in (INPUT_NAME, *OUTPUT_NAMES) if n not in names]
        if inputs != [INPUT_NAME] or missing:
            raise EngineUnavailable(
                f"{plan}: engine tensors {names} do not match the contract "
                f"(input {INPUT_NAME!r}, outputs {list(OUTPUT_NAMES)})"
            )
        lo, _opt, hi = (tuple(d) for d in engine.get_tensor_profile_shape(INPUT_NAME, 0))
        tail = (n_features,) if window is None else (window, n_features)
        if hi[1:] != tail:
            raise EngineUnavailable(
                f"{plan}: engine input shape {tuple(hi)} does not end in {tail}"
            )
        wrong_types = [n for n in (INPUT_NAME, *OUTPUT_NAMES)
                       if engine.get_tensor_dtype(n) != trt.DataType.FLOAT]
        if wrong_types:
            raise EngineUnavailable(f"{plan}: tensors {wrong_types} are not float32")
        self._min_batch, self._max_batch = int(lo[0]), int(hi[0])
        self._tail = tail
        self._n_features = n_features
        self._context = engine.create_execution_context()
        self._buffers: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()  # an execution context runs one batch at a time
        self.name = TENSORRT
        self.reason = f"TensorRT engine {plan.name} loaded (batch {lo[0]}..{hi[0]})"
        self._warm_up(plan)

    def _warm_up(self, plan: Path) -> None:
        """One run here, not on the first request: device allocation, the CUDA libraries and
        the engine's output shapes are checked while the caller can still fall back to
        onnxruntime (a broken GPU set-up otherwise fails every request)."""
        try:
            self.run(np.zeros((1, *self._tail), np.float32), explain=True)
            size = self._bucket(1)
            shapes = {n: tuple(self._context.get_tensor_shape(n)) for n in OUTPUT_NAMES}
        except Exception as exc:  # CUDA/TensorRT raise assorted types
            raise EngineUnavailable(f"{plan}: a warm-up run failed ({exc})") from exc
        expected = {OUTPUT_NAMES[0]: (size,), OUTPUT_NAMES[1]: (size, self._n_features)}
        if shapes != expected:
            raise EngineUnavailable(
                f"{plan}: engine output shapes {shapes} for a batch of {size}, expected "
                f"{expected}")

    def _bucket(self, n: int) -> int:
        size = 1 << max(0, (n - 1).bit_length())
        return min(self._max_batch, max(self._min_batch, size))

    def _buffers_for(self, size: int) -> dict[str, Any]:
        bufs = self._buffers.get(size)
        if bufs is None:
            new = self._ort.OrtValue.ortvalue_from_shape_and_type
            bufs = {
                INPUT_NAME: new((size, *self._tail), np.float32, "cuda", 0),
                OUTPUT_NAMES[0]: new((size,), np.float32, "cuda", 0),
                OUTPUT_NAMES[1]: new((size, self._n_features), np.float32, "cuda", 0),
                "host": np.zeros((size, *self._tail), np.float32),
            }
            self._buffers[size] = bufs
        return bufs

    def run(self, inputs: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        n = len(inputs)
        scores = np.empty(n, np.float32)
        errors = np.empty((n, self._n_features), np.float32) if explain else None
        with self._lock:
            for start in range(0, n, self._max_batch):
                part = inputs[start : start + self._max_batch]
                b = len(part)
                size = self._bucket(b)
                bufs = self._buffers_for(size)
                host = bufs["host"]
                host[:b] = part
                bufs[INPUT_NAME].update_inplace(host)  # synchronous host -> device copy
                self._context.set_input_shape(INPUT_NAME, (size, *self._tail))
                for key in (INPUT_NAME, *OUTPUT_NAMES):
                    self._context.set_tensor_address(key, bufs[key].data_ptr())
                # the legacy default stream (0) orders the engine after the synchronous
                # host -> device copy above and before the blocking device -> host copies below
                if not self._context.execute_async_v3(0):
                    raise RuntimeError("TensorRT execution failed")
                scores[start : start + b] = bufs[OUTPUT_NAMES[0]].numpy()[:b]
                if errors is not None:
                    errors[start : start + b] = bufs[OUTPUT_NAMES[1]].numpy()[:b]
        return scores, errors

    def run_top(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return top_of(*self.run(inputs, True))


def _load_cuda_libraries(ort: Any) -> None:
    """onnxruntime-gpu's CUDA and cuDNN come as pip wheels, which are not on the library search
    path: load them before a CUDA session or CUDA buffers is made (``preload_dlls``, onnxruntime
    >= 1.21; torch would load them too, but the scorer does not import torch). Harmless when the
    libraries are installed system-wide; a failure surfaces when CUDA is first used."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # the session creation below reports what is really missing
        log.debug("onnxruntime.preload_dlls failed: %s", exc)


def select_engine(
    model: bytes | Path,
    *,
    n_features: int,
    window: int | None,
    backend: str = "auto",
    plan: Path | None = None,
    intra_op_threads: int = 0,
    allow_spinning: bool = True,
) -> Engine:
    """Best available backend at or below ``backend`` (tensorrt > cuda > cpu), reason logged."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    skipped: list[str] = []
    import onnxruntime as ort

    if backend != CPU and "CUDAExecutionProvider" in ort.get_available_providers():
        _load_cuda_libraries(ort)
    if backend in ("auto", TENSORRT):
        if plan is None or not plan.is_file():
            skipped.append("no model.plan in the bundle")
        else:
            try:
                return TensorRTEngine(plan, n_features=n_features, window=window)
            except Exception as exc:  # TensorRT/CUDA raise assorted types; fall back instead
                skipped.append(f"TensorRT unavailable: {exc}")
    if backend in ("auto", TENSORRT, CUDA):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            try:
                engine = OrtEngine(
                    model,
                    # TF32 (on by default) would round matmuls to ~5e-4: scores must match CPU
                    providers=[("CUDAExecutionProvider", {"use_tf32": "0"}),
                               "CPUExecutionProvider"],
                    reason="; ".join([*skipped, "onnxruntime CUDA provider"]),
                    intra_op_threads=intra_op_threads,
                )
                _log_choice(backend, engine)
                return engine
            except Exception as exc:  # CUDA init failures surface as several types
                skipped.append(f"onnxruntime CUDA failed: {exc}")
        else:
            skipped.append("onnxruntime has no CUDAExecutionProvider (CPU build or no GPU)")
    reason = "; ".join(skipped) + "; using onnxruntime CPU" if skipped else "cpu requested"
    engine = OrtEngine(
        model,
        providers=["CPUExecutionProvider"],
        reason=reason,
        intra_op_threads=intra_op_threads,
        allow_spinning=allow_spinning,
    )
    _log_choice(backend, engine)
    return engine


def _log_choice(requested: str, engine: Engine) -> None:
    """Warn when the requested backend was not obtained (the Scorer logs every choice)."""
    level = logging.WARNING if requested not in ("auto", engine.name) else logging.DEBUG
    log.log(level, "backend %s (requested %s): %s", engine.name, requested, engine.reason)
