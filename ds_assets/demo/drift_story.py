"""The drift episode at the end of `make demo`, run the way the daemon would run it.

Days of drifted telemetry go through the daily pipeline (ingest -> checks -> score -> drift ->
alerts); after each day the drift sensor is evaluated against the demo instance; the retrain run
it requests is launched; a candidate that passes the gate scores the next days in shadow beside
the champion, and the shadow sensor's verdict run is launched; the promotion sensor then
requests the re-scoring backfill, whose runs are launched too. Old vs new model numbers on the
drifted days come from the scored partitions before and after that backfill; those days trained
the new model, so the first day after the retrain window is scored by both models as the
out-of-sample comparison.

In production nobody labels telemetry: with ``labeled=False`` the episode's days arrive without
labels, the retrain screens them for anomalies and the label-free gate decides. The labels are
regenerated (the generator is seeded) only to print the old-vs-new comparison; training and
promotion never see them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from ds_assets.settings import Settings
from ds_assets.training.shadow import pending_candidate
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


def labels_aside(config: Mapping[str, Any], day: str) -> pd.DataFrame:
    """The day's labels, regenerated from the seeded generator for the comparison only."""
    from ds_assets.assets.telemetry import TelemetrySourceConfig, load_telemetry

    frame = load_telemetry(TelemetrySourceConfig(**{**config, "labels": True}), day)
    return frame[["timestamp", "host_id", "label", "anomaly_type"]]


def _labeled(scored: pd.DataFrame, aside: pd.DataFrame | None) -> pd.DataFrame:
    if "label" in scored.columns or aside is None:
        return scored
    return scored.merge(aside, on=["timestamp", "host_id"], how="left", validate="one_to_one")


def day_metrics(assets: Path, day: str, aside: pd.DataFrame | None = None) -> dict[str, Any]:
    """Deployed-flag metrics of the current scored partition and its alerts."""
    return frame_metrics(
        _labeled(pd.read_parquet(assets / "scored_telemetry" / f"{day}.parquet"), aside),
        pd.read_parquet(assets / "alerts" / f"{day}.parquet"))


def bundle_day_metrics(bundle_path: Path, raw: pd.DataFrame,
                       aside: pd.DataFrame | None = None,
                       before: pd.DataFrame | None = None) -> dict[str, Any]:
    """The same metrics for a bundle that is not serving: the day scored, flagged and alerted
    with its own policy, through the code the assets use, continuing from the raw day
    ``before`` where given (as scored_telemetry would), plus its event recall on anomalies
    injected into the day (the label-free gate's evidence)."""
    from ds_assets.monitoring.alerts import alert_events
    from ds_assets.training.dataset_scoring import dataset_scorer, score_frame
    from ds_assets.training.gate import ModelRun, injected_test_rows, measure
    from ds_serving.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    scored = score_frame(dataset_scorer(bundle, "auto"), raw,  # scored_telemetry's backend
                         before=before)
    metrics = frame_metrics(_labeled(scored, aside), alert_events(scored,
                                                                  bundle.manifest.policy.alerting))
    injected = injected_test_rows(raw, list(bundle.manifest.features))
    run = ModelRun.of(bundle_path, raw, injected, before)
    labeled = _labeled(raw, aside)
    real = labeled["label"].to_numpy() == 1 if "label" in labeled else np.zeros(len(raw), bool)
    numbers = measure(run, raw, injected, np.isfinite(run.scores), real)
    return {**metrics, "injected_recall": numbers["injected_event_recall"],
            "injected_pr_auc": numbers["injected_pr_auc"]}


def _false_alerts(scored: pd.DataFrame, alerts: pd.DataFrame) -> int:
    """Alerts with no labeled anomaly row of their entity inside them."""
    if not len(alerts):
        return 0
    if (alerts["anomaly_type"] != "unknown").all():
        return int((alerts["anomaly_type"] == "none").sum())
    anomalous = scored.loc[scored["label"] == 1, ["host_id", "timestamp"]]
    false = 0
    for alert in alerts.itertuples(index=False):
        hits = anomalous[(anomalous["host_id"].astype(str) == str(alert.entity))
                         & (anomalous["timestamp"] >= alert.start)
                         & (anomalous["timestamp"] <= alert.end)]
        false += hits.empty
    return false


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
        "false_alerts": _false_alerts(scored, alerts),
    }


def figure(value: Any, width: int = 0, digits: int = 3) -> str:
    """A number for the demo's printouts; undefined ones (no anomalies in the split, JSON's
    null for an undefined or infinite figure) read n/a."""
    if value is None or value != value:
        return f"{'n/a':>{width}}"
    return f"{float(value):{width}.{digits}f}"


