"""The onnxruntime runtime MLServer serves our ``model.onnx`` with in ``bench.mlserver_peer``.

Runs inside the throwaway MLServer environment only (imports mlserver, not the platform).
MLServer 1.7 ships no ONNX runtime, so this is the runtime a user would write: one
onnxruntime session per worker, the request's first input decoded by MLServer's NumPy codec
(raw bytes from a KServe v2 gRPC request), and the model's anomaly score plus the flag
``score > threshold`` returned, as our ``Score`` answers both.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxAnomalyScorer(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        extra = self.settings.parameters.extra or {}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(extra.get("intra_op_threads", 1))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            self.settings.parameters.uri, options, providers=["CPUExecutionProvider"])
        self._threshold = np.float32(extra["threshold"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        (scores,) = self._session.run(["score"], {"features": rows.reshape(-1, rows.shape[-1])})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("score", scores),
                     NumpyCodec.encode_output("flag", scores > self._threshold)],
        )


def _encode(rows_path: str, out_path: str, model: str) -> None:
    """Write the KServe v2 ``ModelInferRequest`` bytes for the rows in an ``.npy`` (raw bytes,
    as a fast client sends them)."""
    from mlserver.grpc import dataplane_pb2 as pb

    rows = np.load(rows_path).astype(np.float32)
    request = pb.ModelInferRequest(model_name=model, inputs=[
        pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32",
                                              shape=list(rows.shape))])
    request.raw_input_contents.append(rows.tobytes())
    with open(out_path, "wb") as f:
        f.write(request.SerializeToString())


def _check(port: str, payload_path: str, n_rows: str) -> None:
    """Send the payload once through a gRPC client: both outputs must come back, one per row."""
    import grpc
    from mlserver.grpc import dataplane_pb2 as pb

    with open(payload_path, "rb") as f:
        payload = f.read()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        answer = pb.ModelInferResponse.FromString(call(payload, timeout=30))
    got = {o.name: list(o.shape) for o in answer.outputs}
    # MLServer's NumPy codec adds a trailing dimension to 1-d outputs: [n, 1]
    if {k: v[0] for k, v in got.items()} != {"score": int(n_rows), "flag": int(n_rows)} or len(
            answer.raw_output_contents) != 2:
        raise SystemExit(f"MLServer answered {got} ({len(answer.raw_output_contents)} raw "
                         f"outputs) for {n_rows} rows")


if __name__ == "__main__":
    import sys

    {"encode": _encode, "check": _check}[sys.argv[1]](*sys.argv[2:])
