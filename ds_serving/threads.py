"""How many compute threads a process uses: torch training and onnxruntime dataset scoring.

Measured on 2 cores beside one CPU-bound process (``bench.contention``): torch with its thread
count set to 2 trained 3.4x slower than idle, with one thread 1.06x, and one thread is as fast
idle for these small models; onnxruntime's default (one thread per core, spinning) scored 2.8x
slower than idle, without spinning 1.35x at the same idle speed. So the defaults are one torch
thread per training process, and for scoring the CPUs in this process's affinity mask (a
container's cpuset, not the host's cores) divided by ``DS_PROCESSES`` (processes that compute
at once, default 1), never spinning. ``DS_THREADS`` (a number, or ``auto``) sets both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

ENV = "DS_THREADS"
PROCESSES_ENV = "DS_PROCESSES"


class ThreadPolicyError(ValueError):
    """A thread setting that cannot be used; the message names the variable."""


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadPolicy:
    threads: int
    source: str  # why this count

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ThreadPolicyError(f"{name}={value!r}: use a whole number >= 1"
                                + (" or 'auto'" if name == ENV else ""))
    return number


TRAINING = "training"
SCORING = "scoring"


def thread_policy(kind: str = SCORING, environ: Mapping[str, str] | None = None
                  ) -> ThreadPolicy:
    """Threads for ``kind`` (training or scoring): ``DS_THREADS`` (a number, or ``auto``);
    by default 1 for training and ``auto`` for scoring (module docstring)."""
    if kind not in (TRAINING, SCORING):
        raise ValueError(f"kind={kind!r}: use {TRAINING!r} or {SCORING!r}")
    env = os.environ if environ is None else environ
    value = env.get(ENV, "").strip()
    if not value and kind == TRAINING:
        return ThreadPolicy(1, "default for training: 1 torch thread (a busy machine does not "
                               "stall it; as fast idle for these models)")
    if not value or value == "auto":
        processes = _positive(PROCESSES_ENV, env.get(PROCESSES_ENV, "1"))
        cpus = available_cpus()
        return ThreadPolicy(max(1, cpus // processes),
                            f"{ENV}={value or 'auto (default for scoring)'}: {cpus} CPU(s) in "
                            f"the affinity mask / {processes} process(es)")
    return ThreadPolicy(_positive(ENV, value), f"{ENV}={value}")
