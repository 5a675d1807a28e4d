"""Dataset scoring: a whole frame in memory, or a stored table streamed chunk by chunk.

Both run one ``TableScorer``: it scores consecutive chunks of a table exactly as the whole table
would be scored, carrying across chunk boundaries what crosses them (each entity's last time for
the time-order check, its last ``W - 1`` rows for a temporal model's windows, its flag-smoothing
state). ``score_table`` streams a Parquet file's record batches through it and writes the scored
rows as they come, so a 10M-row day is scored in memory set by the chunk, not the day. A
``LeadIn`` (the end of the day before) runs through the same scorer first, so that a day
continues where the one before ended, as it does in the live scorer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ds_assets.telemetry.schema import ANOMALY_TYPE, ENTITY_COLUMNS, LABEL, TIMESTAMP
from ds_assets.training.datasets import DatasetError
from ds_assets.training.graph_outputs import with_top_feature
from ds_serving.atomic import atomic_path
from ds_serving.bundle import Bundle
from ds_serving.policy import ScoringPolicy
from ds_serving.scoring import Scorer, ScoringInputError, score_rows
from ds_serving.smoothing import StreamingSmoother, raw_flags
from ds_serving.threads import SCORING, thread_policy

ENTITY = "host_id"
KEPT = (TIMESTAMP, *ENTITY_COLUMNS, LABEL, ANOMALY_TYPE)  # source columns a scored row keeps
TABLE_BATCH_ROWS = 262_144  # rows per record batch read from a stored table
FRAME_PART_ROWS = 262_144  # rows per part of a frame in memory (``TableScorer.score``)


def dataset_scorer(bundle: Bundle, backend: str = "cpu") -> Scorer:
    """A scorer for dataset scoring (assets, gate, reports): the bundle's policy, the process's
    thread count (``ds_serving.threads``) and no spinning, so a busy machine slows it down
    without stalling it. Its graph also gives each row's top feature, so the [n, f] feature
    errors never leave onnxruntime."""
    return Scorer.from_bundle(bundle, backend=backend,
                              intra_op_threads=thread_policy(SCORING).threads, allow_spinning=False,
                              graph=with_top_feature(bundle.model_path.read_bytes()))


@dataclass(frozen=True)
class _Chunk:
    """One chunk's scores and flags, before they become columns."""

    scores: np.ndarray
    raw: np.ndarray
    flags: np.ndarray | None  # smoothed (None: the raw flags are the flags)
    top_feature: np.ndarray  # feature index, -1 unscored
    top_group: np.ndarray | None


def _joined(chunks: list[_Chunk]) -> _Chunk:
    """Consecutive chunks as one."""
    if len(chunks) == 1:
        return chunks[0]

    def join(name: str) -> Any:
        parts = [getattr(c, name) for c in chunks]
        return None if parts[0] is None else np.concatenate(parts)

    return _Chunk(join("scores"), join("raw"), join("flags"), join("top_feature"),
                  join("top_group"))


_NO_TIME = np.iinfo(np.int64).min  # an entity without a latest time yet


def _factorized(ids: pd.Series) -> tuple[np.ndarray, list[Hashable]]:
    """(code of each row, distinct ids); rows without an id are one more id, ``None``, as in
    ``start_batch`` (a separate missing-value pass would cost as much as the hashing)."""
    codes, uniques = pd.factorize(ids)
    distinct: list[Hashable] = list(uniques)
    if len(codes) and codes.min() < 0:
        codes = np.where(codes < 0, len(distinct), codes)
        distinct.append(None)
    return codes, distinct


@dataclass(frozen=True)
class _Started:
    """A chunk whose graph runs on the model thread while the caller prepares the next one."""

    first_row: int
    ids: np.ndarray | None
    model: Future[tuple[np.ndarray, np.ndarray, np.ndarray | None]] | None
    error: DatasetError | None  # found before the graph ran; raised in row order, at finish


@dataclass(frozen=True)
class _StartedBatch:
    chunk: _Started
    columns: dict[str, pa.Array]  # the batch's kept columns, scored ones added at finish


