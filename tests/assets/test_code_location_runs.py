"""Runs as the UI, the daemon and run pods execute them: every step in a process of its own,
forked from a server that imported the code location once per run (``STEP_EXECUTOR``)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import TINY_SOURCE


def ingest_job() -> dg.JobDefinition:
    """The code location's ingest job, its settings read from the environment (reconstructed in
    every step process by this name)."""
    from ds_assets.definitions import build_code_location

    return build_code_location().resolve_job_def("ingest_telemetry")


def test_a_code_location_run_forks_its_steps_from_one_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ds_assets.definitions import INGEST_EXECUTOR

    data = tmp_path / "data"
    monkeypatch.setenv("DS_DATA_DIR", str(data))
    job = ingest_job()
    assert job.executor_def is INGEST_EXECUTOR
    day = "2026-11-01"
    with dg.instance_for_test() as instance, dg.execute_job(
        dg.reconstructable(ingest_job), instance, tags={"dagster/partition": day},
        run_config={"ops": {"raw_telemetry": {"config": TINY_SOURCE}}},
    ) as result:
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        starts = [e for e in result.all_events if e.event_type_value == "STEP_START"]
        assert {e.step_key for e in starts} == {"raw_telemetry", "raw_telemetry_expectations"}
        assert all(e.pid != os.getpid() for e in starts)  # each step in its own process
        checks = result.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks)
    # the step processes came from a forkserver that had imported the code location (it skips
    # a preload module it cannot import, and each step would import it again)
    from multiprocessing import forkserver

    from ds_assets.definitions import INGEST_LIBRARIES

    assert {"ds_assets.definitions", *INGEST_LIBRARIES} <= set(
        forkserver._forkserver._preload_modules)
    assert (data / "assets" / "raw_telemetry" / f"{day}.parquet").is_file()


def test_the_executor_keeps_its_run_config() -> None:
    """Forkserver is a default, not a lock: a run's ``max_concurrent`` or another start method
    still applies (a fixed configuration accepted and ignored them)."""
    from dagster._core.system_config.objects import ResolvedRunConfig

    job = ingest_job()
    ops = {"ops": {"raw_telemetry": {"config": TINY_SOURCE}}}

    def executor(config: dict[str, object]) -> dict[str, object]:
        resolved = ResolvedRunConfig.build(job, {**ops, **config})
        return dict(resolved.execution.execution_engine_config)

    from ds_assets.definitions import INGEST_LIBRARIES

    default = executor({})
    assert default["start_method"] == {
        "forkserver": {"preload_modules": ["ds_assets.definitions", *INGEST_LIBRARIES]}}
    limited = executor({"execution": {"config": {"max_concurrent": 1}}})
    assert limited["max_concurrent"] == 1 and limited["start_method"] == default["start_method"]
    assert executor({"execution": {"config": {"start_method": {"spawn": {}}}}})[
        "start_method"] == {"spawn": {}}


def test_other_jobs_preload_every_library_their_steps_use() -> None:
    """Ingest and scoring runs leave out what only training, export and evaluation use."""
    from ds_assets.definitions import SCORING_EXECUTOR, STEP_EXECUTOR, build_code_location

    location = build_code_location()
    for name in ("train_detector", "judge_candidate", "rollback_champion"):
        assert location.resolve_job_def(name).executor_def is STEP_EXECUTOR, name
    for name in ("daily_pipeline", "rescore_telemetry", "score_telemetry"):
        assert location.resolve_job_def(name).executor_def is SCORING_EXECUTOR, name


def test_where_there_is_no_forkserver_steps_are_spawned(monkeypatch: pytest.MonkeyPatch) -> None:
    from ds_assets import definitions

    monkeypatch.setattr(definitions.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert "start_method" not in definitions._forkserver_by_default({"max_concurrent": 2})


# what steps compute with; the code location must not import them (STEP_LIBRARIES)
HEAVY = ("torch", "mlflow", "great_expectations", "scipy", "sklearn", "matplotlib", "onnxruntime")


def test_loading_the_code_location_imports_no_compute_library() -> None:
    """Every run worker, code server and CLI command imports the code location; torch, MLflow,
    Great Expectations, SciPy, scikit-learn and matplotlib took 9 of its 13 s on 2 cores."""
    import subprocess
    import sys

    probe = ("import sys, ds_assets.definitions as d; d.defs.get_repository_def(); "
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert out == "[]", f"the code location imported {out}; import them where a step uses them"


def test_every_preloaded_step_library_imports() -> None:
    """A forkserver skips a preload module it cannot import, silently: a misspelt name would
    put the import back into every step."""
    import importlib

    from ds_assets.definitions import INGEST_LIBRARIES, SCORING_LIBRARIES, STEP_LIBRARIES

    for name in {*STEP_LIBRARIES, *INGEST_LIBRARIES, *SCORING_LIBRARIES}:
        importlib.import_module(name)
