"""The drift episode at the end of `make demo`, run the way the daemon would run it.

Days of drifted telemetry go through the daily pipeline (ingest -> checks -> score -> drift ->
alerts); after each day the drift sensor is evaluated against the demo instance; the retrain run
it requests is launched; the promotion sensor then requests the re-scoring backfill, whose runs
are launched too. Old vs new model numbers on the drifted days come from the scored partitions
before and after that backfill; those days trained the new model, so a further drifted day after
the retrain window is scored by both models as the out-of-sample comparison.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from ds_assets.settings import Settings
from ds_serving.bundle import version_dir

Runner = Callable[..., None]

DRIFT_FEATURES = ["latency_ms", "cpu_util", "error_rate"]
# A release: slower, noisier, more errors, and a new 6-hour batch cycle (noise-std units).
DEMO_DRIFT: dict[str, Any] = {
    "drift_features": DRIFT_FEATURES, "drift_mean_shift": 4.0, "drift_scale": 1.5,
    "drift_seasonal_amplitude": 3.0, "drift_seasonal_period_hours": 6.0,
}


def drift_source(
    base: Mapping[str, Any], start: str, drift: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The raw_telemetry config of the episode: ``base`` plus drift from ``start`` on."""
    return {**base, **DEMO_DRIFT, **dict(drift or {}), "drift_start": start}


def day_metrics(assets: Path, day: str) -> dict[str, Any]:
    """Deployed-flag metrics of the current scored partition and its alerts."""
    return frame_metrics(pd.read_parquet(assets / "scored_telemetry" / f"{day}.parquet"),
                         pd.read_parquet(assets / "alerts" / f"{day}.parquet"))


def bundle_day_metrics(bundle_path: Path, raw: pd.DataFrame) -> dict[str, Any]:
    """The same metrics for a bundle that is not serving: the day scored, flagged and alerted
    with its own policy, through the code the assets use."""
    from ds_assets.monitoring.alerts import alert_events
    from ds_assets.training.datasets import score_frame
    from ds_serving.bundle import load_bundle
    from ds_serving.scoring import Scorer

    bundle = load_bundle(bundle_path)
    scored = score_frame(Scorer.from_bundle(bundle), raw)  # the backend scored_telemetry uses
    return frame_metrics(scored, alert_events(scored, bundle.manifest.policy.alerting))


def frame_metrics(scored: pd.DataFrame, alerts: pd.DataFrame) -> dict[str, Any]:
    y = scored["label"].to_numpy(bool)
    f = scored["is_anomaly"].to_numpy(bool)
    tp, fp, fn = int((y & f).sum()), int((~y & f).sum()), int((y & ~f).sum())
    return {
        "version": str(scored["model_version"].iloc[0]),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "false_alarm_rate": fp / max(int((~y).sum()), 1),
        "alerts": len(alerts),
        "false_alerts": int((alerts["anomaly_type"] == "none").sum()) if len(alerts) else 0,
    }


def _metrics_row(day: str, m: Mapping[str, Any]) -> str:
    """One model's line of the old-vs-new tables (``day`` blank on the second model's line)."""
    return (f"  {day:10} {'v' + m['version']:>5} {m['precision']:9.3f} {m['recall']:6.3f} "
            f"{m['f1']:6.3f} {m['false_alarm_rate']:11.4f} {m['alerts']:6d} "
            f"{m['false_alerts']:12d}")


def _tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None
) -> tuple[list[dg.RunRequest], str | None, str]:
    """One evaluation of a sensor of ``defs``: (run requests, new cursor, skip message)."""
    data = defs.resolve_sensor_def(name).evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    )
    return list(data.run_requests or []), data.cursor, data.skip_message or ""