class TableScorer:
    """Scores the consecutive chunks of one table as ``score_frame`` scores the whole of it.

    ``is_anomaly`` holds the deployed flags of ``policy`` (default: the scorer's, i.e. the
    bundle's): threshold, re-baselining and k-of-n per host, rows time-ordered within each host,
    as the live scorer applies them. With smoothing, ``raw_is_anomaly`` is the plain
    ``score > threshold``. A what-if ``policy`` is the caller's to report as such. Chunks come
    as pandas frames (``score``) or Arrow record batches (``score_batch``), never mixed.

    The graph runs on a model thread (onnxruntime releases the GIL), so the Python work around
    it (ids, time-order check, output columns; for a stored table the next batch's read and
    the previous batch's flags) overlaps it: ``start`` a chunk, ``finish`` chunks in order.
    Close it (``with``) to stop the thread."""

    def __init__(self, scorer: Scorer, policy: ScoringPolicy | None = None,
                 chunk_rows: int = 65_536, part_rows: int = FRAME_PART_ROWS) -> None:
        self.scorer = scorer
        self.policy = policy or scorer.policy
        self.chunk_rows = chunk_rows
        self.part_rows = part_rows
        self.rows_seen = 0
        self._codes: dict[Hashable, int] = {}  # entity id -> the integer standing for it
        # the same ids in code order, to look a chunk's distinct ids up at once, in C
        self._index: pd.Index | None = None
        self._own: list[float] = []  # entity code -> its threshold (a per-entity policy)
        self._last_time = np.empty(0, np.int64)  # entity code -> its latest time, ns
        self._timed = False  # whether any entity has a latest time yet
        self._dictionary: tuple[pa.Array, np.ndarray] | None = None  # the last, its codes
        self._tail_keys: np.ndarray | None = None  # temporal: each entity's last W - 1 rows
        self._tail_rows: np.ndarray | None = None
        # a whole table's entities all stay: nothing is evicted between chunks
        self._smoother = (StreamingSmoother(self.policy.smoothing, max_entities=sys.maxsize)
                          if self.policy.smoothing.enabled else None)
        self._names = np.asarray([*scorer.features, None], dtype=object)  # -1: unscored
        self._model = ThreadPoolExecutor(1, thread_name_prefix="ds-model")
        self._row_buffers: list[np.ndarray | None] = [None, None]  # ``_rows_of``
        self._buffer_users: list[Future[Any] | None] = [None, None]
        self._turn = 0
        self._led_in: tuple[str, np.ndarray] | None = None  # name, last times it left

    def __enter__(self) -> TableScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._model.shutdown(wait=True, cancel_futures=True)

    def lead_in(self, rows: Iterable[pa.RecordBatch] | pd.DataFrame,
                name: str = "the lead-in") -> int:
        """Run rows that precede the table (the end of the day before, ``name``; record
        batches, or a frame) through the graph and the flag state, keeping nothing of them but
        the state they leave: each entity's windows, time order, k-of-n, re-baselining and level
        then continue into the table as the live scorer's do. Returns the rows run; the
        table's rows count from 0."""
        if isinstance(rows, pd.DataFrame):
            self._missing(list(rows.columns), f"{name} rows")
            for lo in range(0, len(rows), self.part_rows):
                self._finish(self._start_part(rows.iloc[lo:lo + self.part_rows], last=False))
        else:
            for batch in rows:
                self._finish(self.start_batch(batch).chunk)
        rows, self.rows_seen = self.rows_seen, 0
        self._led_in = (name, self._last_time.copy())
        return rows

    def _coded(self, local: np.ndarray, uniques: Iterable[Hashable]) -> np.ndarray:
        """Global entity codes from a chunk's own codes and its distinct ids: per-entity state
        (windows, flag smoothing) then groups integers in C where string ids would cost Python
        per row."""
        return self._code_table(uniques)[local]

    def _dictionary_codes(self, dictionary: pa.Array) -> np.ndarray:
        """``_code_table`` of an Arrow dictionary's values; the batches of one Parquet column
        chunk (and a file whose row groups meet the same ids in the same order) share one, so
        it is looked up once, not per batch (100,000 ids: ~0.1 s a batch)."""
        if self._dictionary is None or not dictionary.equals(self._dictionary[0]):
            self._dictionary = (dictionary, self._code_table(dictionary.to_pylist()))
        return self._dictionary[1]

    def _code_table(self, uniques: Iterable[Hashable]) -> np.ndarray:
        """The code of each distinct id, in order; ids not seen before get the next codes.
        ``_codes`` (a dict: Python's equality, the ids as they are) decides; ``_index`` (its
        keys as a pandas index, looked up in C) only finds the ids seen before, and a miss
        there always asks the dict."""
        distinct = pd.Index(list(uniques), dtype=object, tupleize_cols=False)
        table = (self._index.get_indexer(distinct) if self._index is not None
                 else np.full(len(distinct), -1, np.intp))
        added = False
        for i in np.flatnonzero(table < 0):  # new ids, or ones the index cannot match
            entity = distinct[i]
            code = self._codes.get(entity)
            if code is None:
                code = self._codes[entity] = len(self._codes)
                added = True
                if self.policy.per_entity:
                    self._own.append(self.policy.threshold_of(entity))
            table[i] = code
        if added:
            index = pd.Index(list(self._codes), dtype=object, tupleize_cols=False)
            # ids pandas holds equal where Python does not (NaN objects): the dict alone
            self._index = index if index.is_unique else None
            if len(self._last_time) < len(self._codes):  # room for every code, doubling
                grown = np.full(max(len(self._codes), 2 * len(self._last_time)),
                                _NO_TIME, np.int64)
                grown[:len(self._last_time)] = self._last_time
                self._last_time = grown
        return table.astype(np.int64)

    def _missing(self, columns: Sequence[str], what: str) -> None:
        missing = [f for f in self.scorer.features if f not in columns]
        if missing:
            raise DatasetError(
                f"{what} lack feature column(s) {missing} that "
                f"{self.scorer.label} needs ({list(self.scorer.features)})"
            )

    def score(self, frame: pd.DataFrame, last: bool = False) -> pd.DataFrame:
        """The next chunk's scored rows: ids and labels kept, score columns added. ``last``:
        no chunk follows (what would cross into the next one is not kept). A large frame goes
        through in parts of ``part_rows``, each part's ids and rows prepared while the
        part before it is in the graph."""
        self._missing(list(frame.columns), "rows")
        n = len(frame)
        done: list[_Chunk] = []
        started: _Started | None = None
        out: pd.DataFrame | None = None
        step = self.part_rows
        for lo in range(0, n, step) if n else [0]:
            following = self._start_part(frame.iloc[lo:lo + step], last and lo + step >= n)
            if started is not None:
                done.append(self._finish(started))
            started = following
            if out is None:  # the kept columns are copied while the first part is scored
                out = frame[[c for c in KEPT if c in frame.columns]].reset_index(drop=True)
        assert started is not None and out is not None
        done.append(self._finish(started))
        chunk = _joined(done)
        out["score"] = chunk.scores
        if chunk.flags is not None:
            out["raw_is_anomaly"] = chunk.raw
        out["is_anomaly"] = chunk.raw if chunk.flags is None else chunk.flags
        out["top_feature"] = self._names[chunk.top_feature]
        if chunk.top_group is not None:
            out["top_group"] = chunk.top_group
        out["model_version"] = self.scorer.version or ""
        return out

    def _start_part(self, part: pd.DataFrame, last: bool) -> _Started:
        rows = np.empty((len(part), len(self.scorer.features)), np.float32)
        for j, name in enumerate(self.scorer.features):  # one copy (a sub-frame made two)
            rows[:, j] = part[name].to_numpy(np.float32)
        ids = None
        if ENTITY in part.columns:
            ids = self._coded(*_factorized(part[ENTITY]))
        times = None
        if TIMESTAMP in part.columns:
            times = part[TIMESTAMP].to_numpy("datetime64[ns]").view(np.int64)
        return self._start(ids, times, rows, last, lambda r: (
            f"{ENTITY} {part[ENTITY].iloc[r]!r}, {part[TIMESTAMP].iloc[r]}"))

    def score_batch(self, batch: pa.RecordBatch, last: bool = False) -> pa.Table:
        """``score`` for an Arrow record batch, answered as an Arrow table: the kept columns
        are the batch's own arrays, and the top feature and model version are dictionary
        arrays, so no column goes through Python objects."""
        return self.finish_batch(self.start_batch(batch, last))

    def start_batch(self, batch: pa.RecordBatch, last: bool = False) -> _StartedBatch:
        """``score_batch`` up to its graph, which then runs on the model thread."""
        names = batch.schema.names
        self._missing(names, "rows")
        ids = None
        columns: dict[str, pa.Array] = {c: batch.column(c) for c in KEPT if c in names}
        if ENTITY in names:
            column = batch.column(ENTITY)
            encoded = (column if pa.types.is_dictionary(column.type)
                       else pc.dictionary_encode(column))
            if _string_ids(batch.schema):  # written as it is encoded: one hash per row, once
                columns[ENTITY] = encoded
            local, table = encoded.indices, self._dictionary_codes(encoded.dictionary)
            if local.null_count:  # rows without an id are one entity more, as in ``score``
                local = pc.fill_null(local, len(table))
                table = np.r_[table, self._code_table([None])]
            ids = table[local.to_numpy(zero_copy_only=False)]
        times = None
        if TIMESTAMP in names:
            times = np.asarray(batch.column(TIMESTAMP).to_numpy(zero_copy_only=False))
            times = times.astype("datetime64[ns]").view(np.int64)
        rows = self._rows_of(batch)
        started = self._start(ids, times, rows, last, lambda r: (
            f"{ENTITY} {batch.column(ENTITY)[r].as_py()!r}, "
            f"{pd.Timestamp(batch.column(TIMESTAMP)[r].as_py())}"))
        self._buffer_users[self._turn ^ 1] = started.model
        return _StartedBatch(started, columns)

    def _rows_of(self, batch: pa.RecordBatch) -> np.ndarray:
        """The batch's features as one float32 [n, f] matrix, in one of two buffers used in
        turn (fresh pages for every batch cost more than the copy): a buffer is written again
        only once the graph that read it has run."""
        n, width = batch.num_rows, len(self.scorer.features)
        user = self._buffer_users[self._turn]
        if user is not None:
            user.exception()  # waits; its error, if any, is raised where it is finished
        buffer = self._row_buffers[self._turn]
        if buffer is None or len(buffer) < n:
            buffer = self._row_buffers[self._turn] = np.empty((n, width), np.float32)
        rows = buffer[:n]
        for j, name in enumerate(self.scorer.features):
            rows[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
        self._turn ^= 1
        return rows

    def finish_batch(self, started: _StartedBatch) -> pa.Table:
        """The scored table of a started batch; batches finish in the order they started."""
        chunk = self._finish(started.chunk)
        columns = started.columns
        columns["score"] = pa.array(chunk.scores, type=pa.float32())
        if chunk.flags is not None:
            columns["raw_is_anomaly"] = pa.array(chunk.raw)
        columns["is_anomaly"] = pa.array(chunk.raw if chunk.flags is None else chunk.flags)
        top = chunk.top_feature.astype(np.int32)
        columns["top_feature"] = pa.DictionaryArray.from_arrays(
            pa.array(top, mask=top < 0), pa.array(list(self.scorer.features), pa.string()))
        if chunk.top_group is not None:
            columns["top_group"] = pa.array(chunk.top_group, type=pa.string())
        columns["model_version"] = pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(len(top), np.int32)), pa.array([self.scorer.version or ""]))
        return pa.table(columns)

    def _start(self, ids: np.ndarray | None, times: np.ndarray | None, rows: np.ndarray,
               last: bool, where: Callable[[int], str]) -> _Started:
        """Submit a chunk's graph to the model thread, then check its time order meanwhile
        (both carry state to the next chunk: the model thread runs chunks in order)."""
        first_row = self.rows_seen
        self.rows_seen += len(rows)
        model = self._model.submit(self._scores, rows, ids, last)
        error = None
        if ids is not None and times is not None:
            try:
                self._check_time_order(ids, times, first_row, last, where)
            except DatasetError as exc:
                error = exc
        return _Started(first_row, ids, model, error)

    def _finish(self, started: _Started) -> _Chunk:
        """A started chunk's scores and flags (smoothing carries state: finish in order)."""
        assert started.model is not None
        if started.error is not None:
            raise started.error
        try:
            scores, top_feature, top_group = started.model.result()
        except ScoringInputError as exc:
            if started.first_row == 0:
                raise
            raise ScoringInputError(f"in the chunk from row {started.first_row}: {exc}") from exc
        ids = started.ids
        thresholds: float | np.ndarray = self.policy.threshold
        if self.policy.per_entity:
            if ids is None:
                raise DatasetError(
                    f"rows have no {ENTITY!r} column, and {self.scorer.label} flags each "
                    f"entity against its own threshold ({len(self.policy.entity_thresholds)} "
                    f"calibrated): add the {ENTITY} column")
            thresholds = np.asarray(self._own, np.float64)[ids]
        raw = raw_flags(scores, thresholds)
        flags = None
        if self._smoother is not None:
            flags = self._smoother.apply_scores(
                scores, thresholds, ids if ids is not None else np.zeros(len(scores), np.int8))
        return _Chunk(scores, raw, flags, top_feature, top_group)

    def _check_time_order(self, ids: np.ndarray, times: np.ndarray, first_row: int, last: bool,
                          where: Callable[[int], str]) -> None:
        """Refuse rows that go back in time within an entity, within the chunk and against the
        entity's last row of earlier chunks: temporal windows, flag smoothing and alerts read
        each entity's rows in order, and would be silently wrong on shuffled rows."""
        if not len(ids):
            return
        order = np.argsort(ids, kind="stable")  # O(n) on rows already grouped by entity
        h, t = ids[order], times[order]
        back = np.flatnonzero((h[1:] == h[:-1]) & (t[1:] < t[:-1]))
        row = int(order[back[0] + 1]) if back.size else None
        if row is None and (self._timed or not last):
            starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
            ends = np.r_[starts[1:], len(h)] - 1
            entities = h[starts]
            if self._timed:  # each entity's first row here against its last before
                back = np.flatnonzero(t[starts] < self._last_time[entities])
                if back.size:
                    row = int(order[starts[back]].min())
                    entity = int(ids[row])
                    led_name, led = self._led_in or ("", np.empty(0, np.int64))
                    if (entity < len(led) and led[entity] != _NO_TIME
                            and self._last_time[entity] == led[entity]):
                        raise DatasetError(
                            f"row {first_row + row} ({where(row)}) is earlier than the last row "
                            f"of the same {ENTITY} in {led_name}: that table must end "
                            "before this one begins")
            if row is None and not last:
                self._last_time[entities] = t[ends]
                self._timed = True
        if row is not None:
            raise DatasetError(
                f"row {first_row + row} ({where(row)}) is earlier than the row before it of the "
                f"same {ENTITY}: rows must be in time order within each {ENTITY}; sort them by "
                f"({ENTITY}, {TIMESTAMP}) first"
            )

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
        aside: tuple[np.ndarray, np.ndarray] | None = None  # tails of entities not in the chunk
        if self._tail_keys is not None and len(self._tail_keys):
            assert self._tail_rows is not None
            tail_keys, tail_rows = self._tail_keys, self._tail_rows
            # only the entities in this chunk need their tails in its windows (a day sorted
            # by host would otherwise carry every finished host's rows through every chunk)
            in_chunk = np.zeros(int(max(tail_keys.max(), keys.max(initial=0))) + 1, bool)
            in_chunk[keys] = True
            present = in_chunk[tail_keys]
            if not present.all():
                aside = tail_keys[~present], tail_rows[~present]
                tail_keys, tail_rows = tail_keys[present], tail_rows[present]
            carried = len(tail_keys)
            keys = np.concatenate([tail_keys, keys])
            rows = np.concatenate([tail_rows, rows])
        batch = score_rows(self.scorer, rows, keys, top=True, chunk_rows=self.chunk_rows,
                           from_row=carried)
        assert batch.top_feature is not None
        if not last:  # each entity's last W - 1 rows (carried ones too) open the next windows
            tail = np.zeros(len(keys), bool)
            _keep_entity_tails(keys, window - 1, tail)
            self._tail_keys, self._tail_rows = keys[tail], rows[tail]
            if aside is not None:
                self._tail_keys = np.concatenate([aside[0], self._tail_keys])
                self._tail_rows = np.concatenate([aside[1], self._tail_rows])
        top_group = None if batch.top_group is None else batch.top_group[carried:]
        return batch.scores[carried:], batch.top_feature[carried:], top_group


