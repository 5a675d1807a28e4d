"""Live scoring of one loaded model: request checks, per-entity state, smoothing and alerts.

Kept free of gRPC so the same path is unit-testable and so dataset scoring
(``ds_serving.scoring.score_rows`` + ``smooth_flags`` + ``AlertTracker``) and live scoring run the
same policy code on the same artifact. The server holds one ``ModelRuntime`` at a time and swaps
it atomically on hot reload; the new one inherits the per-entity state when it is compatible.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ds_serving.alerting import (
    AlertEvent,
    AlertPolicy,
    AlertTracker,
    CheckedTimes,
    TimeBaseError,
    TimeOrderError,
)
from ds_serving.bundle import Bundle, load_bundle
from ds_serving.coalescing import GroupPolicy
from ds_serving.scoring import Scorer
from ds_serving.smoothing import Smoothing, StreamingSmoother
from ds_serving.windows import EntityGroups, EntityWindows, StagedWindows, entity_groups

log = logging.getLogger(__name__)

# runs the graph of a Scorer on model inputs, e.g. on a worker thread: (scorer, inputs, explain)
RunFn = Callable[[Scorer, np.ndarray, bool], Awaitable[tuple[np.ndarray, np.ndarray | None]]]
INVALID_ARGUMENT = "INVALID_ARGUMENT"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
_F32 = np.dtype("<f4")
# live temporal scoring runs the graph on at most this many window rows at a time, so a request's
# memory stays near its own size instead of W times it (same bound as score_rows' chunk_rows)
WINDOW_CHUNK_ROWS = 65_536


class RequestError(ValueError):
    """A request the model cannot score; ``code`` is the gRPC status name to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _one_per_row(field: str, noun: str, count: int, n_rows: int) -> None:
    """An optional per-row request field holds one value per row or none."""
    if count != n_rows:
        raise RequestError(
            INVALID_ARGUMENT,
            f"{field}: got {count} {noun} for {n_rows} rows; send one per row or none",
        )


@dataclass(frozen=True)
class Decoded:
    rows: np.ndarray  # float32 [n, f], a read-only view of the request bytes
    entities: np.ndarray | None  # str [n] when the request sent entity ids
    times: np.ndarray | None  # float64 [n] when the request sent timestamps

    @cached_property
    def groups(self) -> EntityGroups | None:
        """Rows per entity, grouped once for the time checks, windows, smoothing and alerts."""
        return None if self.entities is None else entity_groups(self.entities)


def concat_decoded(parts: Sequence[Decoded]) -> Decoded:
    """Consecutive requests as one, rows in order. All parts must agree on whether they carry
    entity ids and timestamps (``can_concat``)."""
    if len(parts) == 1:
        return parts[0]
    entities = [p.entities for p in parts if p.entities is not None]
    times = [p.times for p in parts if p.times is not None]
    return Decoded(
        rows=np.concatenate([p.rows for p in parts]),
        entities=np.concatenate(entities) if entities else None,
        times=np.concatenate(times) if times else None,
    )


def can_concat(a: Decoded, b: Decoded) -> bool:
    return (a.entities is None) == (b.entities is None) and (a.times is None) == (b.times is None)


