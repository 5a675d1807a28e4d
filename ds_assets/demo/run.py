"""`make demo`: materialize the whole graph for a week of telemetry into the local instance.

Runs the same jobs the Dagster UI and daemon run, against the persistent instance in
$DAGSTER_HOME, so `dagster dev` afterwards shows every materialization.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import dagster as dg

from ds_assets.cli import declaration_path
from ds_assets.components import load_declaration
from ds_assets.definitions import build_dataset_definitions
from ds_assets.demo.drift_story import figure, run_drift_story
from ds_assets.job_outcome import failed_checks, interrupted, run_in_process, step_failures
from ds_assets.sensors.records import previous_days
from ds_assets.settings import Settings
from ds_serving import jsonio


def _run(defs: dg.Definitions, job: str, instance: dg.DagsterInstance, *,
         console_level: str = "CRITICAL", **kwargs: Any) -> None:
    """Run a job in process. Dagster's step events (about a thousand DEBUG lines for the demo,
    stack traces with its errors) stay in the instance's event log, shown by the UI; the console
    gets the steps' warnings, and on failure why each step failed (unless ``--verbose``)."""
    result = run_in_process(defs.resolve_job_def(job), instance, console_level, **kwargs)
    if not result.success:
        steps = step_failures(result.all_events)
        if interrupted(steps):
            raise KeyboardInterrupt
        print(f"job {job} failed ({kwargs.get('partition_key', '')}):", *steps,
              *failed_checks(result.all_events), sep="\n  ", file=sys.stderr)
        raise SystemExit(1)


DEMO_DATA = ("assets", "models", "mlartifacts", "mlflow.db", "reports")
DAGSTER_STATE = ("storage", "history", "schedules", "logs", ".logs_queue", ".telemetry", ".nux")


def _fresh_state(data_dir: Path, home: Path) -> None:
    """Remove what a previous demo wrote (only those paths), so v1 -> drift -> v2 replays."""
    stale = [p for p in (*(data_dir / n for n in DEMO_DATA), *(home / n for n in DAGSTER_STATE))
             if p.exists()]
    if stale:
        print(f"starting fresh: removing {len(stale)} path(s) of the previous demo "
              "(--keep keeps them)")
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--end", default="2026-11-07", help="last day (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--interval", type=int, default=60, help="seconds between rows")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--anomaly-rate", type=float, default=0.01)
    parser.add_argument("--drift-days", type=int, default=4,
                        help="days of the drift episode after --end (0 skips it)")
    parser.add_argument("--drift-labels", choices=("unlabeled", "labeled"), default="unlabeled",
                        help="whether the drift episode's days carry labels; production "
                             "telemetry does not (the retrain screens them, the label-free "
                             "gate decides)")
    parser.add_argument("--summary", type=Path, default=None,
                        help="also write the headline numbers and the drift episode's as JSON")
    parser.add_argument("--verbose", action="store_true",
                        help="print Dagster's step events (DEBUG) on the console too")
    parser.add_argument("--keep", action="store_true",
                        help="keep the previous demo's instance and data instead of starting fresh")
    args = parser.parse_args(argv)
    if "DAGSTER_HOME" not in os.environ:
        print("DAGSTER_HOME is not set; run `make demo`, which sets up .dagster_home/")
        return 2
    try:
        return _demo(args)
    except KeyboardInterrupt:  # in a step (Dagster fails the run) or between runs
        print("\ndemo interrupted: what finished is kept in the instance and data directory; "
              "`make demo` starts fresh again", file=sys.stderr)
        return 130


