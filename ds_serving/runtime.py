"""One loaded model and its live scoring: what the gRPC scorer serves at any moment.

A ``ModelRuntime`` is a verified, warmed-up model (``load``) plus the per-entity state that
belongs to it (``EntityState``). It scores decoded requests (``ds_serving.decoding``): stateless
ones straight through; a point model's stateful ones run their graph first (possibly shared with
concurrent requests) and commit in arrival order; a temporal model's hold the state lock in turn
and score those queued right behind them in the same run (``ds_serving.ordering``), while small
requests of other entities may pass a large one whose graph runs (``Door``). The server
swaps one runtime for the next on hot reload, and the new one inherits the state
(``inherit_state``).

Kept free of gRPC so the same path is unit-testable and so dataset scoring
(``ds_serving.scoring.score_rows`` + ``smooth_flags`` + ``AlertTracker``) and live scoring run the
same policy code on the same artifact.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ds_serving.alerting import AlertTracker, CheckedTimes
from ds_serving.bundle import Bundle, champion_pointer, load_bundle
from ds_serving.coalescing import GroupPolicy
from ds_serving.decoding import Decoded, JoinEvicts, LiveResult, RequestError, concat_decoded
from ds_serving.entity_state import EntityState
from ds_serving.ordering import CommitOrder, Queued, Turn, TurnQueue
from ds_serving.scoring import Scorer
from ds_serving.slots import ALERTS, WINDOWS
from ds_serving.windows import EntityWindows, StagedWindows, group_keys

# runs the graph of a Scorer on model inputs, e.g. on a worker thread: (scorer, inputs, explain)
RunFn = Callable[[Scorer, np.ndarray, bool], Awaitable[tuple[np.ndarray, np.ndarray | None]]]
# live temporal scoring runs the graph on at most this many window rows at a time, so a request's
# memory stays near its own size instead of W times it (same bound as score_rows' chunk_rows)
WINDOW_CHUNK_ROWS = 65_536


# requests this large commit their per-entity state off the event loop (ModelRuntime._off_loop)
T = TypeVar("T")
OFF_LOOP_ROWS = 4096


@dataclass(eq=False)
class Door:
    """Open while a large temporal request's graph runs: a small stateful request may be
    scored before it when none of its entities is the large one's, no other request waits in
    line ahead of it, and its new entities fit without evicting any (``room``, reserved at
    admission). Its answer is then the one it gets in turn, because entities are independent
    and nothing is evicted; the large request commits after every admitted one has finished,
    and the passers' entities are then seen again (``_seen_again``), so the recency order that
    decides later evictions is that of arrival order too. Without it, a one-row call waited
    for a 65,536-entity request's whole graph run."""

    entities: frozenset[Hashable]  # the large request's (its group's) entities
    seqs: frozenset[int]  # the turns of its group
    room: dict[str, int]  # per store: entities that may still be added without an eviction
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # admitted ones, in arrival order
    inside: int = 0  # admitted and not finished
    empty: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.empty.set()


async def _uncancellable(work: asyncio.Future[T]) -> T:
    """``work``'s result, waiting for it to finish also when cancelled (as often as that
    happens); a cancellation is raised once it has."""
    cancelled = False
    while not work.done():
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not work.cancelled():
            work.exception()  # retrieved: the cancellation is what the caller sees
        raise asyncio.CancelledError
    return work.result()


class StateMoved(RuntimeError):
    """A stateful request on a replaced model whose per-entity state the new model took over
    as copies (another window or policy): committed here, it would reach nobody."""


