"""TensorRT compilation: the CPU skip path everywhere, the real build where a GPU exists."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from ds_assets.settings import Settings
from ds_assets.training.detectors import FAMILIES, DetectorParams, TrainedDetector, train_detector
from ds_assets.training.export import export_onnx, model_inputs
from ds_assets.training.tensorrt_build import (
    FP16_RTOL,
    FP32_RTOL,
    TensorRTUnavailable,
    attach_engine,
    build_engine,
    compile_and_check,
    graph_reason,
    unavailable_reason,
)
from ds_serving.bundle import ENGINE_FILE, MANIFEST_FILE, BundleError, load_bundle, write_bundle
from tests.support.training import FEATURES, correlated_rows, ingested

REASON = unavailable_reason()


def _bundle(tmp_path: Path, family: str = "dense_ae") -> tuple[TrainedDetector, Path]:
    params = (DetectorParams(family=family, scales=(2, 4), bank_size=64)
              if family == "window_knn" else
              DetectorParams(family=family, hidden=(8, 2), window=4, channels=(4,),
                             kernel_size=3, latent=2, epochs=1))
    trained = train_detector(params, correlated_rows(200), correlated_rows(60, 1), FEATURES)
    bundle = write_bundle(tmp_path / "models", "trt", export_onnx(trained), kind=trained.kind,
                          features=FEATURES, threshold=1.0, threshold_rule={"rule": "quantile"},
                          window=trained.window)
    return trained, bundle.path


@pytest.mark.skipif(REASON is None, reason="a usable GPU + tensorrt is present")
def test_without_gpu_the_reason_is_explained_and_nothing_is_built() -> None:
    assert REASON is not None
    assert "CUDA GPU" in REASON or "tensorrt" in REASON
    with pytest.raises(TensorRTUnavailable, match=REASON.split(" (")[0]):
        build_engine(b"not used", n_features=4, window=None)


def test_attach_engine_lists_the_plan_and_keeps_the_bundle_verifiable(tmp_path: Path) -> None:
    """The manifest mechanics of adding model.plan (the bytes here are not a real engine)."""
    _, path = _bundle(tmp_path)
    before = load_bundle(path).manifest
    bundle = attach_engine(path, b"plan-bytes", {"precision": "fp16", "build_seconds": 1.5})
    assert bundle.engine_path == path / ENGINE_FILE
    assert bundle.manifest.files[ENGINE_FILE] and bundle.manifest.extra["tensorrt"]["precision"]
    assert bundle.manifest.files["model.onnx"] == before.files["model.onnx"]
    assert bundle.manifest.version == before.version and bundle.manifest.threshold == 1.0
    (path / ENGINE_FILE).write_bytes(b"tampered")
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(path)


def test_an_overflowed_fp16_parity_is_written_as_null(tmp_path: Path) -> None:
    """A rejected FP16 engine's parity is inf when its outputs overflowed; the FP32 engine built
    after it is attached with that record (it was refused as JSON, leaving no engine)."""
    _, path = _bundle(tmp_path)
    info = {"precision": "fp32", "fp16_rejected": {"max_rel_diff": math.inf,
                                                   "max_element_rel_diff": math.inf}}
    bundle = attach_engine(path, b"plan-bytes", info)
    assert bundle.manifest.extra["tensorrt"]["fp16_rejected"] == {
        "max_rel_diff": None, "max_element_rel_diff": None}
    assert "Infinity" not in (path / "config.json").read_text()


def test_attach_engine_adds_a_plan_only_once(tmp_path: Path) -> None:
    _, path = _bundle(tmp_path)
    attach_engine(path, b"plan-one", {"precision": "fp32"})
    with pytest.raises(BundleError, match=r"already has model\.plan"):
        attach_engine(path, b"plan-two", {"precision": "fp16"})
    engine = load_bundle(path).engine_path  # still verifies
    assert engine is not None and engine.read_bytes() == b"plan-one"


def test_attach_engine_replaces_a_plan_a_crash_left_unlisted(tmp_path: Path) -> None:
    # a crash between writing model.plan and the manifest leaves a plan nobody lists or trusts
    _, path = _bundle(tmp_path)
    (path / ENGINE_FILE).write_bytes(b"half-done")
    assert load_bundle(path).engine_path is None  # readers ignore it
    bundle = attach_engine(path, b"plan-bytes", {"precision": "fp32"})
    assert bundle.engine_path is not None and bundle.engine_path.read_bytes() == b"plan-bytes"


def test_attach_engine_refuses_a_broken_bundle(tmp_path: Path) -> None:
    _, path = _bundle(tmp_path)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["files"]["model.onnx"] = "0" * 64
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="checksum mismatch"):
        attach_engine(path, b"plan", {})
    assert not (path / ENGINE_FILE).exists()


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"TensorRT unavailable: {REASON}")
@pytest.mark.parametrize("family", FAMILIES)
def test_engine_matches_onnxruntime(tmp_path: Path, family: str) -> None:
    trained, path = _bundle(tmp_path, family)
    if graph_reason(load_bundle(path).model_bytes()) is not None:  # window_knn: float64
        with pytest.raises(TensorRTUnavailable, match="float64"):
            compile_and_check(load_bundle(path).model_bytes(), model_inputs(
                trained, correlated_rows(300, 4)), n_features=len(FEATURES),
                window=trained.window)
        return
    rows = correlated_rows(300, 4)
    rows[:5] *= 3.0
    inputs = model_inputs(trained, rows)
    compiled = compile_and_check(load_bundle(path).model_bytes(), inputs,
                                 n_features=len(FEATURES), window=trained.window,
                                 opt_batch=256, max_batch=1024, latency_batches=(1, 256))
    assert compiled.parity.passed, compiled.parity
    assert compiled.parity.tolerance == (FP16_RTOL if compiled.build.precision == "fp16"
                                         else FP32_RTOL)
    assert compiled.build.build_seconds > 0 and len(compiled.latency) == 2
    bundle = attach_engine(path, compiled.build.plan, compiled.info())
    info = bundle.manifest.extra["tensorrt"]
    assert info["max_batch"] == 1024 and info["parity"]["passed"]
    assert np.isfinite(info["latency"][0]["p50_ms"])


@pytest.mark.skipif(REASON is None, reason="a usable GPU + tensorrt is present")
def test_asset_produces_nothing_and_says_why_and_the_job_completes(settings: Settings) -> None:
    from tests.conftest import DAYS

    defs, instance = ingested(settings, DAYS[:2])
    run = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config={"ops": {
            "training_set": {"config": {"n_partitions": 2, "end_partition": DAYS[1]}},
            "detector": {"config": {"family": "pca"}},
        }},
    )
    assert run.success
    assert run.asset_materializations_for_node("tensorrt_engine") == []
    # nothing waits for the engine: the rest of the job (promotion included) ran on ONNX
    assert run.asset_materializations_for_node("champion")
    messages = [e.user_message for e in instance.all_logs(run.run_id)]
    assert any("tensorrt_engine: no engine built for bundle v1" in msg and REASON in msg
               for msg in messages), messages
    bundle = load_bundle(settings.models_dir / settings.model_name / "1")
    assert bundle.engine_path is None and ENGINE_FILE not in bundle.manifest.files


def test_gpu_work_runs_one_step_at_a_time(tmp_path: Path) -> None:
    """Training and TensorRT compilation share pool `gpu`; the local and production instance
    configurations limit every pool to one step."""
    import shutil

    import dagster as dg

    from ds_assets.definitions import build_definitions

    defs = build_definitions()
    for asset in ("detector", "tensorrt_engine"):
        assert defs.resolve_assets_def(asset).op.pool == "gpu", asset
    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    production = yaml.safe_load((root / "docker" / "dagster.yaml").read_text())
    assert production["concurrency"]["pools"]["default_limit"] == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_only_the_float64_graph_is_refused_before_building(tmp_path: Path, family: str) -> None:
    """TensorRT has no float64: the nearest-window graph is named as the reason (the asset then
    builds nothing and says why), every other family's graph passes the check."""
    _, path = _bundle(tmp_path, family)
    reason = graph_reason(load_bundle(path).model_bytes())
    assert (reason is not None) == (family == "window_knn")
    if reason:
        assert "float64" in reason
