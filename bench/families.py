"""Fitting and scoring cost of each detector family on the same data: the generator's 20 hosts
(8 features; `make eval`'s generator source), fitted with the graph's defaults, then its test
days scored twice over (new entity ids the second time) through ``score_rows``, the families
interleaved A/B/A/B so a busy machine slows each alike. Ratios are against the default family
(``evaluated_default.FAMILY``) in the same run.

    .venv/bin/python -m bench.families [--families temporal_ae window_knn] [--repeats 3]
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

from bench.cross_dataset import GENERATOR_HOSTS, generator_series
from ds_assets.training import evaluated_default
from ds_assets.training.detectors import FAMILIES, DetectorParams, train_detector
from ds_assets.training.export import export_onnx
from ds_serving.atomic import atomic_write_text
from ds_serving.scoring import Scorer, score_rows

RESULTS = Path(__file__).resolve().parent / "results"


def run(families: list[str], repeats: int, threads: int, hosts: int = GENERATOR_HOSTS,
        ) -> dict[str, Any]:
    [series] = generator_series(hosts=hosts)
    fit, cal = series.fit_and_calibration()
    features = list(series.features)
    rows = np.concatenate([series.test, series.test])
    keys = np.concatenate([series.test_entities, series.test_entities + 1000])
    order = np.argsort(keys, kind="stable")
    rows, keys = rows[order], keys[order]
    scorers: dict[str, Scorer] = {}
    out: dict[str, dict[str, Any]] = {}
    for family in families:
        started = time.perf_counter()
        trained = train_detector(DetectorParams(family=family), series.train[fit],
                                 series.train[cal], features,
                                 train_entities=series.train_entities[fit],
                                 val_entities=series.train_entities[cal], threads=threads)
        graph = export_onnx(trained)
        out[family] = {"fit_seconds": round(time.perf_counter() - started, 2),
                       "onnx_bytes": len(graph), "window": trained.window, "score_seconds": []}
        scorers[family] = Scorer(graph, features=features, threshold=float("inf"),
                                 label=family, window=trained.window, backend="cpu",
                                 intra_op_threads=threads)
    for _ in range(repeats):
        for family, scorer in scorers.items():
            started = time.perf_counter()
            score_rows(scorer, rows, keys)
            out[family]["score_seconds"].append(round(time.perf_counter() - started, 3))
    base = evaluated_default.FAMILY if evaluated_default.FAMILY in out else families[0]
    for r in out.values():
        r["rows_per_second"] = round(len(rows) / float(np.median(r["score_seconds"])))
        r["fit_vs_" + base] = round(r["fit_seconds"] / out[base]["fit_seconds"], 3)
        r["scoring_speed_vs_" + base] = round(
            r["rows_per_second"] / (len(rows) / float(np.median(out[base]["score_seconds"]))), 3)
    return {"date": dt.date.today().isoformat(), "machine": platform.processor() or
            platform.machine(), "rows": len(rows), "features": len(features),
            "threads": threads, "repeats": repeats, "baseline": base, "families": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["temporal_ae", "window_knn"],
                        choices=FAMILIES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=RESULTS / f"families-{dt.date.today().isoformat()}.json")
    args = parser.parse_args(argv)
    result = run(list(dict.fromkeys(args.families)), args.repeats, args.threads)
    for family, r in result["families"].items():
        print(f"{family:12s} fit {r['fit_seconds']:6.1f} s  scoring {r['rows_per_second']:>9,} "
              f"rows/s  ({r['scoring_speed_vs_' + result['baseline']]:.2f}x "
              f"{result['baseline']}'s speed)")
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
