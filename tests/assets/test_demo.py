"""`make demo`'s job on tiny settings: the whole graph into a persistent instance, re-runnable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ds_assets.demo.run import main

TINY = ["--days", "3", "--hosts", "3", "--interval", "300", "--epochs", "1",
        "--anomaly-rate", "0.03", "--drift-days", "0"]


def test_demo_runs_end_to_end_and_again_from_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DS_DATA_DIR", str(tmp_path / "data"))
    for name in ("DS_MODELS_DIR", "DS_MLFLOW_TRACKING_URI", "DS_MLFLOW_EXPERIMENT",
                 "DS_MODEL_NAME"):
        monkeypatch.delenv(name, raising=False)

    assert main(TINY) == 0
    first = capsys.readouterr().out
    assert "champion   : telemetry-ae v1" in first
    assert "metrics    : precision=" in first and "robustness : clean F1=" in first
    assert (tmp_path / "data" / "models" / "telemetry-ae" / "1" / "model.onnx").is_file()
    # the runs are in the persistent instance `make dev` opens: 3 ingests, 1 training, 3 scorings
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_run_records()
        assert len(runs) == 7
        assert {r.dagster_run.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}

    # idempotent: a second `make demo` (a new process, as MLflow's store is per process)
    # starts fresh (v1 again, one run history), not v2 on top
    done = subprocess.run([sys.executable, "-m", "ds_assets.demo", *TINY], env=dict(os.environ),
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    second = done.stdout
    assert "starting fresh: removing" in second
    # Dagster's step events stay in the event log (the UI), out of the console
    assert " - DEBUG - " not in done.stderr and " - DEBUG - " not in second
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = instance.get_run_records(limit=1)[0].dagster_run.run_id
        assert any(e.dagster_event is not None and e.dagster_event.event_type_value
                   == "STEP_SUCCESS" for e in instance.all_logs(run_id))
    assert "champion   : telemetry-ae v1" in second
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert len(instance.get_run_records()) == 7


def test_demo_needs_dagster_home(monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(TINY) == 2
    assert "DAGSTER_HOME is not set; run `make demo`" in capsys.readouterr().out


@dg.op
def stopped() -> None:
    raise KeyboardInterrupt


@dg.op
def broken() -> None:
    raise ValueError("the source went away")


@dg.job
def interrupted_job() -> None:
    stopped()


@dg.job
def failing_job() -> None:
    broken()


def test_a_failed_or_interrupted_step_is_told_in_a_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A failing step is named with its own error, without Dagster's stack traces (they stay in
    the instance for the UI); Ctrl-C in a step or between runs ends the demo with 130."""
    from ds_assets.demo import run as demo

    defs = dg.Definitions(jobs=[interrupted_job, failing_job])
    with dg.instance_for_test() as instance:
        with pytest.raises(SystemExit) as failed:
            demo._run(defs, "failing_job", instance)
        assert failed.value.code == 1
        err = capsys.readouterr().err
        assert "job failing_job failed" in err
        assert "step broken: ValueError: the source went away" in err
        assert "Traceback" not in err and "Stack Trace" not in err
        with pytest.raises(KeyboardInterrupt):
            demo._run(defs, "interrupted_job", instance)

    def stop(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_demo", stop)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert demo.main(TINY) == 130
    assert "demo interrupted" in capsys.readouterr().err
