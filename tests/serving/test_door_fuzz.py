"""Randomized differential check of a temporal model's concurrent requests: doors (small
requests passing large ones), groups and their fallbacks, cancellations (also while an off-loop
commit runs), graph failures, refused times and a hot reload, against scoring the requests that
committed one by one, in arrival order. Answers, the least-recently-seen order of the stores,
every entity's next answer, and the absence of loop-side state changes while a worker thread
touches state are all compared; nothing may be left behind (turns, doors, passers, commits)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ds_serving import runtime as runtime_module
from ds_serving.bundle import Bundle
from ds_serving.coalescing import GroupPolicy
from ds_serving.decoding import Decoded, RequestError
from ds_serving.runtime import ModelRuntime
from ds_serving.scoring import Scorer
from tests.serving.test_server_state import _one_by_one, _publish_window, _same_answers
from tests.support.serving import FEATURES

F = len(FEATURES)
LARGE = 20  # rows from which a request is large (``OFF_LOOP_ROWS`` in these trials)


def _requests(rng: random.Random, n: int, pool: list[str]) -> list[Decoded]:
    clocks: dict[str, float] = {}
    out = []
    for _ in range(n):
        if rng.random() < 0.2:  # large: several entities, a few rows each
            hosts_set = rng.sample(pool, rng.randint(4, 8))
            hosts = [hosts_set[j % len(hosts_set)] for j in range(rng.randint(LARGE, 36))]
        else:
            few = rng.sample(pool, rng.randint(1, 2))
            hosts = [rng.choice(few) for _ in range(rng.randint(1, 3))]
        times = []
        for h in hosts:
            clocks[h] = clocks.get(h, -1.0) + 1.0
            times.append(clocks[h])
        if rng.random() < 0.05:
            times[-1] -= 3.0  # goes back: refused
        values = np.random.default_rng(rng.randint(0, 10**9))
        rows = values.normal(size=(len(hosts), F)).astype(np.float32)
        rows[values.random(len(hosts)) < 0.3] += 6.0  # flagged: alerts open and close
        out.append(Decoded(rows=rows, entities=np.asarray(hosts), times=np.asarray(times)))
    return out


def _recency(rt: ModelRuntime) -> dict[str, list[Any]]:
    state = rt.state
    assert state.windows is not None
    return {name: [slots.key_of(s) for s in slots.by_recency().tolist()]
            for name, slots in (("windows", state.windows._slots),
                                ("alerts", state.tracker._slots))}


class _Trial:
    """One random scenario on fresh runtimes (see the module docstring)."""

    def __init__(self, seed: int, bundles: dict[bool, Bundle], scorers: dict[bool, Scorer],
                 joints: dict[int, tuple[Decoded, list[Decoded]]]) -> None:
        rng = self.rng = random.Random(seed)
        self.smooth = rng.random() < 0.5
        self.max_entities = rng.randint(12, 30)
        self.pool = [f"h{i}" for i in range(rng.randint(14, 30))]
        self.requests = _requests(rng, rng.randint(8, 24), self.pool)
        self.index = {id(r): i for i, r in enumerate(self.requests)}
        self.bundles, self.scorers, self.joints = bundles, scorers, joints
        self.committed: set[int] = set()
        self.violations: list[str] = []
        self.on_worker = 0  # worker threads inside state work now
        self.lock = threading.Lock()
        self.tasks: list[asyncio.Task[Any]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.cancel_in_commit = rng.choice([0, 0.3, 0.7])
        self.fail = rng.choice([0, 0.05, 0.15, 0.5, 1.0])
        self.cancel = rng.choice([0, 0.15, 0.3])
        self.threaded_runs = rng.random() < 0.5
        self.window = rng.choice([0.0, 0.0, 0.002])

    def runtime(self) -> ModelRuntime:
        rt = ModelRuntime(self.bundles[self.smooth], self.scorers[self.smooth],
                          max_entities=self.max_entities)
        for name in ("_commit", "_prepare", "_prepare_group", "_door_for"):
            self._watch(rt, name)
        touch = rt.state.touch

        def watched_touch(entities: Any) -> None:
            if self.on_worker:
                self.violations.append("touch on the loop while a worker touches state")
            touch(entities)

        rt.state.touch = watched_touch  # type: ignore[method-assign]
        return rt

    def _watch(self, rt: ModelRuntime, name: str) -> None:
        inner: Callable[..., Any] = getattr(rt, name)
        commit = name == "_commit"

        def watched(*args: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                with self.lock:
                    self.on_worker += 1
                try:
                    if commit and self.rng.random() < self.cancel_in_commit:
                        live = [t for t in self.tasks if not t.done()]
                        if live and self.loop is not None:
                            self.loop.call_soon_threadsafe(self.rng.choice(live).cancel)
                            time.sleep(0.003)  # the cancellation lands while this runs
                    result = inner(*args)
                finally:
                    with self.lock:
                        self.on_worker -= 1
            else:
                if commit and self.on_worker:
                    self.violations.append(f"{name} on the loop while a worker touches state")
                result = inner(*args)
            if commit:  # (the probes afterwards commit too: not one of the trial's requests)
                request = args[0]
                members = self.joints[id(request)][1] if id(request) in self.joints else [request]
                self.committed.update(self.index[id(m)] for m in members if id(m) in self.index)
            return result

        setattr(rt, name, watched)

    async def _run(self, scorer: Scorer, inputs: np.ndarray, explain: bool) -> Any:
        rng = self.rng
        delay = rng.choice([0, 0, 0.0005, 0.002, 0.005]) * (3 if len(inputs) >= LARGE else 1)
        if delay:
            await asyncio.sleep(delay)
        if rng.random() < self.fail:
            raise RuntimeError("graph failed")
        if self.threaded_runs:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: scorer.run(inputs, explain=explain))
        return scorer.run(inputs, explain=explain)

    async def _scenario(self, runtimes: list[ModelRuntime]) -> list[Any] | None:
        rng = self.rng
        loop = self.loop = asyncio.get_running_loop()
        reload_at = rng.randint(1, len(self.requests) - 1) if rng.random() < 0.4 else None
        for k, request in enumerate(self.requests):
            if k == reload_at:
                new = self.runtime()
                new.inherit_state(runtimes[-1])
                runtimes.append(new)
            runtimes[-1].grouping = GroupPolicy(window=self.window)
            task = asyncio.ensure_future(runtimes[-1].score_async(request, explain=False,
                                                                  run=self._run))
            self.tasks.append(task)
            if rng.random() < self.cancel:
                loop.call_later(rng.choice([0, 0.0005, 0.002, 0.006, 0.015]), task.cancel)
            gap = rng.choice([0, 0, 0, 0.0003, 0.001, 0.004])
            if gap:
                await asyncio.sleep(gap)
        _, pending = await asyncio.wait(self.tasks, timeout=30)
        if pending:
            return None
        await runtimes[-1].adopt_inherited()
        return [asyncio.CancelledError() if t.cancelled() else t.exception() or t.result()
                for t in self.tasks]

    def problems(self) -> tuple[list[str], int]:
        """What differs from one by one (empty when nothing), and how many requests passed."""
        runtimes = [self.runtime()]
        got = asyncio.run(self._scenario(runtimes))
        if got is None:
            return ["requests still pending after 30 s"], 0
        problems = list(self.violations)
        for i, answer in enumerate(got):
            if not isinstance(answer, BaseException) and i not in self.committed:
                problems.append(f"request {i} answered but not committed")
            if isinstance(answer, RequestError) and i in self.committed:
                problems.append(f"request {i} refused but committed")
            if isinstance(answer, BaseException) and not isinstance(
                    answer, (RequestError, asyncio.CancelledError, RuntimeError)):
                problems.append(f"request {i} raised {answer!r}")
        order = [i for i in range(len(self.requests))
                 if i in self.committed or not isinstance(got[i], BaseException)
                 or isinstance(got[i], RequestError)]
        reference = ModelRuntime(self.bundles[self.smooth], self.scorers[self.smooth],
                                 max_entities=self.max_entities)
        expected = _one_by_one(reference, [self.requests[i] for i in order])
        for i, want in zip(order, expected, strict=True):
            if isinstance(got[i], (asyncio.CancelledError, RuntimeError)):
                continue
            try:
                _same_answers([got[i]], [want])
            except AssertionError as exc:
                problems.append(f"request {i}: {str(exc)[:200]}")
        last = runtimes[-1]
        if _recency(last) != _recency(reference):
            problems.append(f"recency {_recency(last)} != one by one {_recency(reference)}")
        for host in self.pool:  # every entity's next answer
            probe = Decoded(rows=np.zeros((1, F), np.float32), entities=np.asarray([host]),
                            times=np.asarray([1000.0]))
            answers = []
            for rt in (last, reference):
                try:
                    answers.append(rt.score(probe))
                except RequestError as exc:
                    answers.append(str(exc))
            a, b = answers
            if isinstance(a, str) or isinstance(b, str):
                if a != b:
                    problems.append(f"probe {host}: {a} != {b}")
            else:
                try:
                    _same_answers([a], [b])
                except AssertionError:
                    problems.append(f"probe {host} differs")
        for j, rt in enumerate(runtimes):
            left = {"commits": rt._commits, "passed": rt._passed, "passers": rt._passers,
                    "door": rt._door, "pending turns": rt._order.pending,
                    "queued": rt._queue._queued}
            problems += [f"runtime {j} left {k}: {v}" for k, v in left.items() if v]
        return problems, sum(rt.passing_requests for rt in runtimes)


def test_concurrent_temporal_requests_match_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "OFF_LOOP_ROWS", LARGE)
    joints: dict[int, tuple[Decoded, list[Decoded]]] = {}
    concat = runtime_module.concat_decoded

    def recorded(parts: list[Decoded]) -> Decoded:  # which requests a joint commit holds
        joint = concat(parts)
        joints[id(joint)] = (joint, list(parts))
        return joint

    monkeypatch.setattr(runtime_module, "concat_decoded", recorded)
    bundles = {False: _publish_window(tmp_path / "a", 3),
               True: _publish_window(tmp_path / "b", 3, smoothing={"k": 1, "n": 2})}
    scorers = {k: Scorer.from_bundle(b, backend="cpu", intra_op_threads=1)
               for k, b in bundles.items()}
    failures, passed = [], 0
    for seed in range(60):
        joints.clear()
        problems, passing = _Trial(seed, bundles, scorers, joints).problems()
        passed += passing
        if problems:
            failures.append((seed, problems[:3]))
    assert not failures, failures[:3]
    assert passed > 10  # the trials do exercise passing
