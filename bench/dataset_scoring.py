"""Dataset scoring (``score_frame``, what ``scored_telemetry`` runs) against the onnxruntime
ceiling on the same rows, at several sizes, each size in a fresh process (peak RSS).

The ceiling is ``session.run`` with both outputs (scores and feature errors) on the same float32
rows in the same chunks, with the same threads: everything ``score_frame`` adds on top (input
checks, time-order check, flags, the top feature, the output frame) is the gap.

``score_table`` is what the ``scored_telemetry`` asset runs: the day read from its Parquet file a
record batch at a time and the scored rows written as they come; its peak RSS is the day's
memory. The file is written beforehand by another process. ``score_table_lead_in`` is the same
with a lead-in (``LeadIn``) read from the day before's file (of the same size): each host's last
rows, run first. ``score_table_kept`` is what the asset runs on a day whose day before was
scored: the lead-in from the rows that scoring kept (``lead_in_cache``), and this day's last
rows kept in turn. Both are reported against plain ``score_table``.

    .venv/bin/python -m bench.dataset_scoring [--sizes 1000000 3000000 10000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.output import write_results

FEATURES = [f"f{i}" for i in range(8)]
HOSTS = 20
KINDS = ("ceiling", "score_frame", "score_table", "score_table_lead_in", "score_table_kept")


def frame(n: int, seed: int = 0, day: str = "2026-11-01") -> pd.DataFrame:
    """``n`` rows of ``HOSTS`` hosts at one-second steps, time-ordered within each host."""
    rng = np.random.default_rng(seed)
    per_host = math.ceil(n / HOSTS)
    times = pd.date_range(day, periods=per_host, freq="s", tz="UTC")
    out = pd.DataFrame({
        "timestamp": np.tile(times.to_numpy(), HOSTS)[:n],
        "host_id": np.repeat([f"h{i:02d}" for i in range(HOSTS)], per_host)[:n],
    })
    values = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    for j, name in enumerate(FEATURES):
        out[name] = values[:, j]
    out["timestamp"] = out["timestamp"].dt.tz_localize("UTC") if out["timestamp"].dt.tz is None \
        else out["timestamp"]
    return out


def bundle_dir(root: Path) -> Path:
    """A dense AE bundle (one short epoch; speed does not depend on the weights)."""
    import torch

    from ds_assets.training.detectors import DetectorParams, train_detector
    from ds_assets.training.export import export_onnx
    from ds_serving.bundle import write_bundle

    rows = np.random.default_rng(1).normal(size=(4096, len(FEATURES))).astype(np.float32)
    trained = train_detector(DetectorParams(family="dense_ae", epochs=1), rows, rows[:512],
                             FEATURES, device=torch.device("cpu"), threads=1)
    return write_bundle(root, "bench", export_onnx(trained), kind=trained.kind,
                        features=FEATURES, threshold=1.0, threshold_rule={"rule": "fixed"},
                        smoothing={"k": 2, "n": 3}).path


def child(size: int, model: Path, what: str, table: Path) -> dict[str, Any]:
    if what == "write":  # before the scoring imports (onnx alone is 0.6 s a process)
        frame(size).to_parquet(table, index=False)
        frame(size, seed=1, day="2026-10-01").to_parquet(before(table), index=False)
        return {}
    from ds_assets.training import lead_in_cache
    from ds_assets.training.dataset_scoring import (
        EntityTails,
        LeadIn,
        dataset_scorer,
        lead_in_rows,
        score_frame,
        score_table,
    )
    from ds_serving.bundle import OUTPUT_NAMES, load_bundle
    from ds_serving.scoring import iter_chunks

    scorer = dataset_scorer(load_bundle(model))
    rows_before = lead_in_rows(scorer)
    assert rows_before  # the bench bundle's 2-of-3 smoothing: 2 rows of each host
    if what == "keep":  # the day before scored by the asset, keeping its last rows
        scored = before(table).with_name(f"scored-{before(table).name}")
        tails = EntityTails(rows_before, scorer.features)
        stamp = lead_in_cache.file_stamp(before(table))
        score_table(scorer, before(table), scored, tails=tails)
        lead_in_cache.keep(tails, before(table), stamp)
        scored.unlink()
        return {}
    if what in ("score_table", "score_table_lead_in", "score_table_kept"):
        from ds_assets.reporting.analytics import ScoredSummary

        out = table.with_name(f"scored-{table.name}")
        summary = ScoredSummary()  # the asset summarises the batches as they go by
        started = time.perf_counter()
        lead_in, tails, stamp = None, None, None
        if what == "score_table_lead_in":
            lead_in = LeadIn(before(table), rows_before)
        elif what == "score_table_kept":  # as scored_telemetry: look up, score, keep
            kept = lead_in_cache.kept_for(before(table), rows_before, scorer.features)
            assert kept is not None, "the day before's kept rows are missing"
            lead_in = LeadIn(kept, rows_before)
            tails = EntityTails(rows_before, scorer.features)
            stamp = lead_in_cache.file_stamp(table)
        score_table(scorer, table, out, each=summary.add_table, lead_in=lead_in, tails=tails)
        if tails is not None and stamp is not None:
            lead_in_cache.keep(tails, table, stamp)
        seconds = time.perf_counter() - started
        out.unlink()
        lead_in_cache.kept_path(table).unlink(missing_ok=True)
        return {"seconds": seconds, "rows_per_s": size / seconds,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    rows = frame(size)
    if what == "ceiling":
        session = scorer.engine._session  # the scorer's own session: same graph, same threads
        x = rows[FEATURES].to_numpy(np.float32)
        name = session.get_inputs()[0].name
        outputs = list(OUTPUT_NAMES)  # scores and feature errors
        session.run(outputs, {name: x[:65_536]})
        started = time.perf_counter()
        for part in iter_chunks(len(x), 65_536):
            session.run(outputs, {name: x[part]})
        seconds = time.perf_counter() - started
    else:
        score_frame(scorer, rows.iloc[:65_536])
        started = time.perf_counter()
        score_frame(scorer, rows)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows_per_s": size / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def before(table: Path) -> Path:
    """The day before ``table`` (the lead-in's source)."""
    return table.with_name(f"before-{table.name}")


def run(size: int, model: Path, what: str, table: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "bench.dataset_scoring", "--child", what,
                           "--size", str(size), "--model", str(model), "--table", str(table)],
                          capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000,
                                                                   10_000_000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=(*KINDS, "write", "keep"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--table", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.size, args.model, args.child, args.table)))
        return 0
    import tempfile

    from ds_assets.training.lead_in_cache import kept_path

    with tempfile.TemporaryDirectory() as tmp:
        model = bundle_dir(Path(tmp))
        results = []
        for size in args.sizes:
            table = Path(tmp) / f"day-{size}.parquet"
            run(size, model, "write", table)
            run(size, model, "keep", table)
            best: dict[str, dict[str, Any]] = {}
            for _ in range(args.repeats):  # interleaved; the fastest of each kind
                for what in KINDS:
                    got = run(size, model, what, table)
                    if what not in best or got["seconds"] < best[what]["seconds"]:
                        best[what] = got
            table.unlink()
            before(table).unlink()
            kept_path(before(table)).unlink()
            ratio = best["ceiling"]["seconds"] / best["score_frame"]["seconds"]
            table_ratio = best["ceiling"]["seconds"] / best["score_table"]["seconds"]
            lead_in = (best["score_table_lead_in"]["seconds"] / best["score_table"]["seconds"])
            kept = best["score_table_kept"]["seconds"] / best["score_table"]["seconds"]
            results.append({"rows": size, **{k: v for k, v in best.items()},
                            "ratio_to_ceiling": ratio, "table_ratio_to_ceiling": table_ratio,
                            "lead_in_time_ratio": lead_in, "kept_lead_in_time_ratio": kept})
            print(f"{size:>11,} rows  ceiling {best['ceiling']['rows_per_s']:>12,.0f} rows/s  "
                  f"score_frame {best['score_frame']['rows_per_s']:>12,.0f} rows/s "
                  f"(ratio {ratio:.3f}, peak RSS {best['score_frame']['peak_rss_mib']:,.0f} MiB)  "
                  f"score_table {best['score_table']['rows_per_s']:>12,.0f} rows/s "
                  f"(ratio {table_ratio:.3f}, peak RSS "
                  f"{best['score_table']['peak_rss_mib']:,.0f} MiB)  ceiling peak RSS "
                  f"{best['ceiling']['peak_rss_mib']:,.0f} MiB  with the lead-in "
                  f"{lead_in:.2f}x score_table's time (peak RSS "
                  f"{best['score_table_lead_in']['peak_rss_mib']:,.0f} MiB), from kept rows "
                  f"and keeping its own {kept:.2f}x (peak RSS "
                  f"{best['score_table_kept']['peak_rss_mib']:,.0f} MiB)", flush=True)
    sizes = np.log([r["rows"] for r in results])

    def slope(what: str) -> float:
        seconds = np.log([r[what]["seconds"] for r in results])
        return float(np.polyfit(sizes, seconds, 1)[0]) if len(results) > 1 else float("nan")

    document = {"date": dt.date.today().isoformat(), "results": results,
                "log_log_slope": slope("score_frame"),
                "log_log_slope_score_table": slope("score_table")}
    print(f"log-log slope of time vs rows: score_frame {document['log_log_slope']:.3f}, "
          f"score_table {document['log_log_slope_score_table']:.3f}")
    write_results(document, "dataset-scoring", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
