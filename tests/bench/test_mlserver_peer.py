"""The MLServer comparison's bookkeeping: status counters read right, ratios conservative."""

from __future__ import annotations

import io
from typing import Any

import pytest

from bench import mlserver_peer, scorer


def _run(a: float, b: float) -> dict[str, Any]:
    return {"a": {"rows_per_s": a}, "b": {"requests_per_s": b}}


def test_ratios_use_our_slower_run_and_the_peers_best() -> None:
    runs = {"ours_before": _run(6e6, 5000), "mlserver_in_process": _run(1.5e6, 1800),
            "mlserver_worker_pool": _run(2e6, 900), "ours_after": _run(5e6, 5400)}
    s = mlserver_peer.summarize(runs)
    assert s["a"]["ours"] == 5e6 and s["a"]["mlserver_best"] == "mlserver_worker_pool"
    assert s["a"]["ratio_to_best"] == 2.5 and not s["a"]["met"]  # target 3x
    assert s["b"]["ours"] == 5000 and s["b"]["mlserver_best"] == "mlserver_in_process"
    assert s["b"]["ratio_to_best"] == 2.78 and s["b"]["met"]  # target 2x
    assert s["b"]["ratios"]["mlserver_worker_pool"] == 5.56


def test_handled_counts_model_infer_by_code(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "\n".join([
        "# TYPE grpc_server_handled_total counter",
        'grpc_server_handled_total{grpc_code="OK",grpc_method="ModelInfer",'
        'grpc_service="inference.GRPCInferenceService",grpc_type="UNARY"} 120.0',
        'grpc_server_handled_total{grpc_code="INVALID_ARGUMENT",grpc_method="ModelInfer",'
        'grpc_service="inference.GRPCInferenceService",grpc_type="UNARY"} 2.0',
        'grpc_server_handled_total{grpc_code="OK",grpc_method="ModelReady",'
        'grpc_service="inference.GRPCInferenceService",grpc_type="UNARY"} 7.0',
    ])
    monkeypatch.setattr(scorer.urllib.request, "urlopen",
                        lambda *a, **k: io.BytesIO(text.encode()))
    counts = scorer._status_counts(1, "ModelInfer", mlserver_peer.MLSERVER_HANDLED)
    assert counts == {"OK": 120.0, "INVALID_ARGUMENT": 2.0}
