"""Cost of each flag policy after the threshold on the same scores: what k-of-n smoothing,
re-baselining and level adaptation add to dataset scoring (the same per-entity code serves the
live scorer). Gamma-distributed scores of ``--entities`` hosts (integer codes, as dataset
scoring numbers them), time-ordered within each, flagged by ``ScoringPolicy.flags``; policies
interleaved A/B/A/B, medians, seconds per million rows and the ratio to a dense autoencoder's
onnxruntime run over the same number of rows in the same run (the graph the flags follow).

    .venv/bin/python -m bench.policies [--rows 1000000] [--entities 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from ds_serving.atomic import atomic_write_text
from ds_serving.policy import ScoringPolicy
from ds_serving.smoothing import Adaptation, Rebaseline, Smoothing

RESULTS = Path(__file__).resolve().parent / "results"
FEATURES = 8

POLICIES: dict[str, Smoothing] = {
    "none": Smoothing(),
    "3-of-5": Smoothing(3, 5),
    "re-baselining": Smoothing(rebaseline=Rebaseline(4.0, 3.0, 240)),
    "level adaptation": Smoothing(adapt=Adaptation(0.003, 1.0)),
    "level adaptation + re-baselining": Smoothing(rebaseline=Rebaseline(4.0, 3.0, 240),
                                                  adapt=Adaptation(0.003, 1.0)),
}


def _graph_seconds(rows: int) -> float:
    """One onnxruntime run of a dense autoencoder (8 features, 32-16-4) over ``rows`` rows."""
    from ds_serving.scoring import Scorer
    from tests.support.models import dense_autoencoder

    model = dense_autoencoder(FEATURES, (32, 16, 4), mean=[0.0] * FEATURES,
                              std=[1.0] * FEATURES, seed=0)
    scorer = Scorer(model, features=[f"f{i}" for i in range(FEATURES)], threshold=1.0,
                    backend="cpu")
    x = np.random.default_rng(1).normal(size=(rows, FEATURES)).astype(np.float32)
    started = time.perf_counter()
    scorer.score(x)
    return time.perf_counter() - started


def run(rows: int, entities: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    scores = rng.gamma(4.0, 0.25, rows)
    scores[rng.random(rows) < 0.001] *= 8.0
    # integer host codes, as dataset scoring passes them (``TableScorer`` numbers each table's ids)
    ids = np.repeat(np.arange(entities), -(-rows // entities))[:rows]
    seconds: dict[str, list[float]] = {name: [] for name in [*POLICIES, "onnxruntime"]}
    for _ in range(repeats):
        seconds["onnxruntime"].append(_graph_seconds(rows))
        for name, smoothing in POLICIES.items():
            policy = ScoringPolicy(threshold=3.0, smoothing=smoothing)
            started = time.perf_counter()
            policy.flags(scores, ids)
            seconds[name].append(time.perf_counter() - started)
    graph = float(np.median(seconds["onnxruntime"]))
    out = {name: {"seconds": [round(s, 4) for s in values],
                  "seconds_per_million_rows": round(float(np.median(values)) * 1e6 / rows, 4),
                  "vs_onnxruntime": round(float(np.median(values)) / graph, 3)}
           for name, values in seconds.items()}
    return {"date": dt.date.today().isoformat(), "machine": platform.processor() or
            platform.machine(), "rows": rows, "entities": entities, "repeats": repeats,
            "policies": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        default=RESULTS / f"policies-{dt.date.today().isoformat()}.json")
    args = parser.parse_args(argv)
    result = run(args.rows, args.entities, args.repeats)
    for name, r in result["policies"].items():
        print(f"{name:34s} {r['seconds_per_million_rows']:7.3f} s per 1M rows  "
              f"({r['vs_onnxruntime']:.2f}x the graph's run)")
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
