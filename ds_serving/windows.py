"""Sliding windows per entity, shared by dataset scoring and the live scorer.

A temporal model scores the window of the last ``W`` rows of one entity; the score belongs to the
row that ends the window, so it is usable online. Rows before an entity's first full window get
no score (NaN, flag False) rather than a made-up one. Dataset scoring (``window_index`` over a
whole frame) and streaming (``EntityWindows`` fed batch by batch) build identical windows, so
both paths give the same score for the same row.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _check_window(window: int) -> int:
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    return int(window)


def group_positions(entities: Sequence[Hashable] | np.ndarray) -> list[np.ndarray]:
    """Row positions of each entity, in input order within the entity (first-seen entity order)."""
    keys = np.asarray(entities)
    if keys.ndim != 1:
        raise ValueError(f"entities must be 1-D, got shape {keys.shape}")
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse))
    groups = np.split(order, bounds[:-1])
    # np.unique sorts keys; present groups in order of first appearance for readable output
    return [groups[i] for i in np.argsort(first, kind="stable")]


@dataclass(frozen=True)
class WindowIndex:
    """Where each full window ends: ``ends[i]`` is the row scored by window ``i``."""

    ends: np.ndarray  # int64 [m] row positions in the original frame
    starts: np.ndarray  # int64 [m, window] row positions making up each window, oldest first


def window_index(entities: Sequence[Hashable] | np.ndarray, window: int) -> WindowIndex:
    """Index of every full window per entity; rows must be time-ordered within each entity."""
    window = _check_window(window)
    ends: list[np.ndarray] = []
    members: list[np.ndarray] = []
    for positions in group_positions(entities):
        if len(positions) < window:
            continue
        view = sliding_window_view(positions, window)
        members.append(view)
        ends.append(view[:, -1])
    if not ends:
        return WindowIndex(np.empty(0, np.int64), np.empty((0, window), np.int64))
    return WindowIndex(np.concatenate(ends).astype(np.int64), np.concatenate(members))


def iter_windows(
    rows: np.ndarray, index: WindowIndex, batch_windows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row positions, windows [b, W, f]) batches; memory stays bounded by ``batch_windows``."""
    if batch_windows < 1:
        raise ValueError(f"batch_windows must be >= 1, got {batch_windows}")
    for start in range(0, len(index.ends), batch_windows):
        stop = start + batch_windows
        yield index.ends[start:stop], rows[index.starts[start:stop]]


class EntityWindows:
    """Per-entity ring buffers of the last ``window - 1`` rows for streaming scoring.

    ``push`` takes a batch (rows may belong to several entities, in time order per entity) and
    returns the full windows it completes, with the batch positions they score. Memory is bounded:
    at most ``max_entities`` entities are kept; the least recently seen is evicted first.
    """

    def __init__(self, window: int, n_features: int, max_entities: int = 100_000) -> None:
        self.window = _check_window(window)
        self.n_features = int(n_features)
        self.max_entities = int(max_entities)
        self._tails: dict[Hashable, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._tails)

    def push(
        self, entities: Sequence[Hashable] | np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"rows must be [n, {self.n_features}], got shape {rows.shape}")
        keys = np.asarray(entities)
        if len(keys) != len(rows):
            raise ValueError(f"got {len(keys)} entity ids for {len(rows)} rows; send one per row")
        keep = self.window - 1
        out_pos: list[np.ndarray] = []
        out_win: list[np.ndarray] = []
        for positions in group_positions(keys):
            first = keys[positions[0]]
            key = first.item() if isinstance(first, np.generic) else first
            tail = self._tails.pop(key, None)
            if tail is None:
                tail = np.empty((0, self.n_features), np.float32)
            history = np.concatenate([tail, rows[positions]])
            if len(history) >= self.window:
                view = sliding_window_view(history, self.window, axis=0)  # [m, f, W]
                wins = np.ascontiguousarray(view.transpose(0, 2, 1))
                n_new = len(wins)
                out_win.append(wins)
                out_pos.append(positions[len(positions) - n_new :])
            self._tails[key] = history[max(0, len(history) - keep) :].copy()
            while len(self._tails) > self.max_entities:
                self._tails.pop(next(iter(self._tails)))
        if not out_win:
            return np.empty(0, np.int64), np.empty((0, self.window, self.n_features), np.float32)
        return np.concatenate(out_pos).astype(np.int64), np.concatenate(out_win)

    def reset(self) -> None:
        self._tails.clear()
