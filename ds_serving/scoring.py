"""The scoring core: one ONNX session over a verified bundle, shared by dataset and live scoring.

Flags use the deployed rule ``score > threshold`` (strictly greater) everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ds_serving.bundle import Bundle
from ds_serving.engines import BACKENDS as ENGINE_BACKENDS
from ds_serving.engines import Engine, select_engine
from ds_serving.groups import FeatureGroups
from ds_serving.policy import ScoringPolicy
from ds_serving.windows import WindowIndex, iter_windows, window_index

log = logging.getLogger(__name__)

BACKENDS = ENGINE_BACKENDS


class ScoringInputError(ValueError):
    """The rows sent for scoring are malformed; the message names the problem and the fix."""


@dataclass(frozen=True)
class ScoreBatch:
    scores: np.ndarray  # float32 [n]
    flags: np.ndarray  # bool [n]
    feature_errors: np.ndarray | None  # float32 [n, n_features] when explain=True
    top_feature: np.ndarray | None = None  # int16 [n] feature index, -1 unscored (top=True)
    top_group: np.ndarray | None = None  # object [n] declared group name (top=True, groups)


def select_providers(backend: str) -> tuple[list[str], str]:
    """onnxruntime providers for ``backend`` (ORT only; ``select_engine`` adds TensorRT)."""
    import onnxruntime as ort

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "cpu":
        return ["CPUExecutionProvider"], "cpu requested"
    if "CUDAExecutionProvider" in set(ort.get_available_providers()):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDA provider available"
    return ["CPUExecutionProvider"], "onnxruntime has no CUDAExecutionProvider; using CPU"


class Scorer:
    """Scores float32 rows with an ONNX scoring graph and applies a threshold.

    The graph runs on the best backend at or below ``backend`` (``auto | tensorrt | cuda |
    cpu``, see ``ds_serving.engines``); ``plan`` is the bundle's optional TensorRT engine.
    """

    def __init__(
        self,
        model: bytes | Path,
        *,
        features: Sequence[str],
        threshold: float,
        label: str = "model",
        version: str | None = None,
        window: int | None = None,
        backend: str = "auto",
        intra_op_threads: int = 0,
        plan: Path | None = None,
        allow_spinning: bool = True,
        policy: ScoringPolicy | None = None,
        groups: FeatureGroups | None = None,
    ) -> None:
        self.engine: Engine = select_engine(
            model,
            n_features=len(features),
            window=window,
            backend=backend,
            plan=plan,
            intra_op_threads=intra_op_threads,
            allow_spinning=allow_spinning,
        )
        self.backend = self.engine.name
        self.backend_reason = self.engine.reason
        self.features = tuple(features)
        # the bundle's decision (threshold + smoothing + alerting); a bare threshold otherwise
        self.policy = policy if policy is not None else ScoringPolicy(float(threshold))
        self.threshold = self.policy.threshold
        # the groups explanations add feature errors up by (each feature alone without any)
        self.groups = groups if groups is not None else FeatureGroups.build(self.features, None)
        self.label = label
        self.version = version
        self.window = window
        log.info("loaded %s on %s (%s)", label, self.backend, self.backend_reason)

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        backend: str = "auto",
        intra_op_threads: int = 0,
        allow_spinning: bool = True,
        graph: bytes | None = None,
    ) -> Scorer:
        """``graph``: the bundle's scoring graph as loaded by the caller (with outputs added,
        e.g. ``with_top_feature``); by default the bundle's model file."""
        m = bundle.manifest
        return cls(
            bundle.model_path if graph is None else graph,
            features=m.features,
            threshold=m.threshold,
            label=f"model {m.name!r} v{m.version}",
            version=m.version,
            window=m.window,
            backend=backend,
            intra_op_threads=intra_op_threads,
            plan=bundle.engine_path,
            allow_spinning=allow_spinning,
            policy=m.policy,
            groups=m.groups,
        )

    @property
    def n_features(self) -> int:
        return len(self.features)

    def validate(self, rows: np.ndarray, *, windowed: bool = False) -> np.ndarray:
        """Return ``rows`` as contiguous float32 [n, n_features] (or [n, W, n_features] when
        ``windowed``) or raise ScoringInputError."""
        rows = np.asarray(rows)
        if windowed:
            if rows.ndim != 3 or rows.shape[1] != self.window:
                raise ScoringInputError(
                    f"windows must be a 3-D array [n, {self.window}, {self.n_features}], "
                    f"got shape {rows.shape}"
                )
        elif rows.ndim != 2:
            raise ScoringInputError(
                f"rows must be a 2-D array [n_rows, {self.n_features}], got shape {rows.shape}"
            )
        if rows.shape[0] == 0:
            raise ScoringInputError("no rows to score: send at least one row")
        if rows.shape[-1] != self.n_features:
            raise ScoringInputError(
                f"rows have {rows.shape[-1]} features, {self.label} expects "
                f"{self.n_features}: {list(self.features)}"
            )
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        finite = np.isfinite(rows)
        if not finite.all():
            bad = tuple(np.argwhere(~finite)[0])
            raise ScoringInputError(
                f"row {bad[0]}, feature {self.features[bad[-1]]!r} is {rows[bad]}: "
                "features must be finite numbers (impute or drop missing values before scoring)"
            )
        return rows

    @property
    def temporal(self) -> bool:
        return self.window is not None

    def score(self, rows: np.ndarray, *, explain: bool = False,
              entities: Sequence[Hashable] | np.ndarray | None = None) -> ScoreBatch:
        """Score model inputs: rows [n, f], or windows [n, W, f] for a temporal model;
        ``entities`` (one per input) flag against each entity's own threshold where the policy
        has them."""
        rows = self.validate(rows, windowed=self.temporal)
        scores, errors = self.run(rows, explain=explain)
        return ScoreBatch(scores=scores, flags=self.policy.raw_flags(scores, entities),
                          feature_errors=errors)

    def run_top(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``run`` keeping only each row's largest-error feature: (scores float32 [n], feature
        index [n]); computed in the graph when it has the output (``TOP_OUTPUT``)."""
        scores, top = self.engine.run_top(inputs)
        return _scored(scores), top

    def run(
        self, inputs: np.ndarray, *, explain: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Unchecked fast path for callers that validated already (the gRPC server): contiguous
        float32 model inputs in, (scores float32 [n], feature errors [n, f] or None) out."""
        scores, errors = self.engine.run(inputs, explain)
        return (
            _scored(scores),
            None if errors is None else np.asarray(errors, dtype=np.float32),
        )


