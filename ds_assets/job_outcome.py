"""A job run in process, and what it came to in a few lines: why each failed step failed, what
the steps warned about, what each failed blocking check found, and whether Ctrl-C stopped it.

``ds-dataset materialize`` and ``make demo`` print these instead of Dagster's event log (stack
traces included), which stays in the instance for the UI.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

# how Dagster fails a step whose blocking asset checks failed (and nothing else)
CHECKS_FAILED = "DagsterAssetCheckFailedError"
# Ctrl-C during a step: Dagster's error for a signal, or the interrupt itself
INTERRUPTED = ("DagsterExecutionInterruptedError", "KeyboardInterrupt")


def run_in_process(job: Any, instance: Any, console_level: str,
                   run_config: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
    """Execute ``job`` (a job definition) in process, failures returned rather than raised,
    with Dagster's console logger at ``console_level``; the steps' warnings go to stderr, one
    line each. The result, for the caller to judge."""
    config = {**(run_config or {}),
              "loggers": {"console": {"config": {"log_level": console_level}}}}
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=config,
                                    **kwargs)
    for note in step_warnings(instance, result.run_id):
        print(f"  warning: {note}", file=sys.stderr)
    return result


def interrupted(failures: Sequence[str]) -> bool:
    """Whether the failures (:func:`step_failures`) are an interrupt's."""
    return any(name in line for line in failures for name in INTERRUPTED)


def step_failures(events: Sequence[Any]) -> list[str]:
    """Why each failed step failed, as its own code said it: the first error under Dagster's
    wrappers, without the stack (``--log-level ERROR`` prints Dagster's with stacks)."""
    out = []
    for event in events:
        if not event.is_step_failure:
            continue
        error = event.step_failure_data.error
        while error.cause is not None and error.cls_name.startswith("Dagster"):
            error = error.cause
        out.append(f"step {event.step_key}: {error.message.strip()}"[:2000])
    if not out:  # the run failed outside any step (its config, say)
        out = [event.message for event in events if event.is_failure]
    return out


def step_warnings(instance: Any, run_id: str) -> list[str]:
    """What the steps logged as warnings (``context.log.warning``), one line each; errors are
    told by the failure summary."""
    return [f"{entry.step_key or 'run'}: {entry.user_message}"
            for entry in instance.all_logs(run_id)
            if not entry.is_dagster_event and logging.WARNING <= entry.level < logging.ERROR]


def failed_checks(events: Sequence[Any]) -> list[str]:
    """What each failed blocking check found (its ``failures`` metadata), for the summary: the
    run's own failure says only how many checks failed."""
    out = []
    for event in events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.event_specific_data
        if evaluation.passed:
            continue
        found = evaluation.metadata.get("failures")
        text = str(getattr(found, "value", found or "")).replace("\n", "; ")
        out.append(f"check {evaluation.check_name} failed: {text}"[:1000])
    return out
