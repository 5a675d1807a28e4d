"""bench/gpu_check: every section reports figures or why it could not run, on any machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import gpu_check


def test_sections_report_figures_or_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    code = gpu_check.main(["--out", str(out), "--sections",
                           "environment,training,cuda_parity,tensorrt", "--epochs", "1",
                           "--training-rows", "3000"])
    result = json.loads(out.read_text())
    assert code == 0, {k: v.get("error") for k, v in result.items() if isinstance(v, dict)}
    env = result["environment"]
    assert env["cuda_available"] == torch.cuda.is_available()
    for family in ("dense_ae", "temporal_ae"):
        cpu = result["training"][family]["cpu"]
        assert cpu["device"] == "cpu" and cpu["epochs_run"] == 1 and cpu["wall_time_s"] > 0
    first = "cuda" if torch.cuda.is_available() else "cpu"
    assert result["training"]["dense_ae"][first]["onnx_parity"]["passed"]
    if "CUDAExecutionProvider" not in env["ort_providers"]:
        assert result["cuda_parity"]["skipped"] == "CUDA backend not obtained"
        assert "no CUDAExecutionProvider" in result["cuda_parity"]["reason"]
    else:
        assert result["cuda_parity"]["passed"] and result["cuda_parity"]["flags_differ"] == 0
    if env["tensorrt_unavailable_reason"]:
        assert result["tensorrt"]["skipped"] == env["tensorrt_unavailable_reason"]


def test_an_unknown_section_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", str(tmp_path / "x.json"), "--sections", "training,gpus"])
    assert not (tmp_path / "x.json").exists()