def ranked(scores: np.ndarray) -> np.ndarray:
    """Scores as float64 for ranking and distributions: +inf (``_scored``'s mark of a score the
    graph could not compute) as the largest float32, so it counts and ranks above every finite
    score; NaN (no score) stays NaN."""
    values = np.asarray(scores, dtype=np.float64)
    return np.where(np.isposinf(values), float(np.finfo(np.float32).max), values)


def _scored(scores: np.ndarray) -> np.ndarray:
    """The graph's scores as float32, NaN as +inf: every input the graph ran on is scored, and
    NaN there is inf - inf on extreme (finite) features, the most anomalous row there is. NaN
    stays the mark of a row with no score (a temporal model's warm-up), set outside the graph."""
    scores = np.asarray(scores, dtype=np.float32)
    if np.isnan(scores).any():
        scores = np.where(np.isnan(scores), np.float32(np.inf), scores)
    return scores


def score_rows(
    scorer: Scorer,
    rows: np.ndarray,
    entities: Sequence[Hashable] | np.ndarray | None = None,
    *,
    explain: bool = False,
    top: bool = False,
    chunk_rows: int = 65_536,
    from_row: int = 0,
    ids: Sequence[Hashable] | np.ndarray | None = None,
) -> ScoreBatch:
    """Score a table of rows in bounded-memory chunks, point-wise or per-entity windows.

    For a temporal model each row is scored by the window of its entity's last ``W`` rows
    (rows must be time-ordered within each entity); rows before an entity's first full window
    get score NaN and flag False. ``entities=None`` treats all rows as one entity.
    ``entities`` only key the windows (any ids that keep each entity's rows apart); ``flags``
    are ``score > threshold``, each entity's own with ``ids`` (its real entity ids) for a
    per-entity policy.
    ``explain`` keeps every feature error ([n, f]); ``top`` keeps only each row's top feature
    (and declared group), reduced chunk by chunk, which is what dataset scoring needs.
    Rows before ``from_row`` are context only (an earlier chunk's last rows opening a temporal
    model's windows): they are not scored (NaN).
    """
    rows = scorer.validate(np.ascontiguousarray(rows, dtype=np.float32))
    n = len(rows)
    scores = np.full(n, np.nan, dtype=np.float32)
    errors = np.full((n, scorer.n_features), np.nan, np.float32) if explain else None
    top_feature = np.full(n, -1, np.int16) if top else None
    top_group = np.full(n, None, dtype=object) if top and scorer.groups.any_declared else None

    only_top = top and not explain and top_group is None  # the graph's top output will do

    def score_part(at: slice | np.ndarray, inputs: np.ndarray) -> None:
        if only_top:
            assert top_feature is not None
            scores[at], top_feature[at] = scorer.run_top(inputs)
            return
        scores[at], part_errors = scorer.run(inputs, explain=explain or top)
        if part_errors is None:
            return
        if errors is not None:
            errors[at] = part_errors
        if top_feature is not None:
            top_feature[at] = np.argmax(part_errors, axis=1)
        if top_group is not None:
            top_group[at] = scorer.groups.top(part_errors)

    if scorer.window is None:
        for part in iter_chunks(n - from_row, chunk_rows):
            part = slice(part.start + from_row, part.stop + from_row)
            score_part(part, rows[part])
    else:
        keys = np.zeros(n, np.int8) if entities is None else np.asarray(entities)
        if len(keys) != n:
            raise ScoringInputError(f"got {len(keys)} entity ids for {n} rows; send one per row")
        index = window_index(keys, scorer.window)
        if from_row:
            scored = index.ends >= from_row
            index = WindowIndex(index.ends[scored], index.starts[scored])
        per_chunk = max(1, chunk_rows // scorer.window)
        for ends, windows in iter_windows(rows, index, per_chunk):
            score_part(ends, windows)
    return ScoreBatch(scores=scores, flags=scorer.policy.raw_flags(scores, ids),
                      feature_errors=errors,
                      top_feature=top_feature, top_group=top_group)


def iter_chunks(n_rows: int, chunk_rows: int) -> Iterator[slice]:
    """Row slices of at most ``chunk_rows`` so memory stays bounded on large inputs."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    for start in range(0, n_rows, chunk_rows):
        yield slice(start, min(start + chunk_rows, n_rows))