def score_frame(
    scorer: Scorer,
    frame: pd.DataFrame,
    chunk_rows: int = 65_536,
    policy: ScoringPolicy | None = None,
    part_rows: int = FRAME_PART_ROWS,
    before: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Score every row of a frame in chunks (bounded memory); keeps ids/labels, adds score
    columns (``TableScorer``). ``before``: the rows that precede the frame (the day before):
    each entity's last ``lead_in_rows`` of them run first, as ``score_table``'s lead-in."""
    with TableScorer(scorer, policy, chunk_rows, part_rows) as chunks:
        rows = lead_in_rows(scorer, policy)
        if before is not None and rows != 0:
            gone = [f for f in scorer.features if f not in before.columns]
            if gone:
                raise DatasetError(f"the rows before the frame lack feature column(s) {gone} "
                                   f"that {scorer.label} needs")
            try:
                chunks.lead_in(frame_tails(before, rows), "the rows before")
            except (DatasetError, ScoringInputError) as exc:
                raise DatasetError(f"the rows before the frame: {exc}") from exc
        return chunks.score(frame, last=True)


def frame_tails(frame: pd.DataFrame, rows: int | None) -> pd.DataFrame:
    """Each entity's last ``rows`` rows of a frame (all of them: ``None``), in their order."""
    if rows is None:
        return frame
    if ENTITY not in frame.columns:
        return frame.iloc[max(0, len(frame) - rows):]
    keep = np.zeros(len(frame), bool)
    _keep_entity_tails(_factorized(frame[ENTITY])[0], rows, keep)
    return frame.iloc[np.flatnonzero(keep)]


def lead_in_mismatch(before: Sequence[str], day: Sequence[str], features: Sequence[str],
                     names: tuple[str, str] = ("the rows before", "the day")) -> str | None:
    """Why rows with columns ``before`` cannot lead into a day with columns ``day`` for a
    model of ``features``, or None where they can: a feature they lack, or host ids on one
    side only (their rows could not be matched to the day's hosts). ``names``: the two sides,
    as the reason names them."""
    missing = [f for f in features if f not in before]
    if missing:
        return f"{names[0]} lacks feature column(s) {missing}"
    if (ENTITY in before) != (ENTITY in day):
        return (f"one of {names[0]} and {names[1]} has a {ENTITY} column and the other not, "
                "so their rows cannot be matched")
    return None


def lead_in_rows(model: Scorer | Bundle, policy: ScoringPolicy | None = None) -> int | None:
    """How many of an entity's preceding rows its next row's score and flag depend on, for a
    scorer or a bundle: a temporal model's ``W - 1`` rows, plus k-of-n's ``n - 1`` flags
    before it (each with its own window). ``None`` where the state has no bounded memory
    (re-baselining, level adaptation): all of them."""
    window, own = ((model.window, model.policy) if isinstance(model, Scorer)
                   else (model.manifest.window, model.manifest.policy))
    smoothing = (policy or own).smoothing
    if smoothing.scores_state:
        return None
    return (window or 1) - 1 + smoothing.n - 1


@dataclass(frozen=True)
class LeadIn:
    """The end of the table before the one scored (the day before, for a daily partition):
    ``entity_rows`` rows of each entity (``None``: all of them), run through the scorer first
    so that the scored table continues where that one ended."""

    source: Path | pa.Table  # a Parquet file, or rows already read (kept ones: small)
    entity_rows: int | None
    label: str = ""  # what messages call the rows (default: the file's name)

    @property
    def name(self) -> str:
        if self.label or isinstance(self.source, pa.Table):
            return self.label or "the rows before"
        return self.source.name

    def batches(self, scorer: Scorer, batch_rows: int = TABLE_BATCH_ROWS
                ) -> Iterator[pa.RecordBatch]:
        """The lead-in rows in order, as record batches of the columns the scorer reads; memory
        is set by the batch and the kept tails, not by the source table."""
        if isinstance(self.source, pa.Table):
            names = self.source.schema.names
        else:
            file = pq.ParquetFile(self.source)
            names = file.schema_arrow.names
        missing = [f for f in scorer.features if f not in names]
        if missing:
            raise DatasetError(f"lead-in table {self.name} lacks feature column(s) "
                               f"{missing} that {scorer.label} needs")
        columns = [c for c in (TIMESTAMP, ENTITY) if c in names] + list(scorer.features)
        if isinstance(self.source, pa.Table):
            rows = self.source.select(columns)
            if self.entity_rows is not None:
                rows = _table_tails(rows, self.entity_rows)
            yield from rows.to_batches(batch_rows)
        elif self.entity_rows is None:
            yield from file.iter_batches(batch_size=batch_rows, columns=columns)
        elif self.entity_rows > 0:
            yield from _entity_tails(self.source, columns,
                                     self.entity_rows).to_batches(batch_rows)


def _table_tails(table: pa.Table, rows: int) -> pa.Table:
    """The last ``rows`` rows of each entity of a table in memory, in their order (rows
    without an id are one entity, as in ``_entity_tails``)."""
    keep = np.zeros(table.num_rows, bool)
    if ENTITY not in table.schema.names:
        keep[max(0, table.num_rows - rows):] = True
    elif table.num_rows and rows > 0:
        _keep_entity_tails(_factorized(table.column(ENTITY).to_pandas())[0], rows, keep)
    return table.filter(pa.array(keep))


def file_tails(source: Path, rows: int, features: Sequence[str]) -> pa.Table:
    """Each entity's last ``rows`` rows of a Parquet table, with its time, id and those of
    ``features`` it has, read as a lead-in reads them (one row group at a time), never the
    whole table."""
    names = pq.read_schema(source).names
    columns = [c for c in (TIMESTAMP, ENTITY, *features) if c in names]
    return _entity_tails(source, list(dict.fromkeys(columns)), rows)


def _entity_tails(source: Path, columns: list[str], rows: int) -> pa.Table:
    """The last ``rows`` rows of each entity of a Parquet table (rows without an id are one
    entity, as in ``TableScorer``), in their order. Only the id column is read whole; the rest
    only from the row groups that hold kept rows, one at a time (memory: one row group)."""
    table = pq.ParquetFile(source)
    total = table.metadata.num_rows
    keep = np.zeros(total, bool)
    if ENTITY in columns:
        _keep_entity_tails(_id_codes(source), rows, keep)
    else:
        keep[max(0, total - rows):] = True
    ends = np.cumsum([table.metadata.row_group(g).num_rows
                      for g in range(table.metadata.num_row_groups)])
    parts = []
    for group in np.unique(np.searchsorted(ends, np.flatnonzero(keep), side="right")):
        start = int(ends[group - 1]) if group else 0
        read = table.read_row_group(int(group), columns=columns)
        parts.append(read.filter(pa.array(keep[start:start + read.num_rows])))
    if not parts:
        return table.schema_arrow.empty_table().select(columns)
    return pa.concat_tables(parts).combine_chunks()


def _keep_entity_tails(codes: np.ndarray, rows: int, keep: np.ndarray) -> None:
    """Mark in ``keep`` the last ``rows`` rows of each entity code. Works on runs of equal
    codes (a file sorted by id is one run per entity, an interleaved one a run per row),
    from the end in blocks of runs that double, until every entity has its rows, then marks
    them in one pass; where runs are short and most would be kept (many interleaved
    entities), it ranks rows within their entity instead (one sort)."""
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    wanted = np.minimum(np.bincount(codes), rows)  # an entity with fewer rows keeps them all
    if len(starts) > len(codes) // 4 and 16 * int(wanted.sum()) > len(starts):
        # many short runs, most of them kept (many entities, interleaved): scanning runs from
        # the end would visit nearly all of them, so rank rows within their entity instead
        order = np.argsort(codes, kind="stable")
        ordered = codes[order]
        last = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])  # each entity's last
        from_end = np.repeat(last, np.diff(np.r_[-1, last])) - np.arange(len(codes))
        keep[order[from_end < rows]] = True
        return
    ends = np.r_[starts[1:], len(codes)]
    run_codes = codes[starts]
    seen = np.zeros(len(wanted), np.int64)
    hi, block = len(starts), 1024
    kept_from: list[np.ndarray] = []  # the kept stretches: [end - taken, end) of runs
    kept_to: list[np.ndarray] = []
    while hi > 0 and (seen < wanted).any():
        lo = max(0, hi - block)
        part, length = run_codes[lo:hi][::-1], (ends - starts)[lo:hi][::-1]  # latest first
        order = np.argsort(part, kind="stable")
        total = np.cumsum(length[order])  # rows of later runs of the same entity, and its own
        first = np.flatnonzero(np.r_[True, part[order][1:] != part[order][:-1]])
        before = total - length[order]
        before -= np.repeat(before[first], np.diff(np.r_[first, len(order)]))
        later = np.empty(len(part), np.int64)
        later[order] = before
        taken = np.clip(rows - seen[part] - later, 0, length)  # rows kept from each run
        runs = np.flatnonzero(taken)
        run_ends = ends[hi - 1 - runs]
        kept_from.append(run_ends - taken[runs])
        kept_to.append(run_ends)
        seen += np.bincount(part, weights=length, minlength=len(seen)).astype(np.int64)
        hi, block = lo, 2 * block
    if kept_from:  # runs are disjoint, so stretch bounds are distinct: one pass marks them all
        edges = np.zeros(len(keep) + 1, np.int32)
        edges[np.concatenate(kept_from)] += 1
        edges[np.concatenate(kept_to)] -= 1
        keep |= np.cumsum(edges[:-1]) > 0


