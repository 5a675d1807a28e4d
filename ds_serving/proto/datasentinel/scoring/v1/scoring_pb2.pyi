from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoreRequest(_message.Message):
    __slots__ = ("model", "n_rows", "n_features", "features", "entity_ids", "timestamps", "explain", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ENTITY_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    n_rows: int
    n_features: int
    features: bytes
    entity_ids: _containers.RepeatedScalarFieldContainer[str]
    timestamps: _containers.RepeatedScalarFieldContainer[float]
    explain: bool
    request_id: str
    def __init__(self, model: _Optional[str] = ..., n_rows: _Optional[int] = ..., n_features: _Optional[int] = ..., features: _Optional[bytes] = ..., entity_ids: _Optional[_Iterable[str]] = ..., timestamps: _Optional[_Iterable[float]] = ..., explain: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class AlertEvent(_message.Message):
    __slots__ = ("entity_id", "kind", "at", "opened_at", "peak_score", "row", "top_group")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[AlertEvent.Kind]
        OPEN: _ClassVar[AlertEvent.Kind]
        CLOSE: _ClassVar[AlertEvent.Kind]
    KIND_UNSPECIFIED: AlertEvent.Kind
    OPEN: AlertEvent.Kind
    CLOSE: AlertEvent.Kind
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    PEAK_SCORE_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    TOP_GROUP_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    kind: AlertEvent.Kind
    at: float
    opened_at: float
    peak_score: float
    row: int
    top_group: str
    def __init__(self, entity_id: _Optional[str] = ..., kind: _Optional[_Union[AlertEvent.Kind, str]] = ..., at: _Optional[float] = ..., opened_at: _Optional[float] = ..., peak_score: _Optional[float] = ..., row: _Optional[int] = ..., top_group: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("model", "model_version", "n_rows", "scores", "flags", "n_anomalies", "feature_errors", "alerts", "request_id", "n_scored")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    N_ANOMALIES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    N_SCORED_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    n_rows: int
    scores: bytes
    flags: bytes
    n_anomalies: int
    feature_errors: bytes
    alerts: _containers.RepeatedCompositeFieldContainer[AlertEvent]
    request_id: str
    n_scored: int
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., n_rows: _Optional[int] = ..., scores: _Optional[bytes] = ..., flags: _Optional[bytes] = ..., n_anomalies: _Optional[int] = ..., feature_errors: _Optional[bytes] = ..., alerts: _Optional[_Iterable[_Union[AlertEvent, _Mapping]]] = ..., request_id: _Optional[str] = ..., n_scored: _Optional[int] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "kind", "features", "window", "threshold", "backend", "backend_reason", "loaded_at", "loaded_at_unix", "max_rows_per_request", "alerting_json", "smoothing_json", "created_at", "feature_mean", "feature_std", "feature_groups_json", "promoted_at", "promotion_reason", "threshold_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_REASON_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ALERTING_JSON_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FEATURE_MEAN_FIELD_NUMBER: _ClassVar[int]
    FEATURE_STD_FIELD_NUMBER: _ClassVar[int]
    FEATURE_GROUPS_JSON_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_AT_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_REASON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    kind: str
    features: _containers.RepeatedScalarFieldContainer[str]
    window: int
    threshold: float
    backend: str
    backend_reason: str
    loaded_at: str
    loaded_at_unix: float
    max_rows_per_request: int
    alerting_json: str
    smoothing_json: str
    created_at: str
    feature_mean: _containers.RepeatedScalarFieldContainer[float]
    feature_std: _containers.RepeatedScalarFieldContainer[float]
    feature_groups_json: str
    promoted_at: str
    promotion_reason: str
    threshold_json: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., kind: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., window: _Optional[int] = ..., threshold: _Optional[float] = ..., backend: _Optional[str] = ..., backend_reason: _Optional[str] = ..., loaded_at: _Optional[str] = ..., loaded_at_unix: _Optional[float] = ..., max_rows_per_request: _Optional[int] = ..., alerting_json: _Optional[str] = ..., smoothing_json: _Optional[str] = ..., created_at: _Optional[str] = ..., feature_mean: _Optional[_Iterable[float]] = ..., feature_std: _Optional[_Iterable[float]] = ..., feature_groups_json: _Optional[str] = ..., promoted_at: _Optional[str] = ..., promotion_reason: _Optional[str] = ..., threshold_json: _Optional[str] = ...) -> None: ...
