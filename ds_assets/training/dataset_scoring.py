"""Dataset scoring: a whole frame in memory, or a stored table streamed chunk by chunk.

Both run one ``TableScorer``: it scores consecutive chunks of a table exactly as the whole table
would be scored, carrying across chunk boundaries what crosses them (each entity's last time for
the time-order check, its last ``W - 1`` rows for a temporal model's windows, its flag-smoothing
state). ``score_table`` streams a Parquet file's record batches through it and writes the scored
rows as they come, so a 10M-row day is scored in memory set by the chunk, not the day.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ds_assets.telemetry.schema import ANOMALY_TYPE, ENTITY_COLUMNS, LABEL, TIMESTAMP
from ds_assets.training.datasets import DatasetError
from ds_serving.atomic import atomic_path
from ds_serving.bundle import Bundle
from ds_serving.policy import ScoringPolicy
from ds_serving.scoring import Scorer, ScoringInputError, score_rows
from ds_serving.smoothing import StreamingSmoother
from ds_serving.threads import SCORING, thread_policy

ENTITY = "host_id"
KEPT = (TIMESTAMP, *ENTITY_COLUMNS, LABEL, ANOMALY_TYPE)  # source columns a scored row keeps
TABLE_BATCH_ROWS = 262_144  # rows per record batch read from a stored table


def dataset_scorer(bundle: Bundle, backend: str = "cpu") -> Scorer:
    """A scorer for dataset scoring (assets, gate, reports): the bundle's policy, the process's
    thread count (``ds_serving.threads``) and no spinning, so a busy machine slows it down
    without stalling it."""
    return Scorer.from_bundle(bundle, backend=backend,
                              intra_op_threads=thread_policy(SCORING).threads, allow_spinning=False)


def check_time_order(frame: pd.DataFrame, entity: str = ENTITY, first_row: int = 0) -> None:
    """Refuse rows that go back in time within an entity: temporal windows, flag smoothing and
    alerts read each entity's rows in order, and would be silently wrong on shuffled rows.
    ``first_row``: the frame's first row number in its table (for the message)."""
    if TIMESTAMP not in frame.columns or entity not in frame.columns or len(frame) < 2:
        return
    hosts = pd.factorize(frame[entity])[0]
    times = frame[TIMESTAMP].to_numpy("datetime64[ns]").view(np.int64)
    order = np.argsort(hosts, kind="stable")  # O(n) on rows already grouped by entity
    h, t = hosts[order], times[order]
    back = np.flatnonzero((h[1:] == h[:-1]) & (t[1:] < t[:-1]))
    if back.size:
        _out_of_order(frame, entity, int(order[back[0] + 1]), first_row)


def _out_of_order(frame: pd.DataFrame, entity: str, row: int, first_row: int) -> None:
    raise DatasetError(
        f"row {first_row + row} ({entity} {frame[entity].iloc[row]!r}, "
        f"{frame[TIMESTAMP].iloc[row]}) is earlier than the row before it of the same {entity}: "
        f"rows must be in time order within each {entity}; sort them by ({entity}, {TIMESTAMP}) "
        "first"
    )


