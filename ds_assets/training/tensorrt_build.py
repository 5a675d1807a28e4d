"""TensorRT compilation of a bundle's ONNX scoring graph: build, parity, latency, attach.

Everything TensorRT/CUDA is imported lazily, so CPU-only installs import this module fine and
``unavailable_reason()`` says in words why no engine can be built here.

Policy:
- one optimization profile over the batch axis (``min_batch``..``max_batch``, tuned for
  ``opt_batch``); window and feature axes are fixed by the graph;
- FP16 where the GPU has fast FP16, *if* the FP16 engine stays within ``FP16_RTOL`` of
  onnxruntime; otherwise an FP32 engine is built and must meet ``FP32_RTOL`` (the deviation is
  relative to the largest onnxruntime output on the same inputs, as in the ONNX parity check);
- the engine is added to the bundle as ``model.plan``: the plan file is written first, then the
  manifest (listing its sha256 and the build facts) is replaced atomically, so a reader sees the
  bundle either without the plan or with a verified one. The ONNX graph itself never changes.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ds_assets.training.parity import ParityResult, compare_outputs, ort_outputs
from ds_serving import jsonio
from ds_serving.atomic import atomic_write_bytes, atomic_write_text
from ds_serving.bundle import (
    ENGINE_FILE,
    INPUT_NAME,
    MANIFEST_FILE,
    OUTPUT_NAMES,
    Bundle,
    BundleError,
    load_bundle,
    sha256_file,
)

FP16_RTOL = 1e-2
FP32_RTOL = 1e-4


class TensorRTUnavailable(RuntimeError):
    """No engine can be built here; the message says why (no package, no GPU, ...)."""


def unavailable_reason() -> str | None:
    """None when a CUDA GPU and the tensorrt package are usable; otherwise the reason."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a ds_assets dependency
        return "torch is not installed (needed for CUDA buffers)"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to this process (torch.cuda.is_available() is False)"
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"the tensorrt package is not installed ({exc}); install the 'gpu' extra"
    return None


