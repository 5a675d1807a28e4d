"""Score requests on the model serving now, whatever the transport (the scorer's data plane).

The gRPC servicer (``ds_serving.servicer``) turns protobuf into these calls and their results
back into protobuf. Here a request is checked against the runtime serving when it arrived and
finishes on that runtime even if a hot reload swaps in another meanwhile; consecutive stream
messages are scored together where that gives each the answer it would get alone; what was
scored is counted; and a failure becomes the gRPC status name to answer with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ds_serving.decoding import (
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    Decoded,
    LiveResult,
    RequestError,
    RequestLimits,
    ScoreFields,
    can_concat,
    check_metadata,
    concat_decoded,
    decode,
)
from ds_serving.event_loop import on_worker_if
from ds_serving.metrics import ScorerMetrics
from ds_serving.runtime import OFF_LOOP_ROWS, CommitFailed, ModelRuntime
from ds_serving.scoring import Scorer
from ds_serving.windows import quoted

log = logging.getLogger(__name__)

STATELESS_REFUSAL = (
    "entity_ids: this scorer runs several processes (--processes > 1), which keep no "
    "per-entity state, so it cannot track alerts per entity; leave entity_ids empty for "
    "stateless scores, or send entity-keyed rows to a scorer started with --processes 1"
)


# longest status message in UTF-8 bytes: gRPC percent-encodes each non-ASCII byte into 3
# characters of metadata, and clients refuse more than 8 KiB of it
MAX_STATUS_BYTES = 2048


def bounded(message: str, limit: int = MAX_STATUS_BYTES) -> str:
    """``message`` cut to ``limit`` UTF-8 bytes, saying how long it was; the messages here
    quote user strings by a short prefix (``quoted``) already, this is the backstop."""
    data = message.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return message
    cut = data[: limit - 32].decode("utf-8", "ignore")
    return f"{cut}\u2026({len(message)} chars)"


class Unavailable(RuntimeError):
    """No model serves yet."""


class ModelHost(Protocol):
    """What the handler needs from the server: the runtime serving now, and graph runs."""

    @property
    def runtime(self) -> ModelRuntime | None: ...

    @property
    def champion_path(self) -> Path: ...

    @property
    def last_failure(self) -> str | None: ...

    async def run(
        self, scorer: Scorer, inputs: np.ndarray, explain: bool
    ) -> tuple[np.ndarray, np.ndarray | None]: ...

    async def run_locked(
        self, scorer: Scorer, inputs: np.ndarray, explain: bool
    ) -> tuple[np.ndarray, np.ndarray | None]: ...


def _joined(runtime: ModelRuntime, parts: list[Decoded]) -> tuple[list[Decoded], Decoded]:
    """``parts`` as one request, or only the first when together they would evict entities
    (an eviction between two messages would otherwise not happen). The state can still fill
    before the joint request's turn: the runtime checks again then (``Decoded.joined``)."""
    if len(parts) == 1:
        return parts, parts[0]
    joint = concat_decoded(parts, joined=True)
    if not runtime.fits_without_eviction(joint):
        return parts[:1], parts[0]
    return parts, joint