class EntityTails:
    """Each entity's last ``rows`` rows of a table, kept as its record batches stream through
    ``score_table``: the rows ``_entity_tails`` would read back from the file, in the same
    order, without reading it again. Each batch keeps its own tails; the kept parts are merged
    once they hold twice the rows of the last merge, so memory stays within a few times the
    kept rows and merging costs rows added, not batches x kept rows."""

    def __init__(self, rows: int, features: Sequence[str],
                 slack_rows: int = TABLE_BATCH_ROWS) -> None:
        if rows < 1:
            raise ValueError(f"rows must be >= 1 to keep any, got {rows}")
        self.rows = rows
        self.features = list(features)
        self.slack_rows = slack_rows  # rows held beyond twice the last merge before merging
        self._parts: list[pa.Table] = []
        self._codes: list[np.ndarray] | None = []  # each part's entity codes (None: no ids)
        self._held = 0  # rows in the parts
        self._merged = 0  # rows after the last merge

    def add(self, batch: pa.RecordBatch, codes: np.ndarray | None) -> None:
        """The next batch of the table, with its rows' entity codes (consistent across
        batches, as ``TableScorer`` numbers them; None where rows have no id)."""
        names = batch.schema.names
        part = pa.Table.from_batches(
            [batch.select([c for c in (TIMESTAMP, ENTITY) if c in names] + self.features)])
        part, codes = self._tails(part, codes)
        if ENTITY in names and pa.types.is_dictionary(part.schema.field(ENTITY).type):
            # batches read their own dictionaries; plain ids concatenate and read back alike
            at = part.schema.get_field_index(ENTITY)
            value_type = part.schema.field(ENTITY).type.value_type
            part = part.set_column(at, ENTITY, pc.cast(part.column(ENTITY), value_type))
        self._append(part, codes)
        if self._held > 2 * self._merged + self.slack_rows:
            self._merge()

    def _tails(self, part: pa.Table, codes: np.ndarray | None
               ) -> tuple[pa.Table, np.ndarray | None]:
        """Each entity's last rows of ``part``, and their codes."""
        keep = np.zeros(part.num_rows, bool)
        if codes is None:
            keep[max(0, part.num_rows - self.rows):] = True
        else:
            _keep_entity_tails(codes, self.rows, keep)
        if keep.all():
            return part, codes
        return part.filter(pa.array(keep)), None if codes is None else codes[keep]

    def _append(self, part: pa.Table, codes: np.ndarray | None) -> None:
        self._parts.append(part)
        if codes is None or self._codes is None:
            self._codes = None
        else:
            self._codes.append(codes)
        self._held += part.num_rows

    def _merge(self) -> None:
        if len(self._parts) < 2:
            return
        table, codes = self._tails(
            pa.concat_tables(self._parts),
            None if self._codes is None else np.concatenate(self._codes))
        self._parts, self._codes, self._held = [], None if codes is None else [], 0
        self._append(table.combine_chunks(), codes)
        self._merged = self._held

    def table(self) -> pa.Table | None:
        """The kept rows, in table order (None before any batch)."""
        self._merge()
        return self._parts[0] if self._parts else None


