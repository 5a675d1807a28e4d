"""Client of the gRPC scorer: numpy in, numpy out, over the float32-bytes wire format."""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ds_serving.alerting import epoch_seconds
from ds_serving.proto import scoring_pb2, scoring_pb2_grpc

DEFAULT_TARGET = "localhost:50051"
_F32 = np.dtype("<f4")


@dataclass(frozen=True)
class Alert:
    entity: str
    kind: str  # "open" | "close"
    at: float
    opened_at: float
    peak_score: float
    row: int
    top_group: str = ""  # with explain and declared feature groups


@dataclass(frozen=True)
class ScoreResult:
    scores: np.ndarray  # float32 [n]; NaN where a temporal model has no full window yet
    flags: np.ndarray  # bool [n]
    feature_errors: np.ndarray | None  # float32 [n, f] when explain was asked
    alerts: list[Alert]
    model_version: str
    n_scored: int
    request_id: str


def encode_request(
    rows: np.ndarray,
    entities: Sequence[Hashable] | np.ndarray | None = None,
    timestamps: Sequence[float] | np.ndarray | None = None,
    *,
    explain: bool = False,
    model: str = "",
    request_id: str = "",
) -> scoring_pb2.ScoreRequest:
    """Build a request from a [n, f] array (converted to little-endian float32 once).
    ``entities``: ids (bytes are read as UTF-8); ``timestamps``: epoch seconds, or datetime64
    values (converted to epoch seconds). A frame with named columns goes through
    ``ScorerClient.score``, which orders them as the model's features."""
    if hasattr(rows, "columns"):  # its column order is its own, not the model's
        raise ValueError("rows has named columns: pass rows[features] in the model's feature "
                         "order (ScorerClient.score does it, from GetModelInfo)")
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise ValueError(f"rows must be a 2-D array [n_rows, n_features], got shape {rows.shape}")
    data = np.ascontiguousarray(rows, dtype=_F32)
    request = scoring_pb2.ScoreRequest(
        model=model,
        n_rows=data.shape[0],
        n_features=data.shape[1],
        features=data.tobytes(),
        explain=explain,
        request_id=request_id,
    )
    if entities is not None:
        # ids as given: a list through np.asarray would become a fixed-width string array
        # (rows x longest id x 4 bytes) that strips trailing NULs
        values = entities.tolist() if isinstance(entities, np.ndarray) else list(entities)
        request.entity_ids.extend([
            e if isinstance(e, str) else e.decode() if isinstance(e, bytes) else str(e)
            for e in values])
    if timestamps is not None:
        request.timestamps.extend(_epoch_seconds(timestamps).tolist())
    return request