def _metrics_row(day: str, m: Mapping[str, Any]) -> str:
    """One model's line of the old-vs-new tables (``day`` blank on the second model's line)."""
    injected = f" {m['injected_recall']:13.3f}" if "injected_recall" in m else ""
    return (f"  {day:10} {'v' + m['version']:>5} {m['precision']:9.3f} {m['recall']:6.3f} "
            f"{m['f1']:6.3f} {m['false_alarm_rate']:11.4f} {m['alerts']:6d} "
            f"{m['false_alerts']:12d}{injected}")


def registries(defs: dg.Definitions) -> dict[str, Any]:
    """The model registries of ``defs``: the resources sensors use (the daemon gives each
    sensor its required ones; a built context gets them explicitly)."""
    from ds_assets.resources.registry import ModelRegistry

    return {k: v for k, v in (defs.resources or {}).items() if isinstance(v, ModelRegistry)}


def _tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None,
    log_level: int = logging.WARNING,
) -> tuple[list[dg.RunRequest], str | None, str]:
    """One evaluation of a sensor of ``defs``: (run requests, new cursor, skip message). Its log
    lines below ``log_level`` stay off the console (the daemon logs them where it runs)."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      resources=registries(defs))
    context.log.setLevel(log_level)
    data = defs.resolve_sensor_def(name).evaluate_tick(context)
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
    labeled: bool = True,
    sensor_log_level: int = logging.WARNING,
) -> dict[str, Any]:
    """Run the episode and print it; returns the numbers for the summary. Sensors log their
    reasons at INFO, which the tables show already: the console gets those lines only where
    ``sensor_log_level`` lets them through (``--verbose``)."""
    assets = settings.data_dir / "assets"
    first = dt.date.fromisoformat(after) + dt.timedelta(days=1)
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range(n_days)]
    start = days[1]  # the first story day stays normal: no false alarm expected
    drifted = {**drift_source(source, start, drift), "labels": labeled}
    aside = {} if labeled else {d: labels_aside(drifted, d) for d in days}
    print(f"\n[drift 1/5] daily pipeline for {days[0]}..{days[-1]}; a release on {start} "
          f"drifts {', '.join(drifted['drift_features'])}; drift sensor evaluated after each day")
    if not labeled:
        print("  production telemetry: these days arrive without labels (kept aside, seeded, "
              "for the old-vs-new tables only)")
    print(f"  {'day':10} {'drifted':7} {'score':>6} {'W1(score)':>9} {'flag rate':>9} "
          f"{'alerts':>6}  drifted features / sensor")
    cursor: str | None = None
    request: dg.RunRequest | None = None
    for day in days:
        run(defs, "daily_pipeline", instance, partition_key=day,
            run_config={"ops": {"raw_telemetry": {"config": drifted}}})
        report = json.loads((assets / "drift_report" / f"{day}.json").read_text())
        requests, cursor, skip = _tick(defs, instance, "drift_retrain_sensor", cursor,
                                       sensor_log_level)
        decision = f"REQUEST {requests[0].run_key}" if requests else f"skip: {skip}"
        if requests:
            request = requests[0]
        print(f"  {day:10} {report['drifted']!s:7} {figure(report['drift_score'], 6, 2)} "
              f"{figure(report['score']['wasserstein'], 9, 2)} "
              f"{figure(report['anomaly_rate'], 9, 4)} "
              f"{day_metrics(assets, day, aside.get(day))['alerts']:6d}  "
              f"{','.join(report['drifted_features']) or '-'} | {decision}")
    drift_days = [d for d in days if d >= start]
    before = {d: day_metrics(assets, d, aside.get(d)) for d in drift_days}
    if request is None:
        print("  the drift sensor requested no retrain: the story stops here")
        return {"requested": False}

    print(f"\n[drift 2/5] launch the requested retrain ({request.run_key}, window ending "
          f"{request.run_config['ops']['training_set']['config']['end_partition']})")
    run_config = {"ops": {**request.run_config["ops"], "detector": {"config": detector_config}}}
    run(defs, "train_detector", instance, run_config=run_config, tags=request.tags)
    gate = _latest_decision(instance)
    candidate = pending_candidate(settings.models_dir, settings.model_name)
    verdict = ("passed the gate" if candidate is not None
               else "promoted" if gate["promote"] else "refused")
    print(f"  v{gate['challenger_version']} {verdict} on {gate['evidence']} evidence: "
          f"{gate['reason']}")

    later = (dt.date.fromisoformat(days[-1]) + dt.timedelta(days=1)).isoformat()
    shadow: dict[str, Any] = {}
    final = gate
    if candidate is not None:
        shadow_days = [(dt.date.fromisoformat(candidate.after) + dt.timedelta(days=i + 1))
                       .isoformat() for i in range(candidate.days)]
        print(f"\n[drift 3/5] shadow: v{candidate.version} scores {', '.join(shadow_days)} "
              f"beside v{candidate.champion_version}, which keeps serving")
        print(f"  {'day':10} {'model':>5} {'flag rate':>9} {'alerts':>6} {'drift score':>11} "
              f"{'injected recall':>15}")
        for day in shadow_days:
            run(defs, "daily_pipeline", instance, partition_key=day,
                run_config={"ops": {"raw_telemetry": {"config": drifted}}})
            report = json.loads((assets / "shadow_report" / f"{day}.json").read_text())
            shadow[day] = report
            for side in ("champion", "candidate"):
                m = report[side]
                print(f"  {day if side == 'champion' else '':10} {'v' + m['version']:>5} "
                      f"{m['flag_rate']:9.4f} {m['alerts']:6d} {figure(m['drift_score'], 11, 2)} "
                      f"{figure(m['injected_event_recall'], 15, 3)}")
        requests, _, skip = _tick(defs, instance, "shadow_verdict_sensor", None,
                                  sensor_log_level)
        if requests:
            run(defs, requests[0].job_name or "judge_candidate", instance, tags=requests[0].tags)
            final = _latest_decision(instance)
            print(f"  shadow sensor -> verdict: v{candidate.version} "
                  f"{'promoted' if final['promote'] else 'dropped'}: {final['reason']}")
        else:
            print(f"  shadow sensor: {skip}")
        later = shadow_days[0]

    rescore, _, skip = _tick(defs, instance, "champion_rescore_sensor", None,
                             sensor_log_level)
    keys = [str(r.partition_key) for r in rescore]
    print(f"\n[drift 4/5] promotion sensor: {len(keys)} re-score run(s) "
          f"{keys[0] + '..' + keys[-1] if keys else skip}")
    for req in rescore:
        run(defs, req.job_name or "rescore_telemetry", instance,
            partition_key=req.partition_key, tags=req.tags)
    after_rescore = {d: day_metrics(assets, d, aside.get(d)) for d in drift_days}
    print(f"  {'day':10} {'model':>5} {'precision':>9} {'recall':>6} {'F1':>6} "
          f"{'false alarm':>11} {'alerts':>6} {'false alerts':>12} {'drift score':>11}")
    for d in drift_days:
        report = json.loads((assets / "drift_report" / f"{d}.json").read_text())
        for label, m in (("old", before[d]), ("new", after_rescore[d])):
            score = "" if label == "old" else figure(report['drift_score'], 11, 2)
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

    # a day after the retrain window (the first shadow day): out of sample for both models
    print(f"\n[drift 5/5] out of sample: {later}, still drifted, after the retrain window; "
          "both models scored on it")
    if not shadow:
        run(defs, "daily_pipeline", instance, partition_key=later,
            run_config={"ops": {"raw_telemetry": {"config": drifted}}})
    raw = pd.read_parquet(assets / "raw_telemetry" / f"{later}.parquet")
    # both continue from the last drifted day, as that day's scored_telemetry did
    day_before = (dt.date.fromisoformat(later) - dt.timedelta(days=1)).isoformat()
    previous = pd.read_parquet(assets / "raw_telemetry" / f"{day_before}.parquet")
    kept = None if labeled else labels_aside(drifted, later)
    old_version = before[drift_days[0]]["version"]
    new_version = str(gate["challenger_version"])
    unseen = {side: bundle_day_metrics(
        version_dir(settings.models_dir, settings.model_name, version), raw, kept, previous)
        for side, version in (("old", old_version), ("new", new_version))}
    print(f"  {'day':10} {'model':>5} {'precision':>9} {'recall':>6} {'F1':>6} "
          f"{'false alarm':>11} {'alerts':>6} {'false alerts':>12} {'injected recall':>13}")
    for label, m in unseen.items():
        print(_metrics_row(later if label == "old" else "", m))
    old, new = unseen["old"]["false_alarm_rate"], unseen["new"]["false_alarm_rate"]
    print(f"  false-alarm rate {old:.4f} -> {new:.4f} "
          f"({old / new if new else float('inf'):.1f}x fewer); event recall on injected "
          f"anomalies {unseen['old']['injected_recall']:.3f} -> "
          f"{unseen['new']['injected_recall']:.3f}")
    return {"requested": True, "promoted": bool(final["promote"]),
            "labeled": labeled, "gate": gate, "decision": final, "shadow": shadow,
            "rescored": keys, "mean": mean, "out_of_sample": {"day": later, **unseen}}


def _latest_decision(instance: dg.DagsterInstance) -> dict[str, Any]:
    """The decision of the latest ``champion`` materialization (gate or shadow verdict)."""
    event = instance.get_latest_materialization_event(dg.AssetKey("champion"))
    assert event is not None and event.asset_materialization is not None
    return dict(event.asset_materialization.metadata["decision"].value)  # type: ignore[arg-type]