def _id_codes(source: Path) -> np.ndarray:
    """An integer per row standing for its entity id (a missing id is one more), from the id
    column alone: Parquet's own dictionary indices where ids are text (no hashing)."""
    schema = pq.read_schema(source)
    text = _string_ids(schema)
    ids = pq.read_table(source, columns=[ENTITY], read_dictionary=[ENTITY] if text else None)
    column = ids.unify_dictionaries().column(ENTITY) if text else ids.column(ENTITY)
    if text and column.num_chunks:
        width = len(column.chunk(0).dictionary)
        return np.concatenate([pc.fill_null(chunk.indices, width).to_numpy(zero_copy_only=False)
                               for chunk in column.chunks])
    return _factorized(column.to_pandas())[0]


def _string_ids(schema: pa.Schema) -> bool:
    """Whether entity ids are strings (plain, or as read from Parquet, dictionary-encoded)."""
    if ENTITY not in schema.names:
        return False
    kind = schema.field(ENTITY).type
    return pa.types.is_string(kind) or (pa.types.is_dictionary(kind)
                                        and pa.types.is_string(kind.value_type))


def _scored_schema(source: pa.Schema, scorer: Scorer, policy: ScoringPolicy) -> pa.Schema:
    """The columns ``TableScorer.score_batch`` gives, typed up front: every batch must match."""
    fields = [source.field(c) for c in KEPT if c in source.names]
    if _string_ids(source):
        kind = source.field(ENTITY).type
        fields[[f.name for f in fields].index(ENTITY)] = pa.field(ENTITY, pa.dictionary(
            pa.int32(), kind.value_type if pa.types.is_dictionary(kind) else kind))
    fields.append(pa.field("score", pa.float32()))
    if policy.smoothing.enabled:
        fields.append(pa.field("raw_is_anomaly", pa.bool_()))
    fields += [pa.field("is_anomaly", pa.bool_()),
               pa.field("top_feature", pa.dictionary(pa.int32(), pa.string()))]
    if scorer.groups.any_declared:
        fields.append(pa.field("top_group", pa.string()))
    fields.append(pa.field("model_version", pa.dictionary(pa.int32(), pa.string())))
    return pa.schema(fields)


