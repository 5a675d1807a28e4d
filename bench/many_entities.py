"""Dataset scoring as the number of entities grows: the same rows spread over 20 or 100,000
hosts, the day's file sorted by host (as ingest writes it) or time-ordered (hosts
interleaved), a temporal model (window 16) without smoothing (the shipped default's shape)
and with 2-of-3 smoothing, plus the cost of keeping each host's last rows for the next day's
lead-in (``EntityTails``). Per-entity work, not per-row work, is what grows here.

    .venv/bin/python -m bench.many_entities [--rows 3000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.output import write_results

FEATURES = [f"f{i}" for i in range(8)]
WINDOW = 16


def day(rows: int, hosts: int, layout: str, path: Path) -> None:
    """``rows`` rows of ``hosts`` hosts one minute apart, written sorted by host or by time."""
    per = rows // hosts
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "timestamp": np.repeat(pd.date_range("2026-11-01", periods=per, freq="min", tz="UTC"),
                               hosts),
        "host_id": np.tile([f"h{i:06d}" for i in range(hosts)], per),
    })
    for name in FEATURES:
        frame[name] = rng.normal(size=len(frame)).astype(np.float32)
    if layout == "sorted":
        frame = frame.sort_values(["host_id", "timestamp"], kind="stable", ignore_index=True)
    frame.to_parquet(path, index=False)


def main(argv: list[str] | None = None) -> int:
    from ds_assets.training.dataset_scoring import EntityTails, dataset_scorer, score_table
    from ds_serving.bundle import load_bundle, write_bundle
    from tests.support.models import window_model

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--hosts", type=int, nargs="+", default=[20, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        scorers = {}
        for smoothing in ("none", "2-of-3"):
            bundle = write_bundle(
                tmp / "models", f"w{WINDOW}-{smoothing}", window_model(len(FEATURES), WINDOW),
                kind="window", features=FEATURES, threshold=0.8,
                threshold_rule={"rule": "fixed"}, window=WINDOW,
                smoothing={"k": 2, "n": 3} if smoothing == "2-of-3" else None)
            scorers[smoothing] = dataset_scorer(load_bundle(bundle.path))
        for layout in ("sorted", "interleaved"):
            for hosts in args.hosts:
                table = tmp / f"day-{layout}-{hosts}.parquet"
                day(args.rows, hosts, layout, table)
                for smoothing, scorer in scorers.items():
                    for keep in (False, True):
                        seconds = []
                        for _ in range(args.repeats):
                            tails = EntityTails(WINDOW - 1, FEATURES) if keep else None
                            started = time.perf_counter()
                            score_table(scorer, table, tmp / "scored.parquet", tails=tails)
                            seconds.append(time.perf_counter() - started)
                        row = {"layout": layout, "hosts": hosts, "smoothing": smoothing,
                               "keeping_tails": keep, "seconds": seconds,
                               "median_s": float(np.median(seconds))}
                        results.append(row)
                        print(f"{layout:11} {hosts:>7,} hosts  smoothing {smoothing:6}  "
                              f"keeping tails {keep!s:5}  median {row['median_s']:.2f} s  "
                              f"({', '.join(f'{s:.2f}' for s in seconds)})", flush=True)
                table.unlink()
    document = {"date": dt.date.today().isoformat(), "rows": args.rows, "window": WINDOW,
                "results": results}
    write_results(document, "many-entities", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