def _demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    settings = Settings.from_env()
    if not args.keep:
        _fresh_state(settings.data_dir, Path(os.environ["DAGSTER_HOME"]))
    # the demo's dataset is the `demo` declaration (ds_assets/defs/demo): the generator's slice
    declared = load_declaration(declaration_path("demo"))
    defs = build_dataset_definitions(declared.dataset(settings), settings)
    instance = dg.DagsterInstance.get()
    run = partial(_run, console_level="DEBUG" if args.verbose else "CRITICAL")
    days = previous_days(args.end, args.days)
    source = {"n_hosts": args.hosts, "interval_seconds": args.interval,
              "anomaly_rate": args.anomaly_rate}

    print(f"[1/3] ingest + validate {len(days)} days x {args.hosts} hosts @ {args.interval}s")
    for day in days:
        run(defs, "ingest_telemetry", instance, partition_key=day,
             run_config={"ops": {"raw_telemetry": {"config": source}}})
    t_ingest = time.perf_counter() - started

    print("[2/3] train -> export ONNX -> parity check -> bundle -> evaluate -> champion")
    run(defs, "train_detector", instance, run_config={"ops": {
        "training_set": {"config": {"n_partitions": len(days), "end_partition": days[-1]}},
        "detector": {"config": {"epochs": args.epochs}},
    }})
    t_train = time.perf_counter() - started - t_ingest

    print(f"[3/3] score {len(days)} days with the champion, drift reports and alerts")
    for day in days:
        run(defs, "rescore_telemetry", instance, partition_key=day)
    wall = time.perf_counter() - started

    assets_dir = settings.data_dir / "assets"
    report = json.loads((assets_dir / "evaluation_report.json").read_text())
    champion = json.loads((assets_dir / "champion.json").read_text())
    rows = len(days) * args.hosts * 86_400 // args.interval
    t_score = wall - t_ingest - t_train
    print(f"\nDone in {wall:.1f}s (ingest {t_ingest:.1f}s, training {t_train:.1f}s, "
          f"scoring {t_score:.1f}s), {rows:,} rows.")
    print(f"  champion   : {champion['name']} v{champion['version']} "
          f"({champion['decision']['reason']})")
    print(f"  bundle     : {Path(report['model']['path'])}")
    print(f"  report     : {assets_dir / 'evaluation_report.json'}")
    if report.get("report_html"):
        print(f"  html report: {report['report_html']}")
    print(f"  mlflow     : {settings.mlflow_tracking_uri}")
    print("  test split : rows={n_rows:,} anomalies={n_anomalies:,} threshold={threshold:.4g}"
          .format(**report))
    print("  metrics    : " + " ".join(
        f"{name}={figure(report.get(key))}" for name, key in (
            ("precision", "precision"), ("recall", "recall"), ("f1", "f1"),
            ("roc_auc", "roc_auc"), ("pr_auc", "pr_auc"), ("best_f1(oracle)", "best_f1_oracle"))))
    recall = ", ".join(f"{k}={v['recall']:.2f}" for k, v in report["per_type_recall"].items())
    print(f"  recall/type: {recall}")
    robustness = json.loads((assets_dir / "robustness_report.json").read_text())
    print("  robustness : " + ", ".join(
        f"{r['scenario']} F1={r['f1']:.3f}" for r in robustness["scenarios"]))
    story: dict[str, Any] = {}
    if args.drift_days:
        t_story = time.perf_counter()
        story = run_drift_story(
            defs, instance, settings, run, after=days[-1], source=source,
            detector_config={"epochs": args.epochs}, n_days=args.drift_days,
            labeled=args.drift_labels == "labeled",
            sensor_log_level=logging.INFO if args.verbose else logging.WARNING,
        )
        print(f"\nDrift episode in {time.perf_counter() - t_story:.1f}s; demo wall time "
              f"{time.perf_counter() - started:.1f}s.")
    if args.summary is not None:
        args.summary.write_text(jsonio.dumps({
            "wall_s": time.perf_counter() - started, "drift_labels": args.drift_labels,
            "test": {k: report.get(k) for k in ("precision", "recall", "f1", "roc_auc",
                                                "pr_auc")},
            "drift": story}, indent=2, default=str))
    print("\nUI: `make dev` then open http://127.0.0.1:3000 (same DAGSTER_HOME, every run shown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