def graph_reason(onnx_bytes: bytes) -> str | None:
    """Why TensorRT cannot take this graph, None when it can: TensorRT has no float64, which
    the nearest-window graph computes in (``training.nearest_windows``)."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    double = onnx.TensorProto.DOUBLE
    if (any(init.data_type == double for init in model.graph.initializer)
            or any(node.op_type == "Cast" and attr.name == "to" and attr.i == double
                   for node in model.graph.node for attr in node.attribute)):
        return "the graph computes in float64, which TensorRT does not support"
    return None


@dataclass(frozen=True)
class EngineBuild:
    plan: bytes
    precision: str  # "fp16" or "fp32"
    build_seconds: float
    min_batch: int
    opt_batch: int
    max_batch: int
    input_tail: tuple[int, ...]  # input shape after the batch axis
    tensorrt_version: str
    device_name: str

    def info(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("plan")
        data["input_tail"] = list(self.input_tail)
        data["plan_bytes"] = len(self.plan)
        return data


def input_tail(n_features: int, window: int | None) -> tuple[int, ...]:
    return (n_features,) if window is None else (window, n_features)


def build_engine(
    onnx_bytes: bytes,
    *,
    n_features: int,
    window: int | None,
    fp16: bool = True,
    min_batch: int = 1,
    opt_batch: int = 4096,
    max_batch: int = 65_536,
    workspace_bytes: int = 1 << 30,
) -> EngineBuild:
    """Serialize a TensorRT engine for this GPU from the ONNX graph (dynamic batch profile)."""
    reason = unavailable_reason() or graph_reason(onnx_bytes)
    if reason:
        raise TensorRTUnavailable(reason)
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(
            f"batch profile needs 1 <= min_batch <= opt_batch <= max_batch, got "
            f"{min_batch}, {opt_batch}, {max_batch}"
        )
    import tensorrt as trt
    import torch

    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    # BuilderFlag.FP16 is gone in TensorRT 11 (strong typing only): FP32 there
    fp16_flag = getattr(trt.BuilderFlag, "FP16", None)
    use_fp16 = bool(
        fp16 and fp16_flag is not None and getattr(builder, "platform_has_fast_fp16", True)
    )
    if use_fp16:
        config.set_flag(fp16_flag)
    elif hasattr(trt.BuilderFlag, "TF32"):
        # TF32 is on by default and rounds matmul inputs to 10-bit mantissas (~5e-4 relative):
        # an "fp32" engine must be FP32, or its parity with onnxruntime is TF32's, not ours
        config.clear_flag(trt.BuilderFlag.TF32)
    tail = input_tail(n_features, window)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (min_batch, *tail), (opt_batch, *tail), (max_batch, *tail))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the TensorRT log above)")
    return EngineBuild(
        plan=bytes(serialized),
        precision="fp16" if use_fp16 else "fp32",
        build_seconds=round(time.perf_counter() - started, 3),
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        input_tail=tail,
        tensorrt_version=str(trt.__version__),
        device_name=torch.cuda.get_device_name(0),
    )


class EngineRunner:
    """Runs a serialized engine on torch CUDA buffers (one batch at a time)."""

    def __init__(self, plan: bytes) -> None:
        import tensorrt as trt
        import torch

        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine")
        self._context = self._engine.create_execution_context()
        _lo, _opt, hi = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.max_batch = int(hi[0])

    def run(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        if len(inputs) == 0:
            raise ValueError("no rows to run the engine on")
        scores, errors = [], []
        for start in range(0, len(inputs), self.max_batch):
            x = torch.from_numpy(np.ascontiguousarray(inputs[start : start + self.max_batch],
                                                      dtype=np.float32)).cuda()
            self._context.set_input_shape(INPUT_NAME, tuple(x.shape))
            outputs = {
                name: torch.empty(tuple(self._context.get_tensor_shape(name)),
                                  dtype=torch.float32, device="cuda")
                for name in OUTPUT_NAMES
            }
            self._context.set_tensor_address(INPUT_NAME, x.data_ptr())
            for name, tensor in outputs.items():
                self._context.set_tensor_address(name, tensor.data_ptr())
            stream = torch.cuda.current_stream()
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            stream.synchronize()
            scores.append(outputs[OUTPUT_NAMES[0]].cpu().numpy())
            errors.append(outputs[OUTPUT_NAMES[1]].cpu().numpy())
        return np.concatenate(scores), np.concatenate(errors)

    def latency_ms(
        self, inputs: np.ndarray, repeats: int = 50, warmup: int = 5
    ) -> dict[str, float]:
        """Wall-clock latency of one batch (host->device, execute, device->host)."""
        for _ in range(warmup):
            self.run(inputs)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            self.run(inputs)
            times.append((time.perf_counter() - started) * 1e3)
        times.sort()
        p50 = statistics.median(times)
        return {
            "batch": len(inputs),
            "p50_ms": round(p50, 4),
            "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 4),
            "rows_per_s": round(len(inputs) / (p50 / 1e3), 1),
        }


@dataclass(frozen=True)
class CompiledEngine:
    build: EngineBuild
    parity: ParityResult
    fp16_rejected: ParityResult | None  # an FP16 engine that missed its tolerance, if any
    latency: list[dict[str, float]]

    def info(self) -> dict[str, Any]:
        return {
            **self.build.info(),
            "parity": {**asdict(self.parity), "passed": self.parity.passed,
                       "reference": "onnxruntime CPU"},
            "fp16_rejected": None if self.fp16_rejected is None else asdict(self.fp16_rejected),
            "latency": self.latency,
        }


def compile_and_check(
    onnx_bytes: bytes,
    inputs: np.ndarray,
    *,
    n_features: int,
    window: int | None,
    fp16: bool = True,
    opt_batch: int = 4096,
    max_batch: int = 65_536,
    latency_batches: tuple[int, ...] = (1, 4096),
) -> CompiledEngine:
    """Build (FP16 first where supported), check parity against onnxruntime, time it."""
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    reference = ort_outputs(onnx_bytes, inputs)
    build = build_engine(onnx_bytes, n_features=n_features, window=window, fp16=fp16,
                         opt_batch=min(opt_batch, max_batch), max_batch=max_batch)
    runner = EngineRunner(build.plan)
    tolerance = FP16_RTOL if build.precision == "fp16" else FP32_RTOL
    parity = compare_outputs(reference, runner.run(inputs), tolerance, "onnxruntime")
    rejected = None
    if build.precision == "fp16" and not parity.passed:
        rejected = parity
        build = build_engine(onnx_bytes, n_features=n_features, window=window, fp16=False,
                             opt_batch=min(opt_batch, max_batch), max_batch=max_batch)
        runner = EngineRunner(build.plan)
        parity = compare_outputs(reference, runner.run(inputs), FP32_RTOL, "onnxruntime")
    latency = []
    for batch in latency_batches:
        batch = min(batch, max_batch)
        sample = np.resize(inputs, (batch, *inputs.shape[1:])).astype(np.float32)
        latency.append(runner.latency_ms(sample))
    return CompiledEngine(build=build, parity=parity, fp16_rejected=rejected, latency=latency)


def attach_engine(bundle_path: str | Path, plan: bytes, info: dict[str, Any]) -> Bundle:
    """Add ``model.plan`` to a published bundle and list it (sha256 + build facts) in the
    manifest; returns the re-verified bundle."""
    path = Path(bundle_path)
    bundle = load_bundle(path)  # verify before touching it
    if ENGINE_FILE in bundle.manifest.files:
        # Writing the plan and then the manifest is two steps: safe only while no manifest lists
        # a plan yet (readers keep verifying the old file set). Replacing a listed plan would let
        # a reader see a checksum that does not match, so an engine is added once per version.
        # An unlisted plan file is what a crash between the two steps leaves: no reader trusts
        # it, so it is simply replaced.
        raise BundleError(
            f"{path} already has {ENGINE_FILE}: bundle versions are immutable, so an engine is "
            "added once; train (or re-publish) a new bundle version to change it"
        )
    atomic_write_bytes(path / ENGINE_FILE, plan)
    manifest = bundle.manifest.to_dict()
    manifest["files"] = {**manifest["files"], ENGINE_FILE: sha256_file(path / ENGINE_FILE)}
    manifest["extra"] = {**manifest["extra"], "tensorrt": info}
    # a rejected FP16 engine's parity is inf when its outputs overflowed: null in the manifest
    atomic_write_text(path / MANIFEST_FILE, jsonio.dumps(manifest, indent=2, sort_keys=True))
    return load_bundle(path)