@dataclass(frozen=True)
class LiveResult:
    scores: np.ndarray  # float32 [n]; NaN where a temporal model has no full window yet
    flags: np.ndarray  # bool [n], after the model's k-of-n smoothing
    feature_errors: np.ndarray | None  # float32 [n, f] with explain
    alerts: list[AlertEvent]
    n_scored: int
    positions: np.ndarray | None = None  # temporal: the rows that had a full window

    def split(self, sizes: Sequence[int]) -> list[LiveResult]:
        """The results of the requests ``concat_decoded`` joined, ``sizes`` rows each: alert
        positions count from each request's first row again."""
        if len(sizes) == 1:
            return [self]
        out: list[LiveResult] = []
        start = 0
        for size in sizes:
            end = start + size
            positions = None
            if self.positions is not None:
                inside = (self.positions >= start) & (self.positions < end)
                positions = self.positions[inside] - start
            out.append(LiveResult(
                scores=self.scores[start:end],
                flags=self.flags[start:end],
                feature_errors=(
                    None if self.feature_errors is None else self.feature_errors[start:end]
                ),
                alerts=[replace(a, position=a.position - start) for a in self.alerts
                        if start <= a.position < end],
                n_scored=size if positions is None else len(positions),
                positions=positions,
            ))
            start = end
        return out


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Turn:
    """One stateful request's place in arrival order (see ``CommitOrder``); as an async
    context manager it waits for the turn, then holds the state lock."""

    __slots__ = ("_before", "_lock", "_mine", "seq")

    def __init__(
        self, before: asyncio.Future[None] | None, mine: asyncio.Future[None],
        lock: asyncio.Lock, seq: int = 0,
    ) -> None:
        self._before = before
        self._mine = mine
        self._lock = lock
        self.seq = seq  # place in arrival order: consecutive turns have consecutive numbers

    async def __aenter__(self) -> None:
        try:
            if self._before is not None and not self._before.done():
                await asyncio.shield(self._before)  # our cancellation must not cancel theirs
            await self._lock.acquire()
        except BaseException:
            self.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self.release()

    def release(self) -> None:
        """Let the next request go: now, or when the ones before this one are through (a
        request cancelled while waiting must not let later ones overtake earlier ones)."""
        mine, before = self._mine, self._before
        if mine.done():
            return
        if before is None or before.done():
            _settle(mine)
        else:
            before.add_done_callback(lambda _: _settle(mine))


@dataclass(eq=False)
class _Queued:
    """A temporal model's stateful request waiting for its turn. The request whose turn comes
    first scores the ones queued right behind it along with its own (one graph run for the
    group) and leaves each its result."""

    request: Decoded
    explain: bool
    task: asyncio.Task[Any] | None = None  # the request's task, to see a pending cancellation
    result: LiveResult | None = None
    gone: bool = False  # cancelled or failed: nobody may commit its rows
    # a group it was in could not be scored as one: it has waited its share already, so when
    # its turn comes it takes whoever is queued behind it without waiting for more
    hurry: bool = False

    @property
    def leaving(self) -> bool:
        """Cancelled, or about to be: a cancellation requested while the group's graph ran
        reaches the task only when it next runs, after the commit."""
        return self.gone or (self.task is not None and self.task.cancelling() > 0)


class CommitOrder:
    """Hands out turns in arrival order, so stateful requests whose graph runs overlap (shared,
    coalescing runs) still update each entity's smoothing and alert state in the order the
    requests arrived. Must be used from one event loop."""

    def __init__(self) -> None:
        self._last: asyncio.Future[None] | None = None
        self._taken = 0

    def take(self, lock: asyncio.Lock) -> _Turn:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        before, self._last = self._last, mine
        self._taken += 1
        return _Turn(before, mine, lock, self._taken)