def run_drift_story(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    settings: Settings,
    run: Runner,
    *,
    after: str,
    source: Mapping[str, Any],
    detector_config: Mapping[str, Any],
    n_days: int = 4,
    drift: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the episode and print it; returns the numbers for the summary."""
    assets = settings.data_dir / "assets"
    first = dt.date.fromisoformat(after) + dt.timedelta(days=1)
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range(n_days)]
    start = days[1]  # the first story day stays normal: no false alarm expected
    drifted = drift_source(source, start, drift)
    print(f"\n[drift 1/4] daily pipeline for {days[0]}..{days[-1]}; a release on {start} "
          f"drifts {', '.join(drifted['drift_features'])}; drift sensor evaluated after each day")
    print(f"  {'day':10} {'drifted':7} {'score':>6} {'W1(score)':>9} {'flag rate':>9} "
          f"{'alerts':>6}  drifted features / sensor")
    cursor: str | None = None
    request: dg.RunRequest | None = None
    for day in days:
        run(defs, "daily_pipeline", instance, partition_key=day,
            run_config={"ops": {"raw_telemetry": {"config": drifted}}})
        report = json.loads((assets / "drift_report" / f"{day}.json").read_text())
        requests, cursor, skip = _tick(defs, instance, "drift_retrain_sensor", cursor)
        decision = f"REQUEST {requests[0].run_key}" if requests else f"skip: {skip}"
        if requests:
            request = requests[0]
        print(f"  {day:10} {report['drifted']!s:7} {report['drift_score']:6.2f} "
              f"{report['score']['wasserstein']:9.2f} {report['anomaly_rate']:9.4f} "
              f"{day_metrics(assets, day)['alerts']:6d}  "
              f"{','.join(report['drifted_features']) or '-'} | {decision}")
    drift_days = [d for d in days if d >= start]
    before = {d: day_metrics(assets, d) for d in drift_days}
    if request is None:
        print("  the drift sensor requested no retrain: the story stops here")
        return {"requested": False}

    print(f"\n[drift 2/4] launch the requested retrain ({request.run_key}, window ending "
          f"{request.run_config['ops']['training_set']['config']['end_partition']})")
    run_config = {"ops": {**request.run_config["ops"], "detector": {"config": detector_config}}}
    run(defs, "train_detector", instance, run_config=run_config, tags=request.tags)
    champion = json.loads((assets / "champion.json").read_text())
    print(f"  champion: v{champion['version']} ({champion['decision']['reason']})")

    rescore, _, skip = _tick(defs, instance, "champion_rescore_sensor", None)
    keys = [str(r.partition_key) for r in rescore]
    print(f"\n[drift 3/4] promotion sensor: {len(keys)} re-score run(s) "
          f"{keys[0] + '..' + keys[-1] if keys else skip}")
    for req in rescore:
        run(defs, req.job_name or "rescore_telemetry", instance,
            partition_key=req.partition_key, tags=req.tags)
    after_rescore = {d: day_metrics(assets, d) for d in drift_days}
    print(f"  {'day':10} {'model':>5} {'precision':>9} {'recall':>6} {'F1':>6} "
          f"{'false alarm':>11} {'alerts':>6} {'false alerts':>12} {'drift score':>11}")
    for d in drift_days:
        report = json.loads((assets / "drift_report" / f"{d}.json").read_text())
        for label, m in (("old", before[d]), ("new", after_rescore[d])):
            score = "" if label == "old" else f"{report['drift_score']:11.2f}"
            print(_metrics_row(d if label == "old" else "", m) + f" {score}")
    mean = {
        side: {k: float(np.mean([m[k] for m in ms.values()]))
               for k in ("precision", "recall", "f1", "false_alarm_rate", "alerts")}
        for side, ms in (("old", before), ("new", after_rescore))
    }
    print("  mean over drifted days: " + "; ".join(
        f"{side} F1={m['f1']:.3f} false-alarm={m['false_alarm_rate']:.4f} "
        f"alerts={m['alerts']:.0f}" for side, m in mean.items()))
    print("  (these days are inside the new model's training window: their normal rows "
          "trained it)")

    # a day after the retrain window: out of sample for the new model as for the old one
    later = (dt.date.fromisoformat(days[-1]) + dt.timedelta(days=1)).isoformat()
    print(f"\n[drift 4/4] out of sample: {later}, still drifted, after the retrain window; "
          "daily pipeline with the new champion, the old model scored beside it")
    run(defs, "daily_pipeline", instance, partition_key=later,
        run_config={"ops": {"raw_telemetry": {"config": drifted}}})
    raw = pd.read_parquet(assets / "raw_telemetry" / f"{later}.parquet")
    old_version = before[drift_days[0]]["version"]
    old_bundle = version_dir(settings.models_dir, settings.model_name, old_version)
    unseen = {"old": bundle_day_metrics(old_bundle, raw),
              "new": day_metrics(assets, later)}
    for label, m in unseen.items():
        print(_metrics_row(later if label == "old" else "", m))
    return {"requested": True, "promoted": bool(champion["decision"]["promote"]),
            "rescored": keys, "mean": mean, "out_of_sample": {"day": later, **unseen}}
