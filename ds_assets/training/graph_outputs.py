"""Outputs added to a bundle's scoring graph when it is loaded for a particular use.

Kept apart from ``export`` (which needs torch) so dataset scoring loads only onnx.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from ds_serving.bundle import OUTPUT_NAMES
from ds_serving.engines import TOP_OUTPUT


def with_top_feature(model: bytes) -> bytes:
    """The scoring graph plus an output ``top_feature`` (int64 [b]: ArgMax of the feature
    errors, first index on ties as ``np.argmax``; unlike it, a NaN error, which only an
    overflow inside the model gives, is not picked), for dataset scoring, which keeps only each
    row's top feature: the errors then stay inside onnxruntime. Added when the graph is loaded,
    not stored in bundles, so bundles and TensorRT engines are unchanged."""
    graph = onnx.load_from_string(model)
    names = [o.name for o in graph.graph.output]
    if TOP_OUTPUT in names:
        return model
    if OUTPUT_NAMES[1] not in names:
        raise ValueError(f"the scoring graph has no {OUTPUT_NAMES[1]!r} output (has {names})")
    graph.graph.node.append(helper.make_node(
        "ArgMax", [OUTPUT_NAMES[1]], [TOP_OUTPUT], axis=1, keepdims=0, select_last_index=0,
        name="top_feature_argmax"))
    graph.graph.output.append(helper.make_tensor_value_info(TOP_OUTPUT, TensorProto.INT64,
                                                            ["batch"]))
    return bytes(graph.SerializeToString())