class ModelRuntime:
    """A verified, warmed-up model plus the live state that belongs to it."""

    def __init__(
        self,
        bundle: Bundle,
        scorer: Scorer,
        *,
        max_rows: int = 65_536,
        max_entities: int = 100_000,
    ) -> None:
        m = bundle.manifest
        self.bundle = bundle
        self.manifest = m
        self.scorer = scorer
        self.name = m.name
        self.version = m.version
        self.features = m.features
        self.n_features = m.n_features
        self.window = m.window
        self.threshold = float(m.threshold)
        self.max_rows = int(max_rows)
        self.max_entities = int(max_entities)
        self.alert_policy = AlertPolicy.from_dict(m.alerting)
        self.smoothing = Smoothing.from_dict(m.smoothing)
        self.windows = (
            EntityWindows(m.window, m.n_features, max_entities) if m.window is not None else None
        )
        self.smoother = StreamingSmoother(self.smoothing, max_entities)
        self.tracker = AlertTracker(self.alert_policy, max_entities)
        self._lock = asyncio.Lock()
        self._order = CommitOrder()
        self._inherit_from: ModelRuntime | None = None  # state still to take over, see _adopt
        self._queued: dict[int, _Queued] = {}  # temporal requests by turn, see _score_temporal
        self._arrival: asyncio.Future[None] | None = None  # set when a request queues
        # whether a temporal request holding its turn waits for the next ones to queue (the
        # server sets its coalescing window; 0 = never wait, group only what queued anyway)
        self.grouping = GroupPolicy(window=0.0)
        self.grouped_requests = 0  # temporal requests scored in another one's group (stats)
        self.loaded_at = time.time()
        self.load_seconds = 0.0

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        backend: str = "auto",
        intra_op_threads: int = 0,
        allow_spinning: bool = False,
        max_rows: int = 65_536,
        max_entities: int = 100_000,
    ) -> ModelRuntime:
        """Load + verify (checksums, I/O shapes) + warm up; raises BundleError when broken."""
        start = time.perf_counter()
        bundle = load_bundle(path)
        scorer = Scorer.from_bundle(
            bundle, backend=backend, intra_op_threads=intra_op_threads,
            allow_spinning=allow_spinning,
        )
        runtime = cls(bundle, scorer, max_rows=max_rows, max_entities=max_entities)
        runtime.warm_up()
        runtime.load_seconds = time.perf_counter() - start
        return runtime

    @property
    def backend(self) -> str:
        return self.scorer.backend

    @property
    def backend_reason(self) -> str:
        return self.scorer.backend_reason

    @property
    def loaded_at_iso(self) -> str:
        return _dt.datetime.fromtimestamp(self.loaded_at, _dt.UTC).isoformat(timespec="seconds")

    def warm_up(self) -> None:
        """Run the graph on typical batch sizes so the first real request pays no set-up cost;
        also proves the model executes and returns finite scores before it may serve."""
        tail = (self.n_features,) if self.window is None else (self.window, self.n_features)
        for n in (1, 64, 4096):
            scores, errors = self.scorer.run(np.zeros((n, *tail), np.float32), explain=True)
            if scores.shape != (n,) or errors is None or errors.shape != (n, self.n_features):
                raise ValueError(
                    f"{self.bundle.path}: warm-up returned score {scores.shape} and "
                    f"feature_errors {None if errors is None else errors.shape} for {n} rows"
                )
            if not np.isfinite(scores).all():
                raise ValueError(
                    f"{self.bundle.path}: warm-up on all-zero rows returned non-finite scores; "
                    "the graph is broken (e.g. a zero std in its normalisation)"
                )

    def inherit_state(self, old: ModelRuntime) -> None:
        """Take over ``old``'s per-entity state (windows, smoothing tails, alerts) on reload.

        The move itself happens in turn (``_in_turn``) on this runtime's first stateful request
        or ``adopt_inherited``: requests that arrived on ``old`` before commit first, so none of
        their updates is lost. A different window keeps each entity's tail (partial history if
        the new window is bigger); a different smoothing keeps the raw flags (a re-baselining
        episode starts afresh: it belongs to the old model's scores); a different alert
        policy keeps open alerts, cooldowns and time bases."""
        self._lock = old._lock  # one lock orders both runtimes' updates of the shared state
        self._order = old._order
        self._inherit_from = old

    async def adopt_inherited(self) -> None:
        """Move the replaced runtime's state now, after the requests that arrived on it before
        the swap have committed (in turn). Without this, traffic without entity ids never
        adopts, and every replaced model (its onnxruntime session included) stays reachable."""
        async with self._in_turn():
            self._adopt()

    def _in_turn(self, turn: _Turn | None = None) -> _Turn:
        """The state lock, in arrival order (``async with``): after every stateful request (or
        adoption) that took its turn earlier has committed or given up. Every user of the state
        lock goes through here, so none overtakes a point-model request whose graph is still
        running."""
        return turn or self._order.take(self._lock)

    def _adopt(self) -> None:
        """Move the state of the runtime this one replaced; called with the state lock held."""
        old = self._inherit_from
        if old is None:
            return
        old._adopt()  # a reload that no request saw yet: settle the chain first
        self._inherit_from = None
        if self.windows is not None and old.windows is not None and (
            old.n_features == self.n_features
        ):
            self.windows = (
                old.windows if old.window == self.window
                else old.windows.resized(self.windows.window)
            )
        if old.smoothing == self.smoothing and self.smoothing.rebaseline is None:
            self.smoother = old.smoother  # raw-flag tails hold for any threshold
        else:
            self.smoother.adopt(old.smoother)
        if old.alert_policy == self.alert_policy:
            self.tracker = old.tracker
        else:
            self.tracker.adopt(old.tracker)

    @property
    def open_alerts(self) -> int:
        """Alerts open now, read from the (possibly shared) tracker."""
        old = self._inherit_from
        if old is not None:
            return old.open_alerts
        return self.tracker.open_count()

    def info(self) -> dict[str, Any]:
        norm = self.manifest.extra.get("normalization") or {}
        mean, std = norm.get("mean") or [], norm.get("std") or []
        ok = len(mean) == len(std) == self.n_features
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.manifest.kind,
            "features": list(self.features),
            "window": self.window or 0,
            "threshold": self.threshold,
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "loaded_at": self.loaded_at_iso,
            "loaded_at_unix": self.loaded_at,
            "max_rows_per_request": self.max_rows,
            "alerting_json": json.dumps(self.alert_policy.to_dict(), sort_keys=True),
            "smoothing_json": json.dumps(self.smoothing.to_dict(), sort_keys=True),
            "created_at": self.manifest.created_at,
            "feature_mean": [float(v) for v in mean] if ok else [],
            "feature_std": [float(v) for v in std] if ok else [],
        }

    # -- request path ------------------------------------------------------------------------

    def decode(
        self,
        *,
        model: str,
        n_rows: int,
        n_features: int,
        data: bytes,
        entity_ids: Sequence[str],
        timestamps: Sequence[float],
    ) -> Decoded:
        """Check a request and view its bytes as rows (no copy); raises RequestError."""
        if model and model != self.name:
            raise RequestError(
                INVALID_ARGUMENT,
                f"model: unknown model {model!r}; this server serves {self.name!r} "
                "(leave 'model' empty to use it)",
            )
        if n_rows == 0:
            raise RequestError(INVALID_ARGUMENT, "n_rows: empty batch; send at least one row")
        if n_rows > self.max_rows:
            raise RequestError(
                RESOURCE_EXHAUSTED,
                f"n_rows: {n_rows} rows exceed the limit of {self.max_rows} rows per request; "
                "split the batch",
            )
        if n_features != self.n_features:
            raise RequestError(
                INVALID_ARGUMENT,
                f"n_features: got {n_features}, model {self.name!r} v{self.version} expects "
                f"{self.n_features} ({', '.join(self.features)})",
            )
        expected = n_rows * n_features * 4
        if len(data) != expected:
            ragged = len(data) % (4 * n_features)
            raise RequestError(
                INVALID_ARGUMENT,
                f"features: got {len(data)} bytes, expected n_rows * n_features * 4 = "
                f"{n_rows} * {n_features} * 4 = {expected} (little-endian float32, row-major)"
                + (f"; {len(data)} is not a multiple of 4 x {n_features} features" if ragged
                   else ""),
            )
        rows = np.frombuffer(data, dtype=_F32).reshape(n_rows, n_features)
        if not np.isfinite(rows).all():
            bad = np.argwhere(~np.isfinite(rows))[0]
            raise RequestError(
                INVALID_ARGUMENT,
                f"features: row {bad[0]}, feature {self.features[bad[1]]!r} is "
                f"{rows[bad[0], bad[1]]}; features must be finite numbers (impute or drop "
                "missing values before scoring)",
            )
        entities = None
        if len(entity_ids):
            _one_per_row("entity_ids", "ids", len(entity_ids), n_rows)
            entities = np.asarray(entity_ids, dtype=str)
            if not entities.all():  # numpy: "" is falsy
                i = int(np.argmin(entities.astype(bool)))
                raise RequestError(
                    INVALID_ARGUMENT,
                    f"entity_ids: row {i} has an empty entity id; send a non-empty id per row",
                )
        elif self.keeps_state:
            raise RequestError(
                INVALID_ARGUMENT,
                f"entity_ids: model {self.name!r} keeps per-entity state "
                f"({self.state_description}); send one entity id per row so each source's rows "
                "stay separate from other clients'",
            )
        times = None
        if len(timestamps):
            _one_per_row("timestamps", "timestamps", len(timestamps), n_rows)
            times = np.asarray(timestamps, dtype=np.float64)
            if not np.isfinite(times).all():
                i = int(np.argmin(np.isfinite(times)))
                raise RequestError(
                    INVALID_ARGUMENT,
                    f"timestamps: value {times[i]} at row {i} is not a finite epoch-seconds time",
                )
        return Decoded(rows=rows, entities=entities, times=times)

    def fits_without_eviction(self, request: Decoded) -> bool:
        """Whether the request's entities fit the per-entity state without evicting any: then
        scoring it in one piece equals scoring its parts in turn (evictions happen at the end of
        a request, so joined parts would see an entity that an earlier part evicted)."""
        if request.entities is None:
            return True
        entities = set(request.entities.tolist())
        stores: list[Any] = [self.tracker.entity_keys(), self.smoother.entity_keys()]
        if self.windows is not None:
            stores.append(self.windows.entity_keys())
        return all(
            len(keys) + sum(1 for e in entities if e not in keys) <= self.max_entities
            for keys in stores
        )

    @property
    def keeps_state(self) -> bool:
        """Whether scoring needs per-entity history (a window or flag smoothing)."""
        return self.windows is not None or self.smoothing.enabled

    @property
    def state_description(self) -> str:
        if self.windows is not None:
            return f"a window of the last {self.window} rows"
        if self.smoothing.enabled:
            rebaselined = " with re-baselining" if self.smoothing.rebaseline else ""
            return f"{self.smoothing.k}-of-{self.smoothing.n} flag smoothing{rebaselined}"
        return "none"

    def stateful(self, request: Decoded) -> bool:
        """Whether scoring ``request`` reads or advances per-entity state. Without entity ids
        only a point model without smoothing is accepted (``decode``), which is stateless:
        alerts are per entity, so such requests skip them."""
        return request.entities is not None

    def score(self, request: Decoded, *, explain: bool = False) -> LiveResult:
        """Score decoded rows and advance per-entity state (windows, smoothing, alerts).

        Not thread-safe, and takes no turn: use it or ``score_async`` on one runtime, never
        both at once (the server only uses ``score_async``, from its one event-loop thread).
        """
        if not self.stateful(request):
            return self._finish(request, None, *self._run(request.rows, explain))
        self._adopt()
        checked = self._check(request)
        staged = self._stage(request)
        if staged is None:
            return self._finish(request, None, *self._run(request.rows, explain), checked)
        scores, errors = self._alloc(len(staged), explain)
        for part, windows in staged.chunks(self._chunk_windows):
            scores[part], chunk_errors = self._run(windows, explain)
            if errors is not None:
                errors[part] = chunk_errors
        return self._commit(request, staged, scores, errors, checked)

    async def score_async(
        self, request: Decoded, *, explain: bool, run: RunFn, run_locked: RunFn | None = None
    ) -> LiveResult:
        """``score`` with the graph executed by ``run`` (e.g. on a worker thread), or by
        ``run_locked`` when given for a temporal model's stateful requests, which hold the state
        lock meanwhile (their windows depend on the request before).

        Stateful requests keep each entity's rows in arrival order (a temporal model's hold the
        state lock across the await, a point model's commit in turn) and change no state before
        the graph has run: windows, smoothing and alerts all advance together after the last
        await, so a cancelled or failed request (client gone, deadline) leaves every entity's
        state as it was."""
        if not self.stateful(request):
            scores, errors = await run(self.scorer, request.rows, explain)
            return self._finish(request, None, scores, errors)
        if self.windows is None:
            return await self._score_point_in_order(request, explain, run)
        return await self._score_temporal(request, explain, run_locked or run)

    async def _score_temporal(self, request: Decoded, explain: bool, run: RunFn) -> LiveResult:
        """A temporal model's windows need the rows of the request before, so its stateful
        requests hold the state lock in turn. While one holds it, the next ones queue; the
        first to get its turn scores itself and the requests queued right behind it as one
        batch (one staging, one graph run, one commit), exactly as if each had come in turn,
        and leaves each its part of the result. It falls back to itself alone when the group
        cannot be scored as one: a request among them is refused (time going back, ...), the
        joint graph run fails, the entities would not fit without evictions, or one of them
        is cancelled meanwhile; the others then take their own turns."""
        turn = self._order.take(self._lock)
        mine = _Queued(request, explain, asyncio.current_task())
        self._queued[turn.seq] = mine
        if self._arrival is not None:
            _settle(self._arrival)
        try:
            async with self._in_turn(turn):
                if mine.result is not None:  # scored with an earlier request's group
                    return mine.result
                self._adopt()
                group = await self._gather(turn.seq, mine)
                if len(group) > 1:
                    result = await self._score_group(group, run)
                    if result is not None:
                        return result
                    for member in group[1:]:
                        member.hurry = True
                return await self._score_alone(request, explain, run)
        except BaseException:
            mine.gone = True
            raise
        finally:
            self._queued.pop(turn.seq, None)

    async def _gather(self, seq: int, mine: _Queued) -> list[_Queued]:
        """The group this request scores: itself and the requests queued right behind it,
        after waiting (``grouping``: only while groups form) until the group is as big as
        recent ones, the next request cannot join, or the window ends."""
        policy = self.grouping
        if mine.hurry or not policy.should_wait():
            return self._queued_after(seq, mine)
        probe = policy.probing
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.window
        while True:
            group = self._queued_after(seq, mine)
            if policy.target > 1 and len(group) >= policy.target:
                break
            if seq + len(group) in self._queued:
                break  # the next request cannot join: waiting gains nothing
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            arrival = self._arrival = loop.create_future()
            timer = loop.call_later(remaining, _settle, arrival)
            try:
                await arrival
            finally:
                timer.cancel()
                self._arrival = None
        policy.record(len(group), probe)
        return group

    def _queued_after(self, seq: int, mine: _Queued) -> list[_Queued]:
        """This request and the ones with the next turns, while they can join it. (A queued
        request that left is no longer queued, and none after this one has a result yet: a
        group's members all come before the next request that gathers.)"""
        group, rows = [mine], len(mine.request.rows)
        while True:
            nxt = self._queued.get(seq + len(group))
            if nxt is None or nxt.explain != mine.explain:
                return group
            if not can_concat(mine.request, nxt.request):
                return group
            if rows + len(nxt.request.rows) > self.max_rows:
                return group
            group.append(nxt)
            rows += len(nxt.request.rows)

    async def _score_group(self, group: list[_Queued], run: RunFn) -> LiveResult | None:
        """Score consecutive requests as one; None (nothing changed) when they cannot be."""
        explain = group[0].explain
        checked: CheckedTimes | None = None
        while len(group) > 1:
            joint = concat_decoded([q.request for q in group])
            try:
                if not self.fits_without_eviction(joint):
                    return None
                checked = self._check(joint)
                break
            except RequestError:  # someone's rows are refused: keep the ones before it, and
                group = group[:-1]  # let it answer for itself in its own turn
        if len(group) == 1:
            return None
        staged = self._stage(joint)
        assert staged is not None
        try:
            scores, errors = await self._run_staged(staged, explain, run)
        except Exception:
            return None  # the first request's own run says what is wrong
        if any(q.leaving for q in group):
            return None  # one left while the graph ran: commit nothing of its rows
        answers = self._commit(joint, staged, scores, errors, checked).split(
            [len(q.request.rows) for q in group]
        )
        for queued, answer in zip(group[1:], answers[1:], strict=True):
            queued.result = answer
        self.grouped_requests += len(group) - 1
        return answers[0]

    async def _score_alone(self, request: Decoded, explain: bool, run: RunFn) -> LiveResult:
        checked = self._check(request)
        staged = self._stage(request)
        assert staged is not None  # a temporal model stages windows
        scores, errors = await self._run_staged(staged, explain, run)
        return self._commit(request, staged, scores, errors, checked)

    async def _run_staged(
        self, staged: StagedWindows, explain: bool, run: RunFn
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The graph over staged windows, in bounded chunks; changes no state."""
        scores, errors = self._alloc(len(staged), explain)
        for part, windows in staged.chunks(self._chunk_windows):
            scores[part], chunk_errors = await run(self.scorer, windows, explain)
            if errors is not None:
                errors[part] = chunk_errors
        return scores, errors

    async def _score_point_in_order(
        self, request: Decoded, explain: bool, run: RunFn
    ) -> LiveResult:
        """A point model's graph needs no per-entity state, only smoothing and alerts do: run
        the graph first (so it can share a run with concurrent requests), then commit in arrival
        order, under the state lock (held by a replaced temporal runtime's request, if any)."""
        turn = self._order.take(self._lock)
        try:
            scores, errors = await run(self.scorer, request.rows, explain)
        except BaseException:
            turn.release()
            raise
        async with self._in_turn(turn):
            self._adopt()
            checked = self._check(request)  # after the graph, at commit: they see the state
            return self._finish(request, None, scores, errors, checked)  # the earlier ones left

    @property
    def _chunk_windows(self) -> int:
        return max(1, WINDOW_CHUNK_ROWS // (self.window or 1))

    def _check(self, request: Decoded) -> CheckedTimes | None:
        """Checks that need the per-entity state; run before any of it changes, and handed to
        ``_finish`` so the alert update need not check again."""
        if request.entities is None:
            return None
        try:
            return self.tracker.check_times(request.entities, request.times, request.groups)
        except (TimeBaseError, TimeOrderError) as exc:
            raise RequestError(INVALID_ARGUMENT, str(exc)) from None

    def _stage(self, request: Decoded) -> StagedWindows | None:
        """The windows a temporal request completes (None for a point model); changes nothing."""
        if self.windows is None:
            return None
        assert request.entities is not None  # decode requires ids for a temporal model
        return self.windows.stage(request.entities, request.rows, request.groups)

    def _alloc(self, n: int, explain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        errors = np.empty((n, self.n_features), np.float32) if explain else None
        return np.empty(n, np.float32), errors

    def _commit(
        self, request: Decoded, staged: StagedWindows, scores: np.ndarray,
        errors: np.ndarray | None, checked: CheckedTimes | None,
    ) -> LiveResult:
        assert self.windows is not None
        self.windows.commit(staged)
        return self._finish(request, staged.positions, scores, errors, checked)

    def _run(self, inputs: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if not len(inputs):
            errors = np.empty((0, self.n_features), np.float32) if explain else None
            return np.empty(0, np.float32), errors
        return self.scorer.run(inputs, explain=explain)

    def _finish(
        self,
        request: Decoded,
        positions: np.ndarray | None,
        scores: np.ndarray,
        errors: np.ndarray | None,
        checked: CheckedTimes | None = None,
    ) -> LiveResult:
        entities = request.entities
        n = len(request.rows)
        n_scored = n
        if positions is not None:  # temporal: rows without a full window get NaN, no flag
            n_scored = len(positions)
            full = np.full(n, np.nan, np.float32)
            full[positions] = scores
            scores = full
            if errors is not None:
                full_errors = np.full((n, self.n_features), np.nan, np.float32)
                full_errors[positions] = errors
                errors = full_errors
        if self.smoothing.enabled:
            flags = self.smoother.apply_scores(scores, self.threshold, entities, request.groups)
        else:
            flags = scores > self.threshold  # NaN compares False: unscored rows not flagged
        alerts: list[AlertEvent] = []
        if entities is not None:  # alerts are per entity; anonymous rows skip the per-row work
            alerts = self.tracker.update(entities, flags, scores, request.times, checked)
        return LiveResult(scores, flags, errors, alerts, n_scored, positions)

    def refresh_open_alerts(self) -> int:
        """Open alerts now (kept for callers of the old API; the tracker keeps the count)."""
        return self.open_alerts
