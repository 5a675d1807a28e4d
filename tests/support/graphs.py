"""Scoring graphs built without training, for tests that need a real ONNX model fast."""

from __future__ import annotations

from onnx import TensorProto, helper


def sum_graph(n_features: int) -> bytes:
    """score = sum of the features, feature_errors = the features (opset 17)."""
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    errors = helper.make_tensor_value_info("feature_errors", TensorProto.FLOAT,
                                           ["batch", n_features])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["features", "axes"], ["score"], keepdims=0),
         helper.make_node("Identity", ["features"], ["feature_errors"])],
        "sum", [x], [score, errors], initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())
