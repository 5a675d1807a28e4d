"""Training and dataset scoring on a busy machine: the thread policy against library defaults.

Each measurement runs in a fresh child process, idle and then beside one CPU-bound competitor
process (``while True: pass``), interleaved, ``--repeats`` times; medians are reported. The
figure of merit is the slowdown (busy / idle) of each setting, and the busy-machine ratio of
the library default to our policy (``ds_serving.threads``: one torch thread; for onnxruntime
the affinity mask's CPUs without spinning). The third row sets torch's threads to the CPU count
explicitly, which is what collapses under load.

    .venv/bin/python -m bench.contention [--out PATH]  (default bench/results/contention-DATE.json)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ds_serving.threads import thread_policy

FEATURES = [f"f{i}" for i in range(8)]
TRAINING, SCORING = thread_policy("training", {}).threads, thread_policy("scoring", {}).threads
SETTINGS = {
    # name: (torch threads or None = torch's default, onnxruntime threads, spinning)
    "library default": (None, 0, True),
    "policy": (TRAINING, SCORING, False),
    "affinity CPUs set explicitly": (SCORING, SCORING, False),
}


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    mix = rng.normal(size=(2, len(FEATURES)))
    return (latent @ mix + 0.1 * rng.normal(size=(n, len(FEATURES)))).astype(np.float32)


def child(task: str, setting: str, rows: int, epochs: int) -> dict[str, Any]:
    """One timed task in this process; returns its seconds."""
    import torch

    from ds_assets.training.detectors import DetectorParams, train_detector

    threads, ort_threads, spinning = SETTINGS[setting]
    params = DetectorParams(family="dense_ae", epochs=epochs, patience=epochs, seed=0)
    train, val = _rows(rows, 0), _rows(rows // 5, 1)
    if task == "train":
        started = time.perf_counter()
        trained = train_detector(params, train, val, FEATURES, device=torch.device("cpu"),
                                 threads=threads)
        return {"seconds": time.perf_counter() - started,
                "threads": trained.training_summary["threads"]}
    from ds_assets.training.export import export_onnx
    from ds_serving.scoring import Scorer, score_rows

    trained = train_detector(DetectorParams(family="dense_ae", epochs=1, seed=0), train[:5000],
                             val[:1000], FEATURES, device=torch.device("cpu"), threads=1)
    scorer = Scorer(export_onnx(trained), features=FEATURES, threshold=float("inf"),
                    backend="cpu", intra_op_threads=ort_threads, allow_spinning=spinning)
    x = _rows(rows, 2)
    score_rows(scorer, x[:65_536])  # warm-up
    started = time.perf_counter()
    score_rows(scorer, x)
    return {"seconds": time.perf_counter() - started, "threads": ort_threads}


def measure(task: str, setting: str, rows: int, epochs: int, busy: bool) -> float:
    competitor = (subprocess.Popen([sys.executable, "-c", "while True: pass"])
                  if busy else None)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.contention", "--child", task, "--setting", setting,
             "--rows", str(rows), "--epochs", str(epochs)],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=("train", "score"))
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="library default")
    parser.add_argument("--train-rows", type=int, default=50_000)
    parser.add_argument("--score-rows", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default bench/results/contention-<date>.json)")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.setting, args.rows, args.epochs)))
        return 0
    tasks = {"train": args.train_rows, "score": args.score_rows}
    times: dict[str, dict[str, dict[str, list[float]]]] = {
        t: {s: {"idle": [], "busy": []} for s in SETTINGS} for t in tasks}
    for _ in range(args.repeats):  # interleaved: A idle, A busy, B idle, B busy, ...
        for task, rows in tasks.items():
            for setting in SETTINGS:
                for load in ("idle", "busy"):
                    times[task][setting][load].append(
                        measure(task, setting, rows, args.epochs, load == "busy"))
    table: dict[str, Any] = {}
    for task in tasks:
        table[task] = {}
        for setting in SETTINGS:
            idle = statistics.median(times[task][setting]["idle"])
            busy = statistics.median(times[task][setting]["busy"])
            table[task][setting] = {"idle_s": idle, "busy_s": busy, "slowdown": busy / idle,
                                    "runs": times[task][setting]}
        default, policy = (table[task][s] for s in list(SETTINGS)[:2])
        table[task]["busy_default_over_policy"] = default["busy_s"] / policy["busy_s"]
        table[task]["idle_default_over_policy"] = default["idle_s"] / policy["idle_s"]
    result = {"date": dt.date.today().isoformat(), "cpus": len(os.sched_getaffinity(0)),
              "train_rows": args.train_rows, "epochs": args.epochs,
              "score_rows": args.score_rows, "repeats": args.repeats, "results": table}
    for task in tasks:
        for setting in SETTINGS:
            r = table[task][setting]
            print(f"{task:5} {setting:32} idle {r['idle_s']:7.2f}s  busy {r['busy_s']:7.2f}s  "
                  f"slowdown {r['slowdown']:5.2f}x")
        print(f"{task:5} busy: library default / policy = "
              f"{table[task]['busy_default_over_policy']:.2f}x; idle: "
              f"{table[task]['idle_default_over_policy']:.2f}x")
    out = args.out or Path(__file__).parent / "results" / f"contention-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
