"""Our dense autoencoder against PyOD's AutoEncoder: training time and accuracy, same rows.

PyOD runs in its own throwaway environment under ``bench/results/peers/`` (pinned, created on
first use, not in git), so it never enters the platform's dependencies. Both train on the
normal training rows of a week of generated telemetry (``build_training_set``, as the graph
splits it) with the same layer sizes, epochs budget, batch size and one torch thread; both are
scored on the test split and on a held-out day after the window, and judged by the same
numpy metrics (PR-AUC, ROC-AUC). PyOD keeps its own defaults otherwise (standard scaling,
batch norm, dropout 0.2, ReLU): that is the library a user would compare us with.

    .venv/bin/python -m bench.pyod_peer [--epochs 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.output import write_results
from bench.peers import ensure_env

ROOT = Path(__file__).resolve().parents[1]
PINS = ("pyod==3.6.7", "torch==2.13.0", "tqdm==4.70.1")  # pyod 3.6.7 imports tqdm undeclared
DAYS = [dt.date(2026, 11, 1) + dt.timedelta(days=i) for i in range(8)]  # 7 to train, 1 held out


def rows() -> dict[str, pd.DataFrame]:
    from ds_assets.telemetry.generator import generate_day
    from ds_assets.training.datasets import build_training_set, split_rows

    frames = {d.isoformat(): generate_day(d) for d in DAYS}
    held_out = frames.pop(DAYS[-1].isoformat())
    training_set = build_training_set(frames)
    return {"train": split_rows(training_set, "train"), "val": split_rows(training_set, "val"),
            "test": split_rows(training_set, "test"), "held_out": held_out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from ds_assets.reporting.evaluation import average_precision, roc_auc
    from ds_assets.telemetry.generator import FEATURES
    from ds_assets.training.detectors import DetectorParams, train_detector
    from ds_assets.training.export import export_onnx
    from ds_serving.scoring import Scorer

    python = ensure_env("pyod-env", PINS)
    data = rows()
    x = {name: frame[list(FEATURES)].to_numpy(np.float32) for name, frame in data.items()}
    params = DetectorParams(family="dense_ae", epochs=args.epochs)

    started = time.perf_counter()
    trained = train_detector(params, x["train"], x["val"], FEATURES,
                             device=torch.device("cpu"), threads=1)
    ours_seconds = time.perf_counter() - started
    scorer = Scorer(export_onnx(trained), features=FEATURES, threshold=1.0, backend="cpu")
    ours = {name: scorer.score(x[name]).scores for name in ("test", "held_out")}

    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", train=x["train"], test=x["test"],
                 held_out=x["held_out"])
        done = subprocess.run(
            [str(python), str(ROOT / "bench" / "pyod_child.py"), str(Path(tmp) / "in.npz"),
             str(Path(tmp) / "out.npz"), ",".join(map(str, params.hidden)), str(args.epochs),
             str(params.batch_size)],
            check=True, capture_output=True, text=True)
        child = json.loads(done.stdout.strip().splitlines()[-1])
        with np.load(Path(tmp) / "out.npz") as out:
            peer = {name: out[name] for name in ("test", "held_out")}

    result: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rows": {name: len(frame) for name, frame in data.items()},
        "settings": {"hidden": list(params.hidden), "epochs": args.epochs,
                     "batch_size": params.batch_size, "threads": 1},
        "ours": {"fit_seconds": ours_seconds,
                 "epochs_run": trained.training_summary.get("epochs_run")},
        "pyod": {**child, "pins": list(PINS)},
    }
    for name in ("test", "held_out"):
        labels = data[name]["label"].to_numpy()
        result["ours"][name] = {"pr_auc": average_precision(labels, ours[name]),
                                "roc_auc": roc_auc(labels, ours[name])}
        result["pyod"][name] = {"pr_auc": average_precision(labels, peer[name]),
                                "roc_auc": roc_auc(labels, peer[name])}
    result["training_speedup"] = child["fit_seconds"] / ours_seconds
    print(f"training ({result['rows']['train']:,} rows, up to {args.epochs} epochs, 1 thread): "
          f"ours {ours_seconds:.1f} s ({result['ours']['epochs_run']} epochs run), PyOD "
          f"{child['fit_seconds']:.1f} s -> {result['training_speedup']:.2f}x")
    for name in ("test", "held_out"):
        o, p = result["ours"][name], result["pyod"][name]
        print(f"{name:>9}: PR-AUC ours {o['pr_auc']:.4f} PyOD {p['pr_auc']:.4f} "
              f"(ratio {o['pr_auc'] / p['pr_auc']:.2f}); ROC-AUC ours {o['roc_auc']:.4f} "
              f"PyOD {p['roc_auc']:.4f}")
    write_results(result, "pyod-peer", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
