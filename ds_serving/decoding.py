"""A score request as arrays, and its answer as arrays.

``decode`` checks a request against the served model and views its feature bytes as rows without
a copy (``Decoded``); a refused request raises ``RequestError`` carrying the gRPC status name to
answer with. Consecutive requests can be scored as one (``concat_decoded``) and the answer split
back per request (``LiveResult.split``). Free of gRPC and of per-entity state.

Entity ids stay the Python strings the request carried, exactly as sent (an object array, not a
fixed-width numpy string array: that costs rows x longest id x 4 bytes and strips trailing NULs,
so "h" and "h\\x00" would share state). Their size is bounded before any per-row work
(``RequestLimits``, ``check_metadata``), and error messages quote user strings only by a bounded
prefix (``quoted``): gRPC sends the message as trailing metadata, which clients cap at 8 KiB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from ds_serving.alerting import AlertEvent
from ds_serving.ceding import cede
from ds_serving.windows import EntityGroups, entity_array, entity_groups, quoted

INVALID_ARGUMENT = "INVALID_ARGUMENT"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
_F32 = np.dtype("<f4")


class RequestError(ValueError):
    """A request the model cannot score; ``code`` is the gRPC status name to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RequestLimits:
    """Bounds on the user strings of one request (``ds-scorer serve --max-entity-id-bytes``,
    ``--max-request-metadata-mb``), checked in O(bytes) before any per-row work."""

    max_entity_id_bytes: int = 256  # UTF-8 bytes of one entity id
    # UTF-8 bytes of a request's entity ids and model (and request_id, where the caller passes
    # it) together: 65,536 rows of 256-byte ids fill it exactly
    max_metadata_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_entity_id_bytes < 1:
            raise ValueError(f"max_entity_id_bytes must be >= 1, got {self.max_entity_id_bytes}")
        if self.max_metadata_bytes < 1:
            raise ValueError(f"max_metadata_bytes must be >= 1, got {self.max_metadata_bytes}")

    @classmethod
    def of(cls, config: Any) -> RequestLimits:
        """The limits a server config sets (``ServerConfig.max_entity_id_bytes`` and
        ``max_request_metadata_bytes``); the defaults for what it does not set."""
        default = cls()
        return cls(
            max_entity_id_bytes=getattr(config, "max_entity_id_bytes",
                                        default.max_entity_id_bytes),
            max_metadata_bytes=getattr(config, "max_request_metadata_bytes",
                                       default.max_metadata_bytes),
        )


def _utf8_bytes(value: str) -> int:
    return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))


_ID_SLICE = 4096  # ids turned into Python strings per call (about 0.8 ms of 256-byte ids)


def id_list(entity_ids: Sequence[str]) -> list[str]:
    """The ids as a list of Python strings, made a slice at a time: one call over 65,536 long
    ids holds the GIL for about 13 ms, in which the event loop (other clients' calls) cannot
    run; between slices it can."""
    if isinstance(entity_ids, list):
        return entity_ids
    n = len(entity_ids)
    if n <= _ID_SLICE:
        return list(entity_ids)
    out: list[str] = []
    for start in range(0, n, _ID_SLICE):
        if start:
            cede()
        out.extend(entity_ids[start:start + _ID_SLICE])
    return out


def check_metadata(
    limits: RequestLimits,
    *,
    entity_ids: Sequence[str],
    model: str = "",
    request_id: str = "",
) -> list[str]:
    """The entity ids as a list of the strings sent, once they and ``model``/``request_id`` are
    within ``limits``; raises RequestError (INVALID_ARGUMENT for an id over the per-id limit,
    RESOURCE_EXHAUSTED over the per-request budget). Costs O(bytes): each id becomes one Python
    string (a protobuf repeated field makes a new one on every read, so read it once here) and
    only non-ASCII ids are encoded to count their bytes."""
    ids = id_list(entity_ids)
    used = _utf8_bytes(model) + _utf8_bytes(request_id)
    if ids:
        limit = limits.max_entity_id_bytes
        sizes = list(map(len, ids))  # characters: the UTF-8 bytes of ASCII ids
        if not all(map(str.isascii, ids)):
            sizes = [n if s.isascii() else _utf8_bytes(s) for s, n in zip(ids, sizes, strict=True)]
        if max(sizes) > limit:
            i = next(i for i, n in enumerate(sizes) if n > limit)
            raise RequestError(
                INVALID_ARGUMENT,
                f"entity_ids: row {i} has an id of {sizes[i]} bytes, over the limit of {limit} "
                f"bytes per id (--max-entity-id-bytes): {quoted(ids[i])}",
            )
        used += sum(sizes)
    if used > limits.max_metadata_bytes:
        what = "entity_ids, model and request_id" if request_id else "entity_ids and model"
        raise RequestError(
            RESOURCE_EXHAUSTED,
            f"{what}: {used} bytes together exceed the limit of "
            f"{limits.max_metadata_bytes} bytes per request (--max-request-metadata-mb); "
            "send shorter ids or fewer rows per request",
        )
    return ids


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
    entities: np.ndarray | None  # object [n] of str, exactly as sent, when the request sent ids
    times: np.ndarray | None  # float64 [n] when the request sent timestamps
    # consecutive requests joined into this one: scored as one only if, at its turn, its
    # entities fit the per-entity state without evictions (``ModelRuntime``, ``JoinEvicts``)
    joined: bool = False

    @cached_property
    def groups(self) -> EntityGroups | None:
        """Rows per entity, grouped once for the time checks, windows, smoothing and alerts."""
        return None if self.entities is None else entity_groups(self.entities)