class CommitFailed(RuntimeError):
    """Advancing the per-entity state with a scored request raised partway: the rows it
    covered are not scored again on that state (they might count twice)."""


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
        self.max_rows = int(max_rows)
        self.max_entities = int(max_entities)
        # the bundle's decision, parsed once with the manifest (ds_serving.policy)
        self.policy = m.policy
        self.groups = m.groups
        self.state = EntityState(window=m.window, n_features=m.n_features, policy=m.policy,
                                 max_entities=max_entities)
        self._lock = asyncio.Lock()
        self._order = CommitOrder()
        self._inherit_from: ModelRuntime | None = None  # state still to take over, see _adopt
        self._queue = TurnQueue()  # temporal requests waiting for their turn, see _score_temporal
        # whether a temporal request holding its turn waits for the next ones to queue (the
        # server sets its coalescing window; 0 = never wait, group only what queued anyway)
        self.grouping = GroupPolicy(window=0.0)
        self.grouped_requests = 0  # temporal requests scored in another one's group (stats)
        self._door: Door | None = None  # open while a large temporal request's graph runs
        self._retired = False  # replaced on reload: opens no more doors
        # entities of requests that passed, in the order they passed, and the turns they
        # passed that have not committed or left: after each such commit the passers' entities
        # are seen again, so the recency order (and later evictions) is that of arrival order
        self._passers: list[Sequence[Hashable]] = []
        self._passed: set[int] = set()
        self._commits: dict[frozenset[int], LiveResult] = {}  # see _committed
        self._door_opens: asyncio.Future[None] | None = None  # settled when the door changes
        self.passing_requests = 0  # small temporal requests scored through a Door (stats)
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
        their updates is lost. What carries over when the policies differ:
        ``EntityState.take_over``. A stateful request must reach ``old`` before the swap: one
        checked against ``old`` while the swap happens is checked again and scored here (the
        server's ``Score`` and stream paths do); one that reaches ``old`` after the move anyway
        is refused (``StateMoved``) when the state moved as copies, so nothing is lost
        silently."""
        self._lock = old._lock  # one lock orders both runtimes' updates of the shared state
        self._order = old._order
        self._inherit_from = old
        old._door = None  # later requests wait in turn (the one inside commits after them)
        old._retired = True

    async def adopt_inherited(self) -> None:
        """Move the replaced runtime's state now, after the requests that arrived on it before
        the swap have committed (in turn). Without this, traffic without entity ids never
        adopts, and every replaced model (its onnxruntime session included) stays reachable."""
        async with self._in_turn():
            self._adopt()

    def _in_turn(self, turn: Turn | None = None) -> Turn:
        """The state lock, in arrival order (``async with``): after every stateful request (or
        adoption) that took its turn earlier has committed or given up. Every user of the state
        lock goes through here, so none overtakes a point-model request whose graph is still
        running."""
        return turn or self._order.take(self._lock)

    def _check_current(self) -> None:
        """Refuse a stateful request, in turn, once this model's state moved to the one that
        replaced it (the server checks requests against the serving model again instead)."""
        if self.state.moved:
            raise StateMoved(
                f"{self.name} v{self.version} was replaced and its per-entity state moved to "
                "the model serving now (another window or policy): score the request there")

    def _adopt(self) -> None:
        """Move the state of the runtime this one replaced; called with the state lock held."""
        old = self._inherit_from
        if old is None:
            return
        old._adopt()  # a reload that no request saw yet: settle the chain first
        self._inherit_from = None
        self.state.take_over(old.state)

    @property
    def windows(self) -> EntityWindows | None:
        """Each entity's latest rows (a temporal model), once any inherited state is adopted."""
        return self.state.windows

    @property
    def tracker(self) -> AlertTracker:
        """Each entity's alert state, once any inherited state is adopted."""
        return self.state.tracker

    @property
    def open_alerts(self) -> int:
        """Alerts open now, read from the (possibly shared) tracker."""
        old = self._inherit_from
        if old is not None:
            return old.open_alerts
        return self.state.open_alerts()

    def entity_counts(self) -> dict[str, int]:
        """Entities holding state per store, read where the state is now (a replaced runtime's
        until the move)."""
        old = self._inherit_from
        if old is not None:
            return old.entity_counts()
        return self.state.entity_counts()

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
            "threshold": self.policy.threshold,
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "loaded_at": self.loaded_at_iso,
            "loaded_at_unix": self.loaded_at,
            "max_rows_per_request": self.max_rows,
            "alerting_json": json.dumps(self.policy.alerting.to_dict(), sort_keys=True),
            "smoothing_json": json.dumps(self.policy.smoothing.to_dict(), sort_keys=True),
            "threshold_json": json.dumps(self.policy.threshold_section(), sort_keys=True),
            "created_at": self.manifest.created_at,
            "feature_mean": [float(v) for v in mean] if ok else [],
            "feature_std": [float(v) for v in std] if ok else [],
            "feature_groups_json": json.dumps(self.groups.to_dict()),
            **self._promotion(),
        }

    def _promotion(self) -> dict[str, str]:
        """When and why the served version became champion (champion.json), if it is."""
        pointer = champion_pointer(self.bundle.path.parent.parent, self.name)
        if not pointer or str(pointer.get("version")) != self.version:
            return {"promoted_at": "", "promotion_reason": ""}
        details = pointer.get("details") or {}
        return {"promoted_at": str(pointer.get("promoted_at", "")),
                "promotion_reason": str(details.get("reason", ""))[:1000]}

    # -- request path ------------------------------------------------------------------------


    def fits_without_eviction(self, request: Decoded) -> bool:
        """Whether scoring the request evicts no entity's state (``EntityState``)."""
        return self.state.fits_without_eviction(request)

    def _check_join(self, request: Decoded) -> None:
        """Refuse joined requests that would evict now, in turn, before any state changes: the
        joint was decided against the state of an earlier moment (``Decoded.joined``)."""
        if request.joined and not self.fits_without_eviction(request):
            raise JoinEvicts("joined requests would evict per-entity state at their turn")

    @property
    def keeps_state(self) -> bool:
        """Whether scoring needs per-entity history (a window or flag smoothing)."""
        return self.state.keeps_state

    @property
    def state_description(self) -> str:
        return self.state.description

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
        self._check_current()
        self._adopt()
        checked = self.state.check_times(request)
        staged = self.state.stage(request)
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
        if self.state.windows is None:
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
        is cancelled meanwhile; the others then take their own turns. A small request waiting
        in line passes a large one through its ``Door`` when it may."""
        turn = self._order.take(self._lock)
        mine = Queued(request, explain, asyncio.current_task())
        self._queue.add(turn.seq, mine)
        try:
            door = await self._turn_or_door(turn, request)
            if door is not None:
                self._queue.remove(turn.seq)
                turn.release()  # the ones behind still wait for those before it
                self._door_changed()  # one refused because this one waited may pass now
                return await self._pass(door, request, explain, run)
            async with self._in_turn(turn):
                if mine.result is not None:  # scored with an earlier request's group
                    return mine.result
                if mine.failed is not None:  # that group's commit failed partway
                    raise CommitFailed(str(mine.failed)) from mine.failed
                self._check_current()
                self._adopt()
                group = await self._queue.gather(turn.seq, mine, self.grouping, self.max_rows)
                if len(group) > 1:
                    result = await self._score_group(group, run, turn.seq)
                    if result is not None:
                        return result
                    for member in group[1:]:
                        member.hurry = True
                return await self._score_alone(request, explain, run, turn.seq)
        except BaseException:
            mine.gone = True
            turn.release()  # a no-op once it was entered or passed on
            raise
        finally:
            self._queue.remove(turn.seq)
            self._seen_again(frozenset((turn.seq,)))  # left: forgets it, touches nothing

    async def _turn_or_door(self, turn: Turn, request: Decoded) -> Door | None:
        """Wait until the requests before this one are through (None), or, for a small
        request, until a ``Door`` it may pass opens (the door, with its place reserved)."""
        if len(request.rows) >= OFF_LOOP_ROWS:  # a large one never passes
            if not turn.ready():
                await turn.waits_for()
            return None
        while not turn.ready():
            door = self._door
            if door is not None and self._admit(door, request, turn.seq):
                return door
            loop = asyncio.get_running_loop()
            if self._door_opens is None or self._door_opens.get_loop() is not loop:
                self._door_opens = loop.create_future()  # (a runtime outlives a test's loop)
            await asyncio.wait([turn.waits_for(), self._door_opens],
                               return_when=asyncio.FIRST_COMPLETED)
        return None

    async def _score_group(self, group: list[Queued], run: RunFn, seq: int
                           ) -> LiveResult | None:
        """Score consecutive requests as one; None (nothing changed) when they cannot be."""
        explain = group[0].explain
        rows = sum(len(q.request.rows) for q in group)
        prepared = await self._off_loop(rows, self._prepare_group, group)
        if prepared is None:
            return None
        group, joint, checked, staged = prepared
        if any(q.leaving for q in group):
            return None  # one left while it was prepared: its rows must not run (nor commit)
        seqs = frozenset(range(seq, seq + len(group)))  # the group's turns: consecutive
        try:
            scores, errors = await self._run_behind_door(joint, seqs, staged, checked, explain,
                                                         run)
        except Exception:
            return None  # the first request's own run says what is wrong
        if any(q.leaving for q in group):
            return None  # one left while the graph ran: commit nothing of its rows
        answers: list[LiveResult] = []
        try:
            await self._committed(seqs, joint, staged, scores, errors, checked)
        except CommitFailed as exc:
            for member in group[1:]:  # their rows were in it: none scores them again
                member.failed = exc
            raise
        finally:  # also when the leader is cancelled while its commit runs: the rows are in
            committed = self._commits.pop(seqs, None)
            if committed is not None:
                answers = committed.split([len(q.request.rows) for q in group])
                for queued, answer in zip(group[1:], answers[1:], strict=True):
                    queued.result = answer
                self.grouped_requests += len(group) - 1
        return answers[0]

    def _prepare_group(
        self, group: list[Queued]
    ) -> tuple[list[Queued], Decoded, CheckedTimes | None, StagedWindows] | None:
        """The longest head of ``group`` that can be scored as one, checked and staged (changes
        nothing); None when that is a single request."""
        while len(group) > 1:
            joint = concat_decoded([q.request for q in group])
            try:
                if not self.fits_without_eviction(joint):
                    return None
                checked = self.state.check_times(joint)
                break
            except RequestError:  # someone's rows are refused: keep the ones before it, and
                group = group[:-1]  # let it answer for itself in its own turn
        if len(group) == 1:
            return None
        staged = self.state.stage(joint)
        assert staged is not None
        return group, joint, checked, staged

    def _prepare(self, request: Decoded) -> tuple[CheckedTimes | None, StagedWindows]:
        """A temporal request's time checks and windows (changes nothing)."""
        self._check_join(request)
        checked = self.state.check_times(request)
        staged = self.state.stage(request)
        assert staged is not None  # a temporal model stages windows
        return checked, staged

    async def _score_alone(self, request: Decoded, explain: bool, run: RunFn, seq: int
                           ) -> LiveResult:
        checked, staged = await self._off_loop(len(request.rows), self._prepare, request)
        seqs = frozenset((seq,))
        scores, errors = await self._run_behind_door(request, seqs, staged, checked, explain, run)
        try:
            await self._committed(seqs, request, staged, scores, errors, checked)
        finally:
            result = self._commits.pop(seqs, None)
        assert result is not None
        return result

    async def _committed(self, seqs: frozenset[int], request: Decoded, staged: StagedWindows,
                         scores: np.ndarray, errors: np.ndarray | None,
                         checked: CheckedTimes | None) -> None:
        """Commit the turns ``seqs`` (off the loop when large); the result is in
        ``_commits[seqs]`` once committed, also when the caller is cancelled meanwhile (the
        commit finishes regardless), and the requests that passed them are seen again."""

        def commit() -> None:
            self._commits[seqs] = self._commit(request, staged, scores, errors, checked)

        try:
            await self._off_loop(len(request.rows), commit)
        finally:
            if seqs in self._commits:
                self._seen_again(seqs)

    async def _run_behind_door(
        self, request: Decoded, seqs: frozenset[int], staged: StagedWindows,
        checked: CheckedTimes | None, explain: bool, run: RunFn,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``_run_staged`` for a request holding its turn; a large one opens a ``Door`` while
        its graph runs, and closes it (and waits for those inside) before anything else reads
        or changes the state."""
        if len(request.rows) < OFF_LOOP_ROWS or self._door is not None or self._retired:
            return await self._run_staged(staged, explain, run)
        entities, room = await self._off_loop(len(request.rows), self._door_for, staged, checked)
        if self._retired:  # replaced meanwhile
            return await self._run_staged(staged, explain, run)
        door = self._door = Door(entities, seqs, room)
        self._door_changed()  # requests waiting in line look at it now
        try:
            return await self._run_staged(staged, explain, run)
        finally:
            if self._door is door:
                self._door = None
            if door.inside:  # short: small requests, scored on the loop but for their graph
                await _uncancellable(asyncio.ensure_future(door.empty.wait()))

    def _door_for(self, staged: StagedWindows, checked: CheckedTimes | None
                  ) -> tuple[frozenset[Hashable], dict[str, int]]:
        """A staged large request's entities, and the room left in each store once they are
        in (for its ``Door``)."""
        keys = staged.keys
        held = self.state.stores()
        # the windows and (while its lookup holds) the alert state looked every entity up
        # already: count their new ones from that; the other stores by membership
        known = {WINDOWS: staged.slots}
        if checked is not None and checked.slots is not None and (
                checked.generation == self.state.tracker.generation):
            known[ALERTS] = checked.slots
        new = {store: int(np.count_nonzero(known[store] < 0)) if store in known
               else sum(1 for k in keys if k not in held[store]) for store in held}
        room = {store: self.max_entities - len(held[store]) - n for store, n in new.items()}
        return frozenset(keys), room

    def _admit(self, door: Door, request: Decoded, seq: int) -> bool:
        """Whether ``request`` (turn ``seq``) may pass the large request behind ``door``
        (``Door``): nobody but the large one's group waits ahead of it; reserves its room when
        it may."""
        if seq in door.seqs or seq in self._passed or not self._order.only_before(seq,
                                                                                   door.seqs):
            return False  # (one that was passed waits its turn, so passers keep their order)
        assert request.groups is not None  # decode requires ids for a temporal model
        keys = group_keys(request.groups)
        if any(k in door.entities for k in keys):
            return False
        new = self.state.new_entities(keys)
        if any(n > door.room[store] for store, n in new.items()):
            return False
        for store, n in new.items():
            door.room[store] -= n
        self._passed |= door.seqs & self._order.pending  # (a member that left passes nothing)
        door.inside += 1
        door.empty.clear()
        return True

    def _door_changed(self) -> None:
        """Wake the requests waiting in line to look at the door again: it opened, or a request
        ahead of them passed through it (then nobody but the large one may wait ahead)."""
        opens, self._door_opens = self._door_opens, None
        if opens is not None and not opens.done() and (
                opens.get_loop() is asyncio.get_running_loop()):
            opens.set_result(None)

    def _seen_again(self, seqs: frozenset[int]) -> None:
        """Turns ``seqs`` committed (or ended): when requests passed them, the passers'
        entities are seen again after such a commit, in the order they passed, as if they had
        come in turn (the recency order decides later evictions). A turn that ended without
        committing is no longer pending, so it is only forgotten."""
        self._passed &= self._order.pending  # turns that ended (left) wait for nothing
        if self._passed & seqs:
            self._passed -= seqs
            if self._passers:
                self._touch_passers()
        if not self._passed:
            self._passers.clear()

    def _touch_passers(self) -> None:
        """The passers' entities, each once where it was last seen, made the most recent."""
        latest: dict[Hashable, None] = {}
        for keys in self._passers:
            for key in keys:
                latest.pop(key, None)
                latest[key] = None
        self._passers = [list(latest)]
        self.state.touch(self._passers[0])

    async def _pass(self, door: Door, request: Decoded, explain: bool, run: RunFn
                    ) -> LiveResult:
        """Score an admitted small request while the large one's graph runs (``Door``): its
        state is read and changed on the loop, where the large request does neither now."""
        try:
            async with door.lock:
                checked, staged = self._prepare(request)
                scores, errors = await self._run_staged(staged, explain, run)
                result = self._commit(request, staged, scores, errors, checked)
                assert request.groups is not None
                self._passers.append(group_keys(request.groups))
                self.passing_requests += 1
                return result
        finally:
            door.inside -= 1
            if not door.inside:
                door.empty.set()

    async def _off_loop(self, rows: int, commit: Callable[..., T], *args: Any) -> T:
        """Prepare or commit a request's per-entity state: inline when small, on a worker
        thread when it has ``OFF_LOOP_ROWS`` rows or more (grouping tens of thousands of
        entities, checking their times, staging their windows and advancing their smoothing and
        alerts would hold the event loop for tens of milliseconds, delaying every other
        client). The caller holds the request's turn, and the commit
        always finishes before the turn is released, also when the caller is cancelled
        meanwhile, so commits never overlap and state is never half-written."""
        if rows < OFF_LOOP_ROWS:
            return commit(*args)
        return await _uncancellable(asyncio.get_running_loop().run_in_executor(None, commit,
                                                                               *args))

    async def _run_staged(
        self, staged: StagedWindows, explain: bool, run: RunFn
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The graph over staged windows, in bounded chunks; changes no state."""
        scores, errors = self._alloc(len(staged), explain)
        for part in staged.parts(self._chunk_windows):
            # gathering 65,536 windows is ~14 ms of copying: off the loop when large
            windows = await self._off_loop(part.stop - part.start, staged.windows, part)
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
            self._check_current()
            self._adopt()

            def commit() -> LiveResult:
                # checked after the graph, at commit: the checks see the state as it is then
                self._check_join(request)
                checked = self.state.check_times(request)
                return self._committing(request, None, scores, errors, checked)

            return await self._off_loop(len(request.rows), commit)  # the earlier ones left

    @property
    def _chunk_windows(self) -> int:
        return max(1, WINDOW_CHUNK_ROWS // (self.window or 1))

    def _alloc(self, n: int, explain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        errors = np.empty((n, self.n_features), np.float32) if explain else None
        return np.empty(n, np.float32), errors

    def _commit(
        self, request: Decoded, staged: StagedWindows, scores: np.ndarray,
        errors: np.ndarray | None, checked: CheckedTimes | None,
    ) -> LiveResult:
        return self._committing(request, staged.positions, scores, errors, checked, staged)

    def _committing(
        self, request: Decoded, positions: np.ndarray | None, scores: np.ndarray,
        errors: np.ndarray | None, checked: CheckedTimes | None,
        staged: StagedWindows | None = None,
    ) -> LiveResult:
        """Advance the per-entity state with a scored request: its windows (``staged``), then
        smoothing and alerts. Refusals come before this; an exception here (a bug, memory) may
        leave the state half-written, so it becomes ``CommitFailed``, which no caller answers
        by scoring the same rows again on that state."""
        try:
            if staged is not None:
                self.state.commit(staged)
            return self._finish(request, positions, scores, errors, checked)
        except Exception as exc:
            raise CommitFailed(
                f"updating the per-entity state failed ({type(exc).__name__}: {exc}); the "
                "state of this request's entities may be incomplete") from exc

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
        flags, alerts, thresholds = self.state.flag(request, scores, checked)
        return LiveResult(scores, flags, errors, alerts, n_scored, positions, thresholds)

    def refresh_open_alerts(self) -> int:
        """Open alerts now (kept for callers of the old API; the tracker keeps the count)."""
        return self.open_alerts
