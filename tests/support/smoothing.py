"""Shared checks of a scores-based smoothing policy: batch = stream = causal, and the live
scorer flagging as dataset scoring does."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ds_assets.training.dataset_scoring import score_frame
from ds_serving.bundle import load_bundle, promote
from ds_serving.client import ScorerClient, encode_request
from ds_serving.scoring import Scorer
from ds_serving.server import ServerThread
from ds_serving.smoothing import Smoothing, StreamingSmoother, flag_scores
from tests.support.serving import FEATURES, server_config


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


def dataset_and_live_flags(models: Path, bundle: Path, rows: np.ndarray
                           ) -> tuple[pd.DataFrame, np.ndarray, Any]:
    """``bundle`` promoted in ``models``; ``rows`` of two alternating hosts scored by
    ``score_frame`` (the scored_telemetry asset's function, the bundle's policy) and streamed
    one row at a time to the gRPC scorer: (scored frame, streamed flags, the scorer's model
    info)."""
    promote(models, "ae", bundle.name)
    hosts = np.array(["h1", "h2"])[np.arange(len(rows)) % 2]
    frame = pd.DataFrame(rows, columns=FEATURES).assign(host_id=hosts)
    scored = score_frame(Scorer.from_bundle(load_bundle(bundle), backend="cpu"), frame)
    with ServerThread(server_config(models)) as server:
        client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
        streamed = [r.flags[0] for r in client.score_stream(
            encode_request(rows[i : i + 1], hosts[i : i + 1]) for i in range(len(rows)))]
        info = client.info()
        client.close()
    return scored, np.array(streamed), info
