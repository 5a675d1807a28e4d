"""Benchmark of the synthetic telemetry generator: one day of 1,008,000 rows (700 hosts at
1-minute resolution), against a floor measured in the same run.

    python -m bench.generator          (part of ``make bench``; about 10 s on 2 cores)

The floor draws the same number of float32 feature values with numpy and wraps them in a
DataFrame of the same shape: what producing a million rows costs before any telemetry logic
(seasonality, correlation, per-host state, anomalies, labels). The ratio to it is the figure
that compares across machines; rows/s is the absolute one. Written to
bench/results/generator-*.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ds_assets.telemetry.generator import GeneratorConfig, generate_day
from ds_assets.telemetry.schema import feature_columns
from ds_serving.atomic import atomic_write_text


def _best_of(repeats: int, fn: Any) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=700)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out",
                        help="JSON result path (default bench/results/generator-<ts>.json)")
    args = parser.parse_args(argv)
    config = GeneratorConfig(n_hosts=args.hosts)
    seconds, frame = _best_of(args.repeats, lambda: generate_day("2026-11-01", config))
    rows, features = len(frame), feature_columns(frame)
    rng = np.random.default_rng(0)
    floor, _ = _best_of(args.repeats, lambda: pd.DataFrame(
        rng.normal(size=(rows, len(features))).astype(np.float32), columns=features))
    result = {
        "rows": rows, "features": len(features), "hosts": args.hosts,
        "anomalous_rows": int(frame["label"].sum()),
        "generator_seconds": round(seconds, 3), "rows_per_s": round(rows / seconds),
        "floor_seconds": round(floor, 3), "ratio_to_floor": round(seconds / floor, 1),
        "best_of": args.repeats,
    }
    print(f"generator: {rows:,} rows ({args.hosts} hosts x 1 day @ 60 s) in {seconds:.2f} s "
          f"({rows / seconds:,.0f} rows/s, best of {args.repeats}); floor (numpy draw + "
          f"DataFrame of the same shape) {floor:.3f} s: {seconds / floor:.1f}x the floor")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else (
        Path(__file__).resolve().parent / "results" / f"generator-{stamp}.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
