"""Real ONNX scoring graphs built with ``onnx.helper`` for benchmarks and the scorer tests.

They follow the bundle contract (input ``features``, outputs ``score`` and ``feature_errors``,
normalisation inside the graph) without needing torch: a dense autoencoder with the production
detector's default layer sizes (random weights), a temporal model scoring a window by how far its
last row is from the window's mean, and a convolutional autoencoder of the temporal detector's
default sizes (random weights).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _io(
    n_features: int, window: int | None
) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    shape: list[int | str] = ["batch", n_features]
    if window is not None:
        shape = ["batch", window, n_features]
    inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, shape)]
    outputs = [
        helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
        helper.make_tensor_value_info("feature_errors", TensorProto.FLOAT, ["batch", n_features]),
    ]
    return inputs, outputs


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], n_features: int,
           window: int | None, name: str) -> bytes:
    inputs, outputs = _io(n_features, window)
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def dense_autoencoder(
    n_features: int = 8,
    hidden: Sequence[int] = (32, 16, 4),
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> bytes:
    """features -> normalise -> encoder/decoder (Gemm + Relu) -> squared error per feature."""
    rng = np.random.default_rng(seed)
    mu = np.zeros(n_features) if mean is None else np.asarray(mean)
    sd = np.ones(n_features) if std is None else np.asarray(std)
    inits = [_const("mean", mu), _const("std", sd)]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["z"]),
    ]
    sizes = [n_features, *hidden, *reversed(hidden[:-1]), n_features]
    prev = "z"
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        w = rng.normal(scale=1.0 / np.sqrt(a), size=(a, b))
        inits += [_const(f"w{i}", w), _const(f"b{i}", rng.normal(scale=0.01, size=b))]
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out]))
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            out = f"r{i}"
        prev = out
    nodes += [
        helper.make_node("Sub", ["z", prev], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["feature_errors"]),
        helper.make_node("ReduceMean", ["feature_errors"], ["score"], axes=[1], keepdims=0),
    ]
    return _model(nodes, inits, n_features, None, "dense_autoencoder")


def window_model(n_features: int = 4, window: int = 5) -> bytes:
    """features [b, W, f]: error = (last row - window mean)^2 per feature, score = their mean."""
    inits = [
        numpy_helper.from_array(np.array([window - 1], np.int64), "last_start"),
        numpy_helper.from_array(np.array([window], np.int64), "last_end"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["features"], ["wmean"], axes=[1], keepdims=0),
        helper.make_node("Slice", ["features", "last_start", "last_end", "axis1"], ["last3"]),
        helper.make_node("Squeeze", ["last3", "axis1"], ["last"]),
        helper.make_node("Sub", ["last", "wmean"], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["feature_errors"]),
        helper.make_node("ReduceMean", ["feature_errors"], ["score"], axes=[1], keepdims=0),
    ]
    return _model(nodes, inits, n_features, window, "window_model")


def conv_autoencoder(
    n_features: int = 8,
    window: int = 16,
    channels: Sequence[int] = (32, 16),
    kernel_size: int = 5,
    latent: int = 16,
    *,
    seed: int = 0,
) -> bytes:
    """features [b, W, f] -> 1-D convolutions over time around a dense bottleneck (the temporal
    detector's default sizes, random weights) -> score = mean squared error over the window."""
    rng = np.random.default_rng(seed)
    pad = kernel_size // 2
    inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(np.array([-1, channels[-1] * window], np.int64), "flat"),
        numpy_helper.from_array(np.array([-1, channels[-1], window], np.int64), "unflat"),
    ]
    nodes = [helper.make_node("Transpose", ["features"], ["x"], perm=[0, 2, 1])]  # [b, f, W]

    def conv(name: str, source: str, c_in: int, c_out: int, relu: bool) -> str:
        w = rng.normal(scale=1.0 / np.sqrt(c_in * kernel_size), size=(c_out, c_in, kernel_size))
        inits.extend([_const(f"{name}_w", w), _const(f"{name}_b", np.zeros(c_out))])
        nodes.append(helper.make_node("Conv", [source, f"{name}_w", f"{name}_b"], [name],
                                      pads=[pad, pad], kernel_shape=[kernel_size]))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}_r"]))
        return f"{name}_r"

    def gemm(name: str, source: str, a: int, b: int) -> str:
        inits.extend([_const(f"{name}_w", rng.normal(scale=1.0 / np.sqrt(a), size=(a, b))),
                      _const(f"{name}_b", np.zeros(b))])
        nodes.append(helper.make_node("Gemm", [source, f"{name}_w", f"{name}_b"], [name]))
        return name

    h, c_in = "x", n_features
    for i, c in enumerate(channels):
        h, c_in = conv(f"enc{i}", h, c_in, c, relu=True), c
    nodes.append(helper.make_node("Reshape", [h, "flat"], ["flat_h"]))
    z = gemm("to_latent", "flat_h", c_in * window, latent)
    up = gemm("from_latent", z, latent, c_in * window)
    nodes += [helper.make_node("Relu", [up], ["up_r"]),
              helper.make_node("Reshape", ["up_r", "unflat"], ["dec_in"])]
    h, rev = "dec_in", [*reversed(channels), n_features]
    for i, (a, b) in enumerate(itertools.pairwise(rev)):
        h = conv(f"dec{i}", h, a, b, relu=i < len(rev) - 2)
    nodes += [
        helper.make_node("Transpose", [h], ["recon"], perm=[0, 2, 1]),
        helper.make_node("Sub", ["features", "recon"], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["errors"]),
        helper.make_node("ReduceMean", ["errors"], ["feature_errors"], axes=[1], keepdims=0),
        helper.make_node("ReduceMean", ["feature_errors"], ["score"], axes=[1], keepdims=0),
    ]
    return _model(nodes, inits, n_features, window, "conv_autoencoder")