class ScoringHandler:
    """Scoring, model info and error statuses; the callers read the runtime once per request
    (``runtime``) and pass it to the other calls, so a request finishes on one model."""

    def __init__(
        self,
        host: ModelHost,
        metrics: ScorerMetrics,
        *,
        stateless: bool = False,
        limits: RequestLimits | None = None,
    ):
        self._host = host
        self.metrics = metrics
        self._stateless = stateless
        # the server's config (``ServerConfig.max_entity_id_bytes``, ...) when not given
        self.limits = limits or RequestLimits.of(getattr(host, "config", None))

    @property
    def serving(self) -> ModelRuntime | None:
        """The runtime serving now, if any."""
        return self._host.runtime

    def runtime(self) -> ModelRuntime:
        """The runtime serving now; raises Unavailable before the first model has loaded."""
        runtime = self._host.runtime
        if runtime is None:
            refused = self._host.last_failure
            if refused:  # the client's only view of the cause
                raise Unavailable(f"no model is serving: the champion was refused: {refused}")
            raise Unavailable(
                f"no model loaded yet: waiting for a valid {self._host.champion_path}"
            )
        return runtime

    def decode(
        self, runtime: ModelRuntime, request: ScoreFields, request_id: str = ""
    ) -> Decoded:
        """Check a request against ``runtime`` (and this scorer: the stateless tier refuses
        entity ids, ``limits`` bound the user strings); raises RequestError.

        The sizes are checked first, in O(bytes) and before any per-row work, when the ids are
        one per row within ``max_rows``; otherwise ``decode`` refuses the count without
        reading them. ``request_id`` counts toward the per-request budget when given."""
        entity_ids, model, n_rows = request.entity_ids, request.model, request.n_rows
        if entity_ids and self._stateless:
            raise RequestError(FAILED_PRECONDITION, STATELESS_REFUSAL)
        if len(entity_ids) != n_rows or n_rows > runtime.max_rows:
            check_metadata(self.limits, entity_ids=[], model=model, request_id=request_id)
        else:
            entity_ids = check_metadata(self.limits, entity_ids=entity_ids, model=model,
                                        request_id=request_id)
        return decode(runtime, request, entity_ids)

    async def score(self, runtime: ModelRuntime, decoded: Decoded, explain: bool) -> LiveResult:
        """Score one request and count it."""
        return self._counted(runtime, await self._score_decoded(runtime, decoded, explain))

    async def score_consecutive(
        self, runtime: ModelRuntime, messages: Sequence[tuple[Decoded, bool]]
    ) -> tuple[list[LiveResult], Exception | None]:
        """Results for the first of consecutive stream messages (each a request and its
        ``explain``), scored together where they can be, and the error of the first message
        that fails (the ones after it are not scored).

        Messages join when they agree on ``explain`` and the optional fields, and when their
        entities fit the per-entity state without evictions (an eviction between two messages
        would otherwise not happen). A joint run that fails changed no state, so its messages
        are then scored one by one: every message gets exactly the result or error it would
        have got alone. On a hot reload the results so far come back without an error and the
        caller scores the rest on the new model."""
        results: list[LiveResult] = []
        i = 0
        while i < len(messages):
            explain = messages[i][1]
            j = i + 1
            while j < len(messages) and messages[j][1] == explain and (
                can_concat(messages[i][0], messages[j][0])
            ):
                j += 1
            parts = [decoded for decoded, _ in messages[i:j]]
            # joining tens of thousands of rows' ids and grouping them for the eviction check
            large = len(parts) > 1 and sum(len(p.rows) for p in parts) >= OFF_LOOP_ROWS
            parts, joint = await on_worker_if(large, _joined, runtime, parts)
            if self._host.runtime is not runtime:
                return results, None  # reloaded: the rest goes to the new model
            try:
                result = await self._score_decoded(runtime, joint, explain)
            except Exception as exc:
                if len(parts) == 1 or isinstance(exc, CommitFailed):
                    return results, exc  # (the state may hold part of it: no second try)
                for part in parts:
                    if self._host.runtime is not runtime:
                        return results, None
                    try:
                        alone = await self._score_decoded(runtime, part, explain)
                    except Exception as exc:
                        return results, exc
                    results.append(self._counted(runtime, alone))
            else:
                results.extend(self._counted(runtime, r)
                               for r in result.split([len(p.rows) for p in parts]))
            i += len(parts)
        return results, None

    def model_info(self, model: str) -> dict[str, Any]:
        """What ``GetModelInfo`` answers about the runtime serving now."""
        runtime = self.runtime()
        if model and model != runtime.name:
            raise RequestError(
                INVALID_ARGUMENT,
                f"model: unknown model {quoted(model)}; this server serves {runtime.name!r}",
            )
        return runtime.info()

    def status(self, exc: Exception, method: str) -> tuple[str, str]:
        """The gRPC status name and message that answer ``method`` failing with ``exc``; a
        failure that is not the request's fault is logged. The message is at most
        ``MAX_STATUS_BYTES`` long (clients refuse status metadata over 8 KiB)."""
        if isinstance(exc, RequestError):
            return exc.code, bounded(str(exc))
        if isinstance(exc, Unavailable):
            return "UNAVAILABLE", bounded(str(exc))
        log.exception("%s failed", method)
        return "INTERNAL", bounded(f"internal error while scoring ({type(exc).__name__}: {exc})")

    @staticmethod
    def message_prefix(index: int, request_id: str) -> str:
        """What a stream's error message starts with: the failing message's index and its
        ``request_id``, quoted by a bounded prefix."""
        return f"message {index}" + (f" (request_id {quoted(request_id)})" if request_id
                                     else "") + ": "

    async def _score_decoded(
        self, runtime: ModelRuntime, decoded: Decoded, explain: bool
    ) -> LiveResult:
        return await runtime.score_async(
            decoded, explain=explain, run=self._host.run, run_locked=self._host.run_locked
        )

    def _counted(self, runtime: ModelRuntime, result: LiveResult) -> LiveResult:
        self.metrics.scored(result.scores, result.n_scored, result.n_anomalies,
                            runtime.policy.threshold if result.thresholds is None
                            else result.thresholds)
        if result.alerts:
            for event in result.alerts:
                self.metrics.alert_events.labels(event.kind).inc()
            self.metrics.open_alerts.set(runtime.open_alerts)
        return result