def _epoch_seconds(timestamps: Sequence[float] | np.ndarray) -> np.ndarray:
    """Epoch seconds from numbers as given, or from datetime64 values (naive ones as UTC):
    datetime64[ns] cast to float was nanoseconds, 1.7e18 'seconds'."""
    values = np.asarray(timestamps)
    if values.dtype.kind == "O" and len(values) and hasattr(values.flat[0], "timestamp"):
        # datetime or pandas Timestamp objects (a tz-aware column): their own epoch seconds
        return np.array([v.timestamp() for v in values.ravel()], np.float64)
    try:
        return epoch_seconds(values if values.dtype.kind != "O" else values.astype(np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"timestamps must be epoch seconds or datetime64 values ({exc})") from None


def decode_response(response: scoring_pb2.ScoreResponse) -> ScoreResult:
    n = response.n_rows
    errors = None
    if response.feature_errors:
        errors = np.frombuffer(response.feature_errors, dtype=_F32).reshape(n, -1)
    return ScoreResult(
        scores=np.frombuffer(response.scores, dtype=_F32),
        flags=np.frombuffer(response.flags, dtype=np.bool_),
        feature_errors=errors,
        alerts=[
            Alert(
                entity=a.entity_id,
                kind="open" if a.kind == scoring_pb2.AlertEvent.OPEN else "close",
                at=a.at,
                opened_at=a.opened_at,
                peak_score=a.peak_score,
                row=a.row,
                top_group=a.top_group,
            )
            for a in response.alerts
        ],
        model_version=response.model_version,
        n_scored=response.n_scored,
        request_id=response.request_id,
    )


def _read(path: str | os.PathLike[str] | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def make_channel(
    target: str = DEFAULT_TARGET,
    *,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    server_name: str | None = None,
    max_message_bytes: int = 64 * 1024 * 1024,
    tls: bool = False,
) -> grpc.Channel:
    """A channel; TLS when a CA (or ``tls``) is given, mutual TLS with a client cert + key."""
    options: list[tuple[str, Any]] = [
        # the answer to a request this client sent is sized by that request (explain adds
        # feature errors): never refuse it after the server committed its rows
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if (tls_cert is None) != (tls_key is None):  # gRPC's C core aborts the process on a cert
        raise ValueError("mutual TLS needs both a client certificate and its key (--tls-cert "
                         "and --tls-key); give both or neither")
    if tls or tls_ca is not None or tls_cert is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls_ca),
            private_key=_read(tls_key),
            certificate_chain=_read(tls_cert),
        )
        return grpc.secure_channel(target, credentials, options=options)
    return grpc.insecure_channel(target, options=options)


class _CountedRequests:
    """The request messages as gRPC pulls them, counted, and whether they ran out."""

    def __init__(self, requests: Iterable[scoring_pb2.ScoreRequest]) -> None:
        self._requests = iter(requests)
        self.count = 0
        self.finished = False

    def __iter__(self) -> _CountedRequests:
        return self

    def __next__(self) -> scoring_pb2.ScoreRequest:
        try:
            request = next(self._requests)
        except StopIteration:
            self.finished = True
            raise
        self.count += 1
        return request


class ScorerClient:
    """Synchronous client; ``token`` is sent as ``authorization: Bearer <token>``."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        timeout: float | None = 30.0,
        channel: grpc.Channel | None = None,
        **channel_options: Any,
    ) -> None:
        self.channel = channel or make_channel(target, **channel_options)
        self._stub = scoring_pb2_grpc.ScorerStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout = timeout
        self._features: dict[str, list[str]] = {}  # model -> its feature order (a frame's)

    def score(
        self,
        rows: np.ndarray,
        entities: Sequence[Hashable] | np.ndarray | None = None,
        timestamps: Sequence[float] | np.ndarray | None = None,
        *,
        explain: bool = False,
        model: str = "",
    ) -> ScoreResult:
        if hasattr(rows, "columns"):  # a frame: the model's features, in its order
            rows = self._in_feature_order(rows, model)
        request = encode_request(rows, entities, timestamps, explain=explain, model=model)
        return decode_response(self.score_raw(request))

    def _in_feature_order(self, frame: Any, model: str) -> np.ndarray:
        """A frame's feature columns as the served model orders them; its other columns (ids,
        times, labels) are left out. The order is read once per model: a reload that changes
        the feature list is refused by the server."""
        features = self._features.get(model)
        if features is None:
            features = self._features[model] = list(self.info(model).features)
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise ValueError(f"rows lack feature column(s) {missing} that the served model "
                             f"needs (it reads {features}; the frame has {list(frame.columns)})")
        return np.asarray(frame[features])

    def score_raw(self, request: scoring_pb2.ScoreRequest) -> scoring_pb2.ScoreResponse:
        response: scoring_pb2.ScoreResponse = self._stub.Score(
            request, timeout=self.timeout, metadata=self._metadata
        )
        return response

    def score_stream(
        self, requests: Iterable[scoring_pb2.ScoreRequest], timeout: float | None = None
    ) -> Iterator[ScoreResult]:
        """One result per request message, in order, over one long-lived stream.

        A draining server closes the connection as soon as its last stream ends, and the close
        can overtake that stream's final status: gRPC then reports UNAVAILABLE ("Stream
        removed") although every message was answered. When the requests were all sent and
        all answered, nothing was lost and the stream ends normally; otherwise the error
        stands."""
        sent = _CountedRequests(requests)
        answered = 0
        try:
            for response in self._stub.ScoreStream(
                sent, timeout=timeout, metadata=self._metadata
            ):
                answered += 1
                yield decode_response(response)
        except grpc.RpcError as exc:
            if not (exc.code() == grpc.StatusCode.UNAVAILABLE and sent.finished
                    and answered == sent.count):
                raise

    def info(self, model: str = "") -> scoring_pb2.ModelInfo:
        info: scoring_pb2.ModelInfo = self._stub.GetModelInfo(
            scoring_pb2.ModelInfoRequest(model=model), timeout=self.timeout,
            metadata=self._metadata,
        )
        return info

    def health(self, service: str = "") -> str:
        """SERVING / NOT_SERVING / ... for ``service`` ("" = the whole server)."""
        response = self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ScorerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