class TableScorer:
    """Scores the consecutive chunks of one table as ``score_frame`` scores the whole of it.

    ``is_anomaly`` holds the deployed flags of ``policy`` (default: the scorer's, i.e. the
    bundle's): threshold, re-baselining and k-of-n per host, rows time-ordered within each host,
    as the live scorer applies them. With smoothing, ``raw_is_anomaly`` is the plain
    ``score > threshold``. A what-if ``policy`` is the caller's to report as such."""

    def __init__(self, scorer: Scorer, policy: ScoringPolicy | None = None,
                 chunk_rows: int = 65_536) -> None:
        self.scorer = scorer
        self.policy = policy or scorer.policy
        self.chunk_rows = chunk_rows
        self.rows_seen = 0
        self._last_time: dict[Hashable, int] = {}
        self._tail_keys: np.ndarray | None = None  # temporal: each entity's last W - 1 rows
        self._tail_rows: np.ndarray | None = None
        # a whole table's entities all stay: nothing is evicted between chunks
        self._smoother = (StreamingSmoother(self.policy.smoothing, max_entities=sys.maxsize)
                          if self.policy.smoothing.enabled else None)
        self._names = np.asarray([*scorer.features, None], dtype=object)  # -1: unscored
        self._codes: dict[Hashable, int] = {}

    def _entity_codes(self, ids: pd.Series) -> np.ndarray:
        """One integer per entity, the same in every chunk: per-entity state (windows, flag
        smoothing) groups integers in C where string ids would cost Python per row."""
        local, uniques = pd.factorize(ids, use_na_sentinel=False)
        table = np.fromiter((self._codes.setdefault(u, len(self._codes)) for u in uniques),
                            dtype=np.int64, count=len(uniques))
        return table[local]

    def score(self, frame: pd.DataFrame, last: bool = False) -> pd.DataFrame:
        """The next chunk's scored rows: ids and labels kept, score columns added. ``last``:
        no chunk follows (what would cross into the next one is not kept)."""
        first_row = self.rows_seen
        missing = [f for f in self.scorer.features if f not in frame.columns]
        if missing:
            raise DatasetError(
                f"rows lack feature column(s) {missing} that {self.scorer.label} needs "
                f"({list(self.scorer.features)})"
            )
        has_entity = ENTITY in frame.columns
        self._check_time_order(frame, first_row, last)
        entities = self._entity_codes(frame[ENTITY]) if has_entity else None
        rows = frame[list(self.scorer.features)].to_numpy(np.float32)
        try:
            scores, top_feature, top_group = self._scores(rows, entities, last)
        except ScoringInputError as exc:
            if first_row == 0:
                raise
            raise ScoringInputError(f"in the chunk from row {first_row}: {exc}") from exc
        keep = [c for c in KEPT if c in frame.columns]
        out = frame[keep].reset_index(drop=True)
        out["score"] = scores
        raw = self.policy.raw_flags(scores)
        if self._smoother is not None:
            out["raw_is_anomaly"] = raw
            out["is_anomaly"] = self._smoother.apply_scores(
                scores, self.policy.threshold,
                entities if entities is not None else np.zeros(len(scores), np.int8))
        else:
            out["is_anomaly"] = raw
        out["top_feature"] = self._names[top_feature]
        if top_group is not None:
            out["top_group"] = top_group
        out["model_version"] = self.scorer.version or ""
        self.rows_seen += len(frame)
        return out

    def _check_time_order(self, frame: pd.DataFrame, first_row: int, last: bool) -> None:
        """Within the chunk, and each entity's first row against its last of earlier chunks."""
        if TIMESTAMP not in frame.columns or ENTITY not in frame.columns or not len(frame):
            return
        check_time_order(frame, ENTITY, first_row)
        if last and not self._last_time:
            return  # a whole table in one chunk: nothing before it, nothing after
        times = pd.Series(frame[TIMESTAMP].to_numpy("datetime64[ns]").view(np.int64))
        ids = frame[ENTITY].to_numpy()
        by_entity = times.groupby(ids, sort=False)
        if self._last_time:
            firsts = by_entity.head(1)  # each entity's first row in this chunk
            at = firsts.index.to_numpy()
            before = np.array([self._last_time.get(k, np.iinfo(np.int64).min) for k in ids[at]],
                              dtype=np.int64)
            back = np.flatnonzero(firsts.to_numpy() < before)
            if back.size:
                _out_of_order(frame, ENTITY, int(at[back[0]]), first_row)
        if not last:
            self._last_time.update(by_entity.last().to_dict())

    def _scores(
        self, rows: np.ndarray, entities: np.ndarray | None, last: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        window = self.scorer.window
        if window is None:
            batch = score_rows(self.scorer, rows, entities, top=True, chunk_rows=self.chunk_rows)
            assert batch.top_feature is not None
            return batch.scores, batch.top_feature, batch.top_group
        keys = np.zeros(len(rows), np.int8) if entities is None else np.asarray(entities)
        carried = 0
        if self._tail_keys is not None and len(self._tail_keys):
            carried = len(self._tail_keys)
            keys = np.concatenate([self._tail_keys, keys])
            rows = np.concatenate([self._tail_rows, rows])
        batch = score_rows(self.scorer, rows, keys, top=True, chunk_rows=self.chunk_rows,
                           from_row=carried)
        assert batch.top_feature is not None
        if not last:  # each entity's last W - 1 rows (carried ones too) open the next windows
            from_end = pd.Series(keys).groupby(keys, sort=False).cumcount(ascending=False)
            tail = (from_end < window - 1).to_numpy()
            self._tail_keys, self._tail_rows = keys[tail], rows[tail]
        top_group = None if batch.top_group is None else batch.top_group[carried:]
        return batch.scores[carried:], batch.top_feature[carried:], top_group


def score_frame(
    scorer: Scorer,
    frame: pd.DataFrame,
    chunk_rows: int = 65_536,
    policy: ScoringPolicy | None = None,
) -> pd.DataFrame:
    """Score every row of a frame in chunks (bounded memory); keeps ids/labels, adds score
    columns (``TableScorer``)."""
    return TableScorer(scorer, policy, chunk_rows).score(frame, last=True)


def _scored_schema(source: pa.Schema, scorer: Scorer, policy: ScoringPolicy) -> pa.Schema:
    """The columns ``TableScorer`` writes, typed up front: a batch whose ``top_feature`` is
    all None would otherwise make a null-typed column that the next batch cannot join."""
    fields = [source.field(c) for c in KEPT if c in source.names]
    fields.append(pa.field("score", pa.float32()))
    if policy.smoothing.enabled:
        fields.append(pa.field("raw_is_anomaly", pa.bool_()))
    fields += [pa.field("is_anomaly", pa.bool_()), pa.field("top_feature", pa.string())]
    if scorer.groups.any_declared:
        fields.append(pa.field("top_group", pa.string()))
    fields.append(pa.field("model_version", pa.string()))
    return pa.schema(fields)


def score_table(
    scorer: Scorer,
    source: str | Path,
    target: str | Path,
    *,
    batch_rows: int = TABLE_BATCH_ROWS,
    chunk_rows: int = 65_536,
    policy: ScoringPolicy | None = None,
    each: Callable[[pd.DataFrame], None] | None = None,
) -> int:
    """Score a Parquet table record batch by record batch into ``target`` (Parquet), which
    appears complete or not at all; ``each`` sees every scored batch (running summaries).
    Returns the rows scored. Memory is set by ``batch_rows``, not by the table."""
    source = Path(source)
    table = pq.ParquetFile(source)
    names = table.schema_arrow.names
    missing = [f for f in scorer.features if f not in names]
    if missing:
        raise DatasetError(
            f"{source.name} lacks feature column(s) {missing} that {scorer.label} needs "
            f"({list(scorer.features)})"
        )
    if table.metadata.num_rows == 0:
        raise ScoringInputError(f"{source.name} has no rows to score")
    columns = [c for c in KEPT if c in names] + [f for f in scorer.features if f not in KEPT]
    chunks = TableScorer(scorer, policy, chunk_rows)
    schema = _scored_schema(table.schema_arrow, scorer, chunks.policy)
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for batch in table.iter_batches(batch_size=batch_rows, columns=columns):
            scored = chunks.score(batch.to_pandas())
            writer.write_table(pa.Table.from_pandas(scored, schema=schema, preserve_index=False))
            if each is not None:
                each(scored)
    return chunks.rows_seen