def _read_ahead(batches: Iterator[pa.RecordBatch], reader: ThreadPoolExecutor
                ) -> Iterator[pa.RecordBatch]:
    """``batches``, each next one read on ``reader``'s thread while the caller works."""
    following = reader.submit(next, batches, None)
    while (batch := following.result()) is not None:
        following = reader.submit(next, batches, None)
        yield batch


def _writer_options(schema: pa.Schema) -> dict[str, Any]:
    """Parquet encodings for scored rows. Dictionaries only where values repeat (ids, top
    feature, version, labels; trying one on every float and time costs the write 40 %), time
    deltas for the time-ordered timestamps (a third of the file), statistics where readers
    prune row groups (time, entity): measured 0.53 -> 0.21 s for 3M rows, 45 -> 14 MB."""
    repeating = [f.name for f in schema
                 if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)]
    options: dict[str, Any] = {"use_dictionary": repeating,
                               "write_statistics": [c for c in (TIMESTAMP, ENTITY)
                                                    if c in schema.names]}
    if TIMESTAMP in schema.names and pa.types.is_timestamp(schema.field(TIMESTAMP).type):
        options["column_encoding"] = {TIMESTAMP: "DELTA_BINARY_PACKED"}
    return options


def score_table(
    scorer: Scorer,
    source: str | Path,
    target: str | Path,
    *,
    batch_rows: int = TABLE_BATCH_ROWS,
    chunk_rows: int = 65_536,
    policy: ScoringPolicy | None = None,
    each: Callable[[pa.Table], None] | None = None,
    lead_in: LeadIn | None = None,
    tails: EntityTails | None = None,
) -> int:
    """Score a Parquet table record batch by record batch into ``target`` (Parquet), which
    appears complete or not at all; ``each`` sees every scored batch in order, on the
    writing thread once the batch is written (running summaries). ``lead_in``: rows that
    precede the table, run first and not written (``TableScorer.lead_in``). ``tails`` keeps
    each entity's last rows of the table as they pass (the next table's lead-in).
    Returns the rows scored. Memory is set by ``batch_rows``, not by the table."""
    source = Path(source)
    table = pq.ParquetFile(source)
    names = table.schema_arrow.names
    if _string_ids(table.schema_arrow):  # ids as Parquet stores them: indices, no hashing
        table = pq.ParquetFile(source, read_dictionary=[ENTITY])
    missing = [f for f in scorer.features if f not in names]
    if missing:
        raise DatasetError(
            f"{source.name} lacks feature column(s) {missing} that {scorer.label} needs "
            f"({list(scorer.features)})"
        )
    if table.metadata.num_rows == 0:
        raise ScoringInputError(f"{source.name} has no rows to score")
    columns = [c for c in KEPT if c in names] + [f for f in scorer.features if f not in KEPT]
    schema = _scored_schema(table.schema_arrow, scorer, policy or scorer.policy)
    chunks = TableScorer(scorer, policy, chunk_rows)
    # a pipeline of threads (pyarrow and onnxruntime work without the GIL): batch i + 2 is read
    # while i + 1's graph runs, i gets its flags and i - 1 is written: at most four in memory.
    # Without the Arrow schema in the file, the dictionary columns read back as plain strings,
    # as ``score_frame``'s columns do.
    with (chunks, atomic_path(target) as tmp,
          pq.ParquetWriter(tmp, schema, store_schema=False, **_writer_options(schema)) as writer,
          ThreadPoolExecutor(1, thread_name_prefix="ds-table-writer") as pool,
          ThreadPoolExecutor(1, thread_name_prefix="ds-table-reader") as reader):
        if lead_in is not None:
            try:
                chunks.lead_in(lead_in.batches(scorer, batch_rows), lead_in.name)
            except (DatasetError, ScoringInputError) as exc:
                raise DatasetError(
                    f"the lead-in rows from {lead_in.name} (the table before "
                    f"{source.name}): {exc}; fix that table, or score without a lead-in") from exc
        written: Future[None] | None = None
        started: _StartedBatch | None = None

        def write(scored: pa.Table) -> None:
            writer.write_table(scored)
            if each is not None:
                each(scored)

        def finish(batch: _StartedBatch) -> Future[None]:
            scored = chunks.finish_batch(batch)
            if written is not None:
                written.result()
            return pool.submit(write, scored)

        for batch in _read_ahead(table.iter_batches(batch_size=batch_rows, columns=columns),
                                 reader):
            following = chunks.start_batch(batch)  # its graph runs while the one before finishes
            if tails is not None:
                tails.add(batch, following.chunk.ids)
            if started is not None:
                written = finish(started)
            started = following
        if started is not None:
            written = finish(started)
        if written is not None:
            written.result()
    return chunks.rows_seen
