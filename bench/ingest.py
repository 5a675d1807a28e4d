"""Ingest of a large user CSV through a declaration: peak memory and wall time against pandas
reading the whole file, measured in the same run (each in its own process).

    python -m bench.ingest --rows 10000000

A: ds_assets.telemetry.files (chunked staging to Parquet, then one day's filtered read).
B: pandas.read_csv of the whole file plus timestamp parsing: what a loader without chunks holds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ds_serving.atomic import atomic_write_text

HOSTS = 10


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` rows of 10 hosts at 2 s: timestamp, host, f1..f4, label (1 %)."""
    rng = np.random.default_rng(seed)
    per = rows // HOSTS
    with open(path, "w") as handle:
        handle.write("timestamp,host,f1,f2,f3,f4,label\n")
        for host in range(HOSTS):
            times = pd.date_range("2024-01-01", periods=per, freq="2s")
            values = rng.normal(size=(per, 4)).round(4)
            pd.DataFrame({"timestamp": times.strftime("%Y-%m-%d %H:%M:%S"), "host": f"h{host}",
                          **{f"f{i + 1}": values[:, i] for i in range(4)},
                          "label": (rng.random(per) < 0.01).astype(int)}).to_csv(
                handle, header=False, index=False)


def _declared(path: str, staging: str) -> dict[str, float]:
    from ds_assets.telemetry.declaration import DatasetSpec
    from ds_assets.telemetry.files import days_with_rows, read_rows

    spec = DatasetSpec.model_validate({
        "source": {"path": path}, "entity": {"column": "host"},
        "labels": {"kind": "column", "column": "label"}})
    started = time.perf_counter()
    days = days_with_rows(spec, Path(staging), "bench")
    staged = time.perf_counter() - started
    rows, _ = read_rows(spec, Path(staging), "bench", day=days[len(days) // 2])
    return {"stage_s": staged, "day_read_s": time.perf_counter() - started - staged,
            "day_rows": len(rows), "days": len(days)}


def _pandas(path: str) -> dict[str, float]:
    started = time.perf_counter()
    frame = pd.read_csv(path)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return {"read_s": time.perf_counter() - started, "rows": len(frame)}


def _child(kind: str, path: str, staging: str) -> None:
    out = _declared(path, staging) if kind == "declared" else _pandas(path)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def _measure(kind: str, path: Path, staging: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-m", "bench.ingest", "--child", kind, str(path),
                           str(staging)], check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    with tempfile.TemporaryDirectory(prefix="ds-bench-ingest-") as tmp:
        csv = Path(tmp) / "telemetry.csv"
        started = time.perf_counter()
        write_csv(csv, args.rows)
        size_mib = csv.stat().st_size / 2**20
        print(f"wrote {args.rows:,} rows, {size_mib:.0f} MiB in "
              f"{time.perf_counter() - started:.1f}s")
        declared = _measure("declared", csv, Path(tmp) / "staging")
        baseline = _measure("pandas", csv, Path(tmp) / "unused")
    ratio = declared["peak_rss_mib"] / baseline["peak_rss_mib"]
    print(f"declared ingest: staged in {declared['stage_s']:.1f}s, one day "
          f"({declared['day_rows']:,} rows) in {declared['day_read_s']:.2f}s, peak RSS "
          f"{declared['peak_rss_mib']:.0f} MiB")
    print(f"pandas whole-file read: {baseline['read_s']:.1f}s, peak RSS "
          f"{baseline['peak_rss_mib']:.0f} MiB")
    print(f"peak memory ratio declared / whole-file: {ratio:.2f}")
    document = {"date": dt.date.today().isoformat(), "rows": args.rows,
                "csv_mib": round(size_mib, 1), "declared": declared, "pandas_whole_file": baseline,
                "peak_rss_ratio": round(ratio, 3)}
    out = Path(args.out) if args.out else (
        Path(__file__).parent / "results" / f"ingest-{document['date']}.json")
    atomic_write_text(out, json.dumps(document, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
