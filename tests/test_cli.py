"""`ds-dataset`'s summary of a run: why a step failed and what steps warned, one line each."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from ds_assets.cli import main as ds_dataset
from ds_assets.job_outcome import step_failures, step_warnings


class _Unusable(Exception):
    pass


@dg.op
def noted(context: dg.OpExecutionContext) -> int:
    context.log.info("not shown")
    context.log.warning("leaving out raw_telemetry 2024-03-01")
    return 1


@dg.op
def broken(value: int) -> None:
    try:
        raise KeyError("inner")
    except KeyError as exc:
        raise _Unusable(f"family x on the one feature 'v' ({value}); use temporal_ae") from exc


@dg.job
def story() -> None:
    broken(noted())


def test_a_failed_step_is_told_by_its_own_error_without_the_stack() -> None:
    with dg.instance_for_test() as instance:
        result = story.execute_in_process(instance=instance, raise_on_error=False)
        assert step_warnings(instance, result.run_id) == [
            "noted: leaving out raw_telemetry 2024-03-01"]
    (said,) = step_failures(result.all_events)
    assert said == ("step broken: tests.test_cli._Unusable: family x on the one feature 'v' "
                    "(1); use temporal_ae")


def test_scaffold_refuses_a_family_that_cannot_learn_one_feature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """dense_ae on one column was written, then failed at training after ingest and checks."""
    times = pd.date_range("2024-03-01", periods=100, freq="1min")
    pd.DataFrame({"time": times.strftime("%Y-%m-%d %H:%M"), "v": 1.0}).to_csv(
        tmp_path / "x.csv", index=False)
    assert ds_dataset(["--defs-dir", str(tmp_path), "scaffold", str(tmp_path / "x.csv"),
                       "--name", "x", "--family", "dense_ae"]) == 2
    assert ("--family dense_ae on the one feature 'v': an autoencoder of single values"
            in capsys.readouterr().err)
    assert not (tmp_path / "x").exists()


@dg.op
def stopped() -> None:
    raise KeyboardInterrupt


@dg.job
def interrupted() -> None:
    stopped()


def test_an_interrupted_step_is_told_as_such() -> None:
    """Ctrl-C inside a step reaches the summary as Dagster's interruption error, which
    materialize tells apart from a failure (exit 130)."""
    from ds_assets.job_outcome import INTERRUPTED

    with dg.instance_for_test() as instance:
        result = interrupted.execute_in_process(instance=instance, raise_on_error=False)
    (said,) = step_failures(result.all_events)
    assert said.startswith("step stopped: ") and any(name in said for name in INTERRUPTED)


def test_the_summary_says_which_model_serves_and_what_became_of_the_trained_one() -> None:
    from ds_assets.cli import _champion_lines

    decision = {"reason": "challenger flags 0.01 of rows vs champion 0.4 (higher)"}
    promoted = {"name": "m", "version": "2", "decision": decision, "candidate": None}
    assert _champion_lines(promoted, "2") == [f"  champion : m v2 ({decision['reason']})"]
    shadow = {**promoted, "version": "1",
              "candidate": {"version": "2", "days": 2, "after": "2026-11-11"}}
    assert _champion_lines(shadow, "2") == [
        "  champion : m v1, still serving",
        f"  trained  : v2, passed the gate ({decision['reason']}); in shadow for the 2 day(s) "
        "after 2026-11-11 before its verdict"]
    refused = {**shadow, "candidate": None}
    assert _champion_lines(refused, "2")[1] == (
        f"  trained  : v2, not promoted ({decision['reason']})")
