"""Running the scorer's event loop: uvloop where installed, else the standard asyncio loop.

Shared by ``ds-scorer serve`` (``ds_serving.cli``), each process of the stateless tier
(``ds_serving.processes``) and the benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("ds_scorer")  # its lines name the program, not this module

T = TypeVar("T")


async def on_worker_if(large: bool, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a worker thread when ``large`` (per-row Python over tens of thousands
    of rows would hold the event loop, delaying every other client), else right here (a
    thread hop costs more than a small call)."""
    if not large:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def run_event_loop(main: Coroutine[Any, Any, None], choice: str = "auto") -> None:
    """Run ``main`` on uvloop or the standard asyncio loop.

    grpc.aio spends most of a small RPC in event-loop bookkeeping (futures, callbacks, task
    steps); uvloop does that in C, which is cheaper per RPC (``make bench``). ``auto`` falls
    back to asyncio where uvloop is not installed (Windows).
    """
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"--event-loop must be auto, uvloop or asyncio, got {choice!r}")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ValueError(
                    "--event-loop uvloop: uvloop is not installed (pip install uvloop, "
                    "or use --event-loop asyncio)"
                ) from None
        else:
            log.info("event loop: uvloop %s", uvloop.__version__)
            uvloop.run(main)
            return
    log.info("event loop: asyncio")
    asyncio.run(main)
