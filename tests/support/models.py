"""Real ONNX scoring graphs built with ``onnx.helper`` for benchmarks and the scorer tests.

They follow the bundle contract (input ``features``, outputs ``score`` and ``feature_errors``,
normalisation inside the graph) without needing torch: a dense autoencoder with the production
detector's default layer sizes (random weights), and a temporal model scoring a window by how far
its last row is from the window's mean.
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
