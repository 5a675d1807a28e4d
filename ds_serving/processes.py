"""Several scorer processes on one port: the stateless tier (``ds-scorer serve --processes N``).

One grpc.aio process answers small requests with one core at most (its event loop holds the
GIL); N processes bound with ``SO_REUSEPORT`` let the kernel spread client connections over N
cores. Per-entity state would then split between processes on every reconnect, so each process
runs ``stateless``: stateful models are refused, and requests with entity ids get
FAILED_PRECONDITION. A process whose share of the cores is one or less runs large graphs on its
event loop thread (``inline_runs``): the processes keep every core busy, so a thread hop only
costs. Each serves ``/metrics`` on ``metrics_port + i``; the supervisor forwards SIGTERM/SIGINT
to all and stops the others (exit 1) if one dies.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from dataclasses import replace
from types import FrameType
from typing import Any

from ds_serving.event_loop import run_event_loop
from ds_serving.server import ServerConfig, serve, usable_cores

log = logging.getLogger(__name__)


def process_configs(config: ServerConfig, processes: int) -> list[ServerConfig]:
    """The config of each process: shared port, stateless, its own metrics port."""
    if processes < 1:
        raise ValueError(f"--processes must be >= 1, got {processes}")
    if processes > 1 and config.port == 0:
        raise ValueError(
            "--processes > 1 needs a fixed --port: the processes share it (SO_REUSEPORT), and "
            "port 0 would give each its own random port"
        )
    if processes == 1:
        return [config]

    def metrics_port(i: int) -> int | None:
        if config.metrics_port is None or config.metrics_port == 0:
            return config.metrics_port
        return config.metrics_port + i

    runs: dict[str, Any] = {}
    if config.workers == 0:
        share = usable_cores() // processes
        runs = {"inline_runs": True} if share <= 1 else {"workers": share}
    return [replace(config, reuse_port=True, stateless=True, metrics_port=metrics_port(i), **runs)
            for i in range(processes)]


def _child(config: ServerConfig, event_loop: str, log_level: int, index: int,
           switch_interval: float, parent: int) -> None:
    """One scorer process: it dies with the supervisor (a killed supervisor left its children
    serving the port, beside the next one's), takes the supervisor's GIL switch interval (a
    spawned interpreter starts at Python's 5 ms) and reports a start-up error in one line."""
    _die_with_parent(parent)
    sys.setswitchinterval(switch_interval)
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s %(name)s[{index}]: %(message)s",
    )
    try:
        run_event_loop(serve(config), event_loop)
    except (OSError, ValueError) as exc:  # a port in use, a file that cannot be read
        print(f"ds-scorer-{index}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent dies (Linux ``PR_SET_PDEATHSIG``; elsewhere the
    supervisor's own shutdown stops its children)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the call: nobody would stop this one
        sys.exit(1)


def serve_processes(config: ServerConfig, processes: int, event_loop: str = "auto") -> int:
    """Run the scorer as ``processes`` processes until SIGTERM/SIGINT; the exit status is 0
    when every process drained and exited cleanly."""
    configs = process_configs(config, processes)
    ctx = multiprocessing.get_context("spawn")  # no fork after grpc/onnxruntime initialised
    level = logging.getLogger().getEffectiveLevel()
    children = [
        ctx.Process(target=_child, name=f"ds-scorer-{i}",
                    args=(cfg, event_loop, level, i, sys.getswitchinterval(), os.getpid()))
        for i, cfg in enumerate(configs)
    ]
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping %d scorer processes", signum, len(children))
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            child.start()
        log.info("started %d scorer processes on port %d (pids %s), stateless",
                 len(children), config.port, [c.pid for c in children])
        failed = False
        while not stopping.wait(0.5):
            dead = [c for c in children if not c.is_alive()]
            if dead:
                log.error("scorer process %s exited with %s; stopping the others",
                          dead[0].name, dead[0].exitcode)
                failed = True
                break
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.join(config.grace + 10)
            if child.is_alive():
                log.error("%s did not stop within the grace period; killing it", child.name)
                child.kill()
                child.join()
                failed = True
        failed = failed or any(c.exitcode != 0 for c in children)
        return 1 if failed else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
