"""Execution backends: CPU forced, fallback with a logged reason, CUDA/TensorRT on a GPU."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ds_serving.bundle import ENGINE_FILE, load_bundle, write_bundle
from ds_serving.engines import BACKENDS, select_engine
from ds_serving.scoring import Scorer, score_rows
from tests.support.models import dense_autoencoder
from tests.support.serving import FEATURES, MEAN, STD, normal_rows, write_point_bundle


def _cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def test_backends_are_the_documented_four() -> None:
    assert BACKENDS == ("auto", "tensorrt", "cuda", "cpu")
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        select_engine(dense_autoencoder(4), n_features=4, window=None, backend="gpu")


def test_cpu_is_forced_and_scores_like_before(tmp_path: Path) -> None:
    bundle = load_bundle(write_point_bundle(tmp_path))
    scorer = Scorer.from_bundle(bundle, backend="cpu")
    assert scorer.backend == "cpu" and scorer.backend_reason == "cpu requested"
    rows = normal_rows(10)
    fast, _ = scorer.run(rows)
    np.testing.assert_array_equal(fast, scorer.score(rows).scores)


@pytest.mark.parametrize("backend", ["auto", "tensorrt"])
def test_unusable_engine_falls_back_with_the_reason_logged(
    tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A model.plan that cannot load here (no tensorrt, no GPU, or not an engine) must not stop
    the model from serving: ORT takes over and the log says why."""
    model = dense_autoencoder(len(FEATURES), (8, 2), mean=MEAN, std=STD)
    bundle = write_bundle(tmp_path, "ae", model, kind="dense_ae", features=FEATURES,
                          threshold=1.0, threshold_rule={}, extra_files={ENGINE_FILE: b"junk"})
    assert bundle.engine_path is not None
    with caplog.at_level(logging.INFO):
        scorer = Scorer.from_bundle(bundle, backend=backend)
    # on a GPU install the CUDA libraries must load (a broken one would fail here, not hide)
    assert scorer.backend == ("cuda" if _cuda_available() else "cpu"), scorer.backend_reason
    assert "TensorRT unavailable" in scorer.backend_reason
    assert any("TensorRT unavailable" in r.getMessage() for r in caplog.records)
    if backend == "tensorrt":  # asked for TensorRT and did not get it: a warning
        assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_bundle_without_plan_says_so(tmp_path: Path) -> None:
    bundle = load_bundle(write_point_bundle(tmp_path))
    scorer = Scorer.from_bundle(bundle, backend="auto")
    assert "no model.plan in the bundle" in scorer.backend_reason


@pytest.mark.gpu
def test_cuda_backend_matches_cpu(tmp_path: Path) -> None:
    if not _cuda_available():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (no GPU or CPU build)")
    bundle = load_bundle(write_point_bundle(tmp_path))
    rows = normal_rows(5000)
    cuda = Scorer.from_bundle(bundle, backend="cuda")
    assert cuda.backend == "cuda"
    cpu = Scorer.from_bundle(bundle, backend="cpu")
    np.testing.assert_allclose(cuda.score(rows).scores, cpu.score(rows).scores, rtol=1e-4,
                               atol=1e-5)


@pytest.mark.gpu
def test_tensorrt_engine_serves_and_matches_onnxruntime(tmp_path: Path) -> None:
    from ds_assets.training import tensorrt_build

    reason = tensorrt_build.unavailable_reason()
    if reason:
        pytest.skip(f"TensorRT cannot run here: {reason}")
    path = write_point_bundle(tmp_path)
    bundle = load_bundle(path)
    build = tensorrt_build.build_engine(bundle.model_bytes(), n_features=len(FEATURES),
                                        window=None, fp16=False, max_batch=4096)
    bundle = tensorrt_build.attach_engine(path, build.plan, build.info())
    trt = Scorer.from_bundle(bundle, backend="auto")
    assert trt.backend == "tensorrt", trt.backend_reason
    cpu = Scorer.from_bundle(bundle, backend="cpu")
    for n in (1, 3, 4096, 5000):  # padding buckets and splitting at the profile maximum
        rows = normal_rows(n, n)
        got = score_rows(trt, rows, explain=True)
        want = score_rows(cpu, rows, explain=True)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-4, atol=1e-5)
        assert got.feature_errors is not None and want.feature_errors is not None
        np.testing.assert_allclose(got.feature_errors, want.feature_errors, rtol=1e-4,
                                   atol=1e-5)