def concat_decoded(parts: Sequence[Decoded], joined: bool = False) -> Decoded:
    """Consecutive requests as one, rows in order. All parts must agree on whether they carry
    entity ids and timestamps (``can_concat``). ``joined``: see ``Decoded.joined``."""
    if len(parts) == 1:
        return parts[0]
    entities = [p.entities for p in parts if p.entities is not None]
    times = [p.times for p in parts if p.times is not None]
    return Decoded(
        rows=np.concatenate([p.rows for p in parts]),
        entities=np.concatenate(entities) if entities else None,
        times=np.concatenate(times) if times else None,
        joined=joined,
    )


class JoinEvicts(RuntimeError):
    """Joined requests (``Decoded.joined``) whose entities no longer fit without evictions at
    their turn: score the parts one by one instead, which evicts between them."""


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
    thresholds: np.ndarray | None = None  # each row's, where the policy has one per entity

    @cached_property
    def n_anomalies(self) -> int:
        """Rows flagged (after smoothing)."""
        return int(np.count_nonzero(self.flags))

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
                thresholds=None if self.thresholds is None else self.thresholds[start:end],
            ))
            start = end
        return out


class ServedModel(Protocol):
    """What a request is checked against: the model serving it (``ModelRuntime``)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def features(self) -> Sequence[str]: ...
    @property
    def n_features(self) -> int: ...
    @property
    def max_rows(self) -> int: ...
    @property
    def keeps_state(self) -> bool: ...
    @property
    def state_description(self) -> str: ...


class ScoreFields(Protocol):
    """The fields of a Score request that scoring reads (``scoring_pb2.ScoreRequest`` has
    them; the transport hands the message over as it is)."""

    @property
    def model(self) -> str: ...
    @property
    def n_rows(self) -> int: ...
    @property
    def n_features(self) -> int: ...
    @property
    def features(self) -> bytes: ...
    @property
    def entity_ids(self) -> Sequence[str]: ...
    @property
    def timestamps(self) -> Sequence[float]: ...


def decode(
    served: ServedModel, request: ScoreFields, entity_ids: Sequence[str] | None = None
) -> Decoded:
    """Check a request and view its bytes as rows (no copy); raises RequestError. The sizes of
    the entity ids are the caller's to check first (``check_metadata``, whose checked list is
    passed as ``entity_ids``; default: the request's own)."""
    model, n_rows, n_features = request.model, request.n_rows, request.n_features
    data, timestamps = request.features, request.timestamps
    if entity_ids is None:
        entity_ids = request.entity_ids
    if model and model != served.name:
        raise RequestError(
            INVALID_ARGUMENT,
            f"model: unknown model {quoted(model)}; this server serves {served.name!r} "
            "(leave 'model' empty to use it)",
        )
    if n_rows == 0:
        raise RequestError(INVALID_ARGUMENT, "n_rows: empty batch; send at least one row")
    if n_rows > served.max_rows:
        raise RequestError(
            RESOURCE_EXHAUSTED,
            f"n_rows: {n_rows} rows exceed the limit of {served.max_rows} rows per request; "
            "split the batch",
        )
    if n_features != served.n_features:
        raise RequestError(
            INVALID_ARGUMENT,
            f"n_features: got {n_features}, model {served.name!r} v{served.version} expects "
            f"{served.n_features} ({', '.join(served.features)})",
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
            f"features: row {bad[0]}, feature {served.features[bad[1]]!r} is "
            f"{rows[bad[0], bad[1]]}; features must be finite numbers (impute or drop "
            "missing values before scoring)",
        )
    entities = None
    if len(entity_ids):
        _one_per_row("entity_ids", "ids", len(entity_ids), n_rows)
        ids = id_list(entity_ids)
        if not all(ids):
            i = next(i for i, e in enumerate(ids) if not e)
            raise RequestError(
                INVALID_ARGUMENT,
                f"entity_ids: row {i} has an empty entity id; send a non-empty id per row",
            )
        entities = entity_array(ids)
    elif served.keeps_state:
        raise RequestError(
            INVALID_ARGUMENT,
            f"entity_ids: model {served.name!r} keeps per-entity state "
            f"({served.state_description}); send one entity id per row so each source's rows "
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
