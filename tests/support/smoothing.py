"""Shared check of a scores-based smoothing policy: batch = stream = causal."""

from __future__ import annotations

import itertools

import numpy as np

from ds_serving.smoothing import Smoothing, StreamingSmoother, flag_scores


def assert_streams_like_the_table(policy: Smoothing, scores: np.ndarray, ids: np.ndarray,
                                  threshold: float, cuts: list[int],
                                  rng: np.random.Generator) -> np.ndarray:
    """Batch (``flag_scores``) and stream (``StreamingSmoother`` fed in the pieces ``cuts``
    make) give the same flags, and the rows before a cut never depend on later scores; returns
    the whole table's flags."""
    whole = flag_scores(scores, threshold, policy, ids)
    smoother = StreamingSmoother(policy)
    bounds = [0, *sorted(cuts), len(scores)]
    parts = [smoother.apply_scores(scores[a:b], threshold, ids[a:b])
             for a, b in itertools.pairwise(bounds)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    cut = bounds[len(bounds) // 2]
    changed = scores.copy()
    changed[cut:] = rng.permutation(changed[cut:])
    np.testing.assert_array_equal(flag_scores(changed, threshold, policy, ids)[:cut],
                                  whole[:cut])
    return whole
