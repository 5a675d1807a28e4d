"""The asset graph end to end on tiny data, through the real jobs and resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from ds_assets.assets.detector import build_training_set_asset
from ds_assets.assets.telemetry import build_raw_telemetry_asset, build_raw_telemetry_checks
from ds_assets.dataset import Dataset
from ds_assets.definitions import build_definitions, build_resources
from ds_assets.settings import Settings
from ds_serving.bundle import CHAMPION_FILE, load_champion
from tests.conftest import DAYS, TINY_SOURCE
from tests.support.training import TEMPORAL_TWO_DAYS_CONFIG, TRAIN_CONFIG, ingested


def _ingest(defs: dg.Definitions, instance: dg.DagsterInstance, day: str) -> None:
    result = defs.resolve_job_def("ingest_telemetry").execute_in_process(
        instance=instance,
        partition_key=day,
        run_config={"ops": {"raw_telemetry": {"config": TINY_SOURCE}}},
    )
    assert result.success


def _failure_messages(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        e.event_specific_data.error.to_string()  # type: ignore[union-attr]
        for e in result.all_events
        if e.is_step_failure
    )


def test_definitions_load(settings: Settings) -> None:
    defs = build_definitions(settings)
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys >= {
        "raw_telemetry", "training_set", "detector", "onnx_model", "model_bundle",
        "tensorrt_engine",
        "evaluation_report", "champion", "scored_telemetry", "drift_report", "alerts",
        "robustness_report",
    }
    assert {j.name for j in defs.resolve_all_job_defs()} >= {
        "ingest_telemetry", "train_detector", "score_telemetry", "daily_pipeline",
        "rescore_telemetry",
    }
    assert {s.name for s in defs.schedules or []} == {
        "daily_pipeline_schedule", "weekly_retrain_schedule"}
    assert {s.name for s in defs.sensors or []} >= {
        "drift_retrain_sensor", "champion_rescore_sensor"}


def test_whole_graph_on_tiny_data(settings: Settings) -> None:
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        _ingest(defs, instance, day)
    train = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config=TRAIN_CONFIG
    )
    assert train.success
    checks = {e.check_name: e.passed for e in train.get_asset_check_evaluations()}
    assert checks == {"onnx_parity": True}

    bundle = load_champion(settings.models_dir, settings.model_name)
    assert bundle.manifest.version == "1"
    assert bundle.manifest.lineage["partitions"] == DAYS
    assert bundle.manifest.threshold_rule["rule"] == "quantile"
    assert (settings.models_dir / settings.model_name / CHAMPION_FILE).is_file()

    report = json.loads((settings.data_dir / "assets" / "evaluation_report.json").read_text())
    assert report["n_anomalies"] > 0
    for metric in ("precision", "recall", "f1", "roc_auc", "pr_auc"):
        assert 0.0 <= report[metric] <= 1.0, metric
    assert report["roc_auc"] > 0.5  # even one epoch ranks anomalies above normal rows
    assert report["tp"] + report["fp"] + report["fn"] + report["tn"] == report["n_rows"]

    scored = defs.resolve_job_def("score_telemetry").execute_in_process(
        instance=instance, partition_key=DAYS[0]
    )
    assert scored.success
    assets = settings.data_dir / "assets"
    frame = pd.read_parquet(assets / "scored_telemetry" / f"{DAYS[0]}.parquet")
    raw = pd.read_parquet(assets / "raw_telemetry" / f"{DAYS[0]}.parquet")
    assert len(frame) == len(raw)
    assert (frame["model_version"] == "1").all()
    assert (frame["is_anomaly"] == (frame["score"] > bundle.manifest.threshold)).all()

    # dataset analytics shown in the UI: raw day (top-k, hourly series, histograms) and scored
    # day (flag rate, top-k, hourly, the champion's errors by anomaly type/region/project)
    raw_meta = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_telemetry"), asset_partitions=[DAYS[0]]),
        limit=1).records[0].asset_materialization.metadata  # type: ignore[union-attr]
    assert {"top_anomalous", "hourly", "histograms", "features", "anomaly_types"} <= set(raw_meta)
    assert "![hourly cpu_util and anomaly rate](data:image/png;base64," in raw_meta["hourly"].value
    scored_meta = scored.asset_materializations_for_node("scored_telemetry")[0].metadata
    assert scored_meta["rows"].value == len(frame)
    assert scored_meta["flagged_rows"].value == int(frame["is_anomaly"].sum())
    assert {"top_flagged", "hourly", "errors_by_anomaly_type", "errors_by_region",
            "errors_by_project_id"} <= set(scored_meta)
    assert "spike" in scored_meta["errors_by_anomaly_type"].value
    robustness = train.asset_materializations_for_node("robustness_report")[0].metadata
    assert "clean" in robustness["scenarios"].value and "missing" in robustness["scenarios"].value

    # A second training run re-evaluates the champion on the same test set before promoting.
    # It keeps the validation split's labeled anomalies, so `auto` calibrates best-F1 on them.
    # What the assets logged to MLflow: training params and loss curve, test metrics, the
    # rendered report, and the registered model version of the bundle.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    run_id = bundle.manifest.lineage["mlflow_run_id"]
    logged = client.get_run(run_id).data
    assert logged.params["family"] == "dense_ae" and logged.params["bundle_version"] == "1"
    assert logged.params["hidden"] == "8,3" and logged.params["kind"] == bundle.manifest.kind
    assert len(client.get_metric_history(run_id, "val_loss")) == 1  # one epoch
    assert logged.metrics["test_pr_auc"] == pytest.approx(report["pr_auc"])
    assert "baseline_isolation_forest_pr_auc" in logged.metrics
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert "evaluation/report.html" in artifacts
    # (the MLflow store is shared by the session's tests: other tests register versions too)
    registered = client.search_model_versions(f"name='{settings.model_name}'")
    assert [v.run_id for v in registered].count(run_id) == 1

    # The alerting policy travels in the manifest (defaults for v1, run config for v2).
    assert bundle.manifest.alerting == {"k": 3, "n": 5, "m": 10, "cooldown": 600.0}
    labeled = {"ops": {**TRAIN_CONFIG["ops"], "training_set": {"config": {
        **TRAIN_CONFIG["ops"]["training_set"]["config"], "labeled_validation": True}},
        "model_bundle": {"config": {"alert_k": 2, "alert_n": 4, "alert_cooldown_seconds": 60}}}}
    again = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config=labeled
    )
    assert again.success, _failure_messages(again)
    v2 = json.loads((settings.models_dir / settings.model_name / "2" / "config.json").read_text())
    assert v2["threshold"]["rule"] == "best_f1"
    assert v2["threshold"]["calibration_positives"] > 0
    assert v2["alerting"] == {"k": 2, "n": 4, "m": 10, "cooldown": 60.0}
    decision = json.loads((settings.data_dir / "assets" / "champion.json").read_text())
    assert decision["decision"]["challenger_version"] == "2"
    assert decision["decision"]["champion_version"] == "1"
    assert decision["decision"]["champion_pr_auc"] is not None
    assert decision["version"] == ("2" if decision["decision"]["promote"] else "1")


def _broken_csv(path: Path) -> Path:
    rows = 50
    data = {f"f{i}": [float(i + r % 7) for r in range(rows)] for i in range(1, 9)}
    data["label"] = [0] * (rows - 1) + [2]  # a label outside {0, 1}
    data["f3"][4] = float("nan")  # and a missing feature value
    pd.DataFrame(data).to_csv(path, index=False)
    return path


def test_failing_blocking_check_stops_training(
    settings: Settings, dataset: Dataset, tmp_path: Path
) -> None:
    broken = _broken_csv(tmp_path / "broken.csv")
    result = dg.materialize(
        [build_raw_telemetry_asset(dataset), build_raw_telemetry_checks(dataset),
         build_training_set_asset(dataset)],
        resources=build_resources(settings),
        partition_key=DAYS[0],
        run_config={
            "ops": {
                "raw_telemetry": {"config": {"source": "labeled_csv", "path": str(broken)}},
                "training_set": {"config": {"n_partitions": 1}},
            }
        },
        raise_on_error=False,
    )
    outcomes = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert outcomes["label_domain"] is False
    assert outcomes["features_not_null"] is False
    assert outcomes["unique_host_timestamp"] is True
    assert result.asset_materializations_for_node("raw_telemetry")
    assert not result.asset_materializations_for_node("training_set")
    assert not (settings.data_dir / "assets" / "training_set.parquet").exists()


def test_scoring_without_a_champion_says_what_to_do(settings: Settings) -> None:
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    _ingest(defs, instance, DAYS[0])
    result = defs.resolve_job_def("score_telemetry").execute_in_process(
        instance=instance, partition_key=DAYS[0], raise_on_error=False
    )
    assert not result.success
    message = _failure_messages(result)
    assert "no champion for model 'test-ae'" in message
    assert "materialize the 'champion' asset" in message
    assert not (settings.data_dir / "assets" / "scored_telemetry").exists()


def test_bad_source_config_names_the_problem(
    settings: Settings, dataset: Dataset, tmp_path: Path
) -> None:
    result = dg.materialize(
        [build_raw_telemetry_asset(dataset)],
        resources=build_resources(settings),
        partition_key=DAYS[0],
        run_config={"ops": {"raw_telemetry": {"config": {
            "source": "labeled_csv", "path": str(tmp_path / "{date}.csv")}}}},
        raise_on_error=False,
    )
    assert not result.success
    assert f"{DAYS[0]}.csv does not exist" in _failure_messages(result)
    assert not (settings.data_dir / "assets" / "raw_telemetry").exists()


@pytest.mark.parametrize("day", DAYS[:1])
def test_scored_rows_match_the_scorer(settings: Settings, day: str) -> None:
    """Dataset scoring and the ds_serving scorer agree on the same rows (same code path)."""
    from ds_assets.training.dataset_scoring import score_frame
    from ds_serving.scoring import Scorer

    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    for d in DAYS:
        _ingest(defs, instance, d)
    assert defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config=TRAIN_CONFIG
    ).success
    raw = pd.read_parquet(settings.data_dir / "assets" / "raw_telemetry" / f"{day}.parquet")
    scorer = Scorer.from_bundle(load_champion(settings.models_dir, settings.model_name))
    chunked = score_frame(scorer, raw, chunk_rows=7)
    whole = scorer.score(raw[list(scorer.features)].to_numpy("float32"))
    assert (chunked["score"].to_numpy() == whole.scores).all()


def test_a_day_is_scored_continuing_from_the_stored_day_before(settings: Settings,
                                                              tmp_path: Path) -> None:
    """A temporal model's windows (and any smoothing state) run on from the day before, as
    the live scorer's do: no host's first ``W - 1`` rows go unscored, and the day's rows are
    those of both days scored as one table; without a stored day before (or with the config
    off) each host starts afresh, and the metadata says which."""
    from ds_assets.training.dataset_scoring import dataset_scorer, score_frame

    defs, instance = ingested(settings, DAYS[:2])
    assert defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config=TEMPORAL_TWO_DAYS_CONFIG).success
    bundle = load_champion(settings.models_dir, settings.model_name)
    assets = settings.data_dir / "assets"
    # the test split continues from each host's validation rows likewise: all of it is judged
    report = json.loads((assets / "evaluation_report.json").read_text())
    assert report["unscored_rows"] == 0 and report["n_rows"] > 0

    kept_notes: dict[str, str] = {}

    def scored(day: str, lead_in: bool = True) -> tuple[pd.DataFrame, str]:
        result = defs.resolve_job_def("score_telemetry").execute_in_process(
            instance=instance, partition_key=day,
            run_config={"ops": {"scored_telemetry": {"config": {"lead_in": lead_in}}}})
        assert result.success, _failure_messages(result)
        meta = result.asset_materializations_for_node("scored_telemetry")[0].metadata
        frame = pd.read_parquet(assets / "scored_telemetry" / f"{day}.parquet")
        kept_notes[day] = meta["kept_for_next_day"].value
        return frame, meta["lead_in"].value

    hosts = TINY_SOURCE["n_hosts"]
    first, note = scored(DAYS[0])
    assert note.startswith("none: raw_telemetry 2026-10-31 is not stored")
    assert first["score"].isna().sum() == hosts * 3
    # the day's last rows of each host are kept for the next day as it is scored
    assert kept_notes[DAYS[0]] == f"{hosts * 3} rows, the last 3 of each entity"
    kept = assets / "raw_telemetry" / ".lead_in" / f"{DAYS[0]}.parquet"
    assert len(pd.read_parquet(kept)) == hosts * 3
    led, note = scored(DAYS[1])
    assert note == (f"raw_telemetry {DAYS[0]}: the last 3 rows of each entity, kept when that "
                    "day was scored")
    assert led["score"].notna().all()
    raws = [pd.read_parquet(assets / "raw_telemetry" / f"{d}.parquet") for d in DAYS[:2]]
    both = score_frame(dataset_scorer(bundle), pd.concat(raws, ignore_index=True))
    pd.testing.assert_frame_equal(led, both.iloc[len(raws[0]):].reset_index(drop=True),
                                  check_dtype=False)
    kept.unlink()  # without the kept rows the day before is read: the same scores
    from_day, note = scored(DAYS[1])
    assert note == f"raw_telemetry {DAYS[0]}: the last 3 rows of each entity"
    pd.testing.assert_frame_equal(from_day, led)
    fresh, note = scored(DAYS[1], lead_in=False)
    assert note.startswith("off (lead_in: false)")
    assert kept_notes[DAYS[1]].startswith("nothing")
    assert fresh["score"].isna().sum() == hosts * 3

    # rows kept from an earlier version of the day before do not stand for the current one
    scored(DAYS[0])
    stored = assets / "raw_telemetry" / f"{DAYS[0]}.parquet"
    changed = raws[0].assign(latency_ms=raws[0]["latency_ms"] * 3)
    changed.to_parquet(stored, index=False)
    after_change, note = scored(DAYS[1])
    assert note == f"raw_telemetry {DAYS[0]}: the last 3 rows of each entity"
    both = score_frame(dataset_scorer(bundle), pd.concat([changed, raws[1]], ignore_index=True))
    pd.testing.assert_frame_equal(after_change,
                                  both.iloc[len(raws[0]):].reset_index(drop=True),
                                  check_dtype=False)
    raws[0].to_parquet(stored, index=False)

    # a day before that cannot give the lead-in is gone without, and the metadata says why
    stored = assets / "raw_telemetry" / f"{DAYS[0]}.parquet"
    good = stored.read_bytes()
    raws[0].drop(columns=["latency_ms"]).to_parquet(stored, index=False)
    without, note = scored(DAYS[1])
    assert note == (f"none: raw_telemetry {DAYS[0]} lacks feature column(s) ['latency_ms']; "
                    "each entity starts afresh")
    pd.testing.assert_frame_equal(without, fresh)
    raws[0].drop(columns=["host_id"]).to_parquet(stored, index=False)
    without, note = scored(DAYS[1])
    assert note.startswith(f"none: one of raw_telemetry {DAYS[0]} and {DAYS[1]} has a host_id "
                           "column and the other not")
    pd.testing.assert_frame_equal(without, fresh)
    stored.write_bytes(b"not parquet")
    without, note = scored(DAYS[1])
    assert note.startswith(f"none: raw_telemetry {DAYS[0]} cannot be read (")
    pd.testing.assert_frame_equal(without, fresh)
    stored.write_bytes(good)

    # a day before that failed its blocking checks is not read
    assert not defs.resolve_job_def("ingest_telemetry").execute_in_process(
        instance=instance, partition_key=DAYS[2], raise_on_error=False,
        run_config={"ops": {"raw_telemetry": {"config": {
            "source": "labeled_csv", "path": str(_broken_csv(tmp_path / "broken.csv"))}}}},
    ).success
    _ingest(defs, instance, "2026-11-04")
    after, note = scored("2026-11-04")
    assert note == (f"none: raw_telemetry {DAYS[2]} failed blocking check(s) "
                    "['features_not_null', 'label_domain']; each entity starts afresh")
    assert after["score"].isna().sum() == hosts * 3


def test_days_that_failed_their_checks_are_not_trained_on_scored_or_rescored(
    settings: Settings, tmp_path: Path
) -> None:
    """A day whose data failed its blocking checks stays on disk (re-ingesting a good day
    with such data is refused instead: tests/assets/test_reingest.py): a retrain leaves it out, the
    scoring job refuses it naming the checks, and the promotion sensor's re-score leaves it out."""
    from ds_assets.sensors.promotion import build_promotion_sensor

    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS[:2]:
        _ingest(defs, instance, day)
    bad = defs.resolve_job_def("ingest_telemetry").execute_in_process(
        instance=instance,
        partition_key=DAYS[2],
        run_config={"ops": {"raw_telemetry": {"config": {
            "source": "labeled_csv", "path": str(_broken_csv(tmp_path / "broken.csv"))}}}},
        raise_on_error=False,
    )
    assert not bad.success  # the blocking checks failed, but the raw partition is on disk
    assert (settings.data_dir / "assets" / "raw_telemetry" / f"{DAYS[2]}.parquet").exists()

    train = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config=TRAIN_CONFIG
    )
    assert train.success
    meta = train.asset_materializations_for_node("training_set")[0].metadata
    assert meta["partitions"].value == DAYS[:2]
    assert meta["excluded_partitions"].value == {DAYS[2]: ["features_not_null", "label_domain"]}
    v1 = json.loads((settings.models_dir / settings.model_name / "1" / "config.json").read_text())
    assert v1["lineage"]["partitions"] == DAYS[:2]
    assert defs.resolve_job_def("score_telemetry").execute_in_process(
        instance=instance, partition_key=DAYS[0]).success

    refused = defs.resolve_job_def("score_telemetry").execute_in_process(
        instance=instance, partition_key=DAYS[2], raise_on_error=False)
    assert not refused.success
    message = _failure_messages(refused)
    assert f"raw_telemetry {DAYS[2]} failed its blocking check(s)" in message
    assert "['features_not_null', 'label_domain']" in message
    assert not (settings.data_dir / "assets" / "scored_telemetry" / f"{DAYS[2]}.parquet").exists()

    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="champion", metadata={"champion_version": "9", "promoted": True}))
    tick = build_promotion_sensor(Dataset.default(settings), n_partitions=7).evaluate_tick(
        dg.build_sensor_context(instance=instance, definitions=defs))
    assert [r.partition_key for r in tick.run_requests or []] == [DAYS[0]]


def test_training_on_a_single_materialized_day(settings: Settings) -> None:
    """A one-day training window (the smallest a new deployment can use) trains end to end."""
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    _ingest(defs, instance, DAYS[0])
    config = {"ops": {**TRAIN_CONFIG["ops"],
                      "training_set": {"config": {"n_partitions": 1, "end_partition": DAYS[0]}}}}
    train = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config=config, raise_on_error=False
    )
    assert train.success, _failure_messages(train)
    meta = train.asset_materializations_for_node("training_set")[0].metadata
    assert meta["partitions"].value == [DAYS[0]]


def test_a_champion_that_cannot_load_does_not_block_a_verified_challenger(
    settings: Settings,
) -> None:
    """The serving champion's model.onnx damaged (it cannot serve either): the gate failed on
    loading it, so no retrain could replace it; it is judged as absent, and the reason says so."""
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    _ingest(defs, instance, DAYS[0])
    config = {"ops": {**TRAIN_CONFIG["ops"],
                      "training_set": {"config": {"n_partitions": 1, "end_partition": DAYS[0]}}}}
    job = defs.resolve_job_def("train_detector")
    assert job.execute_in_process(instance=instance, run_config=config).success
    first = load_champion(settings.models_dir, settings.model_name)
    (first.path / "model.onnx").write_bytes(b"damaged")
    again = job.execute_in_process(instance=instance, run_config=config, raise_on_error=False)
    assert again.success, _failure_messages(again)
    meta = again.asset_materializations_for_node("champion")[0].metadata
    assert meta["promoted"].value and "the champion cannot serve" in meta["reason"].value
    assert load_champion(settings.models_dir, settings.model_name).manifest.version == "2"


def test_the_threshold_rule_and_scope_reach_the_manifest(settings: Settings) -> None:
    """POT, per entity: the run config reaches the bundle, each host calibrated on its own rows
    (or counted where it could not be), and the bundle registers."""
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        _ingest(defs, instance, day)
    config = {"ops": {**TRAIN_CONFIG["ops"], "model_bundle": {"config": {
        "threshold_rule": "pot", "risk": 0.005, "pot_level": 0.9,
        "threshold_scope": "entity", "min_entity_rows": 20}}}}
    train = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config=config, raise_on_error=False)
    assert train.success, _failure_messages(train)
    bundle = load_champion(settings.models_dir, settings.model_name)
    rule = bundle.manifest.threshold_rule
    assert rule["rule"] == "pot" and rule["risk"] == 0.005 and rule["peaks"] >= 10
    assert bundle.manifest.threshold == pytest.approx(rule["pot_value"] * rule["margin"], rel=1e-6)
    policy = bundle.manifest.policy
    hosts = sum(rule[k] for k in ("entities_calibrated", "entities_too_few_rows",
                                  "entities_failed"))
    assert rule["scope"] == "entity" and hosts == 3 and len(policy.entity_thresholds) >= 1
    meta = train.asset_materializations_for_node("model_bundle")[0].metadata
    assert meta["entity_thresholds"].value == len(policy.entity_thresholds)


def test_an_unlabeled_day_is_scored_drift_reported_alerted_and_trained_on(
    settings: Settings, tmp_path: Path
) -> None:
    """Production telemetry has no labels: source 'csv' makes the label optional. Such a day
    passes its checks (nothing to check for labels), goes through the daily pipeline (drift
    compares its unflagged scores), and a retrain over it trains on it, screened for anomalies,
    and is judged by the label-free gate."""
    from ds_assets.telemetry.generator import GeneratorConfig, generate_day
    from ds_assets.telemetry.schema import feature_columns

    def write(day: str, labeled: bool) -> None:
        frame = generate_day(day, GeneratorConfig(n_hosts=3, interval_seconds=300, seed=7,
                                                  anomaly_rate=0.03))
        names = {f: f"f{i}" for i, f in enumerate(feature_columns(frame), start=1)}
        frame = frame.rename(columns=names)
        if not labeled:
            frame = frame.drop(columns=["label", "anomaly_type"])
        frame.to_csv(tmp_path / f"{day}.csv", index=False)

    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    pattern = str(tmp_path / "{date}.csv")
    for day in DAYS:
        write(day, labeled=True)
        assert defs.resolve_job_def("ingest_telemetry").execute_in_process(
            instance=instance, partition_key=day, run_config={"ops": {"raw_telemetry": {
                "config": {"source": "labeled_csv", "path": pattern}}}}).success
    assert defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config=TRAIN_CONFIG).success

    day = "2026-11-04"
    write(day, labeled=False)
    run = defs.resolve_job_def("daily_pipeline").execute_in_process(
        instance=instance, partition_key=day, raise_on_error=False,
        run_config={"ops": {"raw_telemetry": {"config": {"source": "csv", "path": pattern}}}})
    assert run.success, _failure_messages(run)
    checks = {e.check_name: e for e in run.get_asset_check_evaluations()}
    assert all(e.passed for e in checks.values())
    assert "unlabeled source" in checks["label_domain"].metadata["note"].value
    assets = settings.data_dir / "assets"
    scored = pd.read_parquet(assets / "scored_telemetry" / f"{day}.parquet")
    assert "label" not in scored.columns and len(scored) == 3 * 288
    report = json.loads((assets / "drift_report" / f"{day}.json").read_text())
    assert report["population"].startswith("all rows (no label column")
    assert "at or below the threshold" in report["score"]["compared"]
    assert (assets / "alerts" / f"{day}.parquet").is_file()

    # a retrain over a window ending on it (what the drift sensor requests) trains on it
    retrain = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, raise_on_error=False, run_config={"ops": {
            **TRAIN_CONFIG["ops"],
            "training_set": {"config": {"n_partitions": 2, "end_partition": day}}}})
    assert retrain.success, _failure_messages(retrain)
    meta = retrain.asset_materializations_for_node("training_set")[0].metadata
    assert meta["partitions"].value == [DAYS[-1], day]
    assert meta["unlabeled_partitions"].value == [day]
    screen = meta["champion_screen"].value[day]
    assert screen["used"] and screen["champion_version"] == "1"
    assert screen["excluded_rows"] >= screen["flagged_rows"] > 0
    trained = retrain.asset_materializations_for_node("detector")[0].metadata
    contamination = trained["contamination"].value
    assert contamination["refit"] and contamination["share"] == 0.02
    assert contamination["trimmed_train_rows"] == pytest.approx(
        0.02 * contamination["unlabeled_train_rows"], abs=2)
    # the test split is the unlabeled day's end: the gate judged on injected anomalies
    gate = retrain.asset_materializations_for_node("champion")[0].metadata
    assert gate["evidence"].value == "injected"
    details = gate["decision"].value["details"]
    assert details["labeled_anomalies"] == 0 and details["injected"]["events"] > 0
    for side in ("challenger", "champion"):
        assert 0 <= details[side]["injected_pr_auc"] <= 1
        assert 0 <= details[side]["flag_rate"] <= 1
    report = retrain.asset_materializations_for_node("evaluation_report")[0].metadata
    assert report["labels"].value.startswith("no labeled test row")

    # a window of unlabeled days only: trained on, and gated against the serving champion
    alone = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, raise_on_error=False, run_config={"ops": {
            **TRAIN_CONFIG["ops"],
            "training_set": {"config": {"n_partitions": 1, "end_partition": day}}}})
    assert alone.success, _failure_messages(alone)
    meta = alone.asset_materializations_for_node("training_set")[0].metadata
    assert meta["partitions"].value == [day] and meta["unlabeled_partitions"].value == [day]
    gate = alone.asset_materializations_for_node("champion")[0].metadata
    decision = gate["decision"].value
    assert decision["evidence"] == "injected" and decision["champion_version"] is not None
    assert set(decision["details"]) >= {"challenger", "champion", "injected"}

    # "leave_out" keeps the old behaviour: a one-day window ending on it reaches back to the
    # latest labeled day, as for days that failed their checks
    back = defs.resolve_job_def("train_detector").execute_in_process(
        instance=instance, run_config={"ops": {
            **TRAIN_CONFIG["ops"],
            "training_set": {"config": {"n_partitions": 1, "end_partition": day,
                                        "unlabeled_days": "leave_out"}}}})
    meta = back.asset_materializations_for_node("training_set")[0].metadata
    assert meta["partitions"].value == [DAYS[-1]]
    assert meta["left_out_unlabeled_partitions"].value == [day]

    # every JSON file the runs wrote is standard JSON (a label-free gate has no labeled PR-AUC:
    # null, not Python's bare NaN, which other tools refuse)
    written = {p for root in (settings.data_dir, settings.models_dir, settings.mlflow_artifacts)
               for p in root.rglob("*.json")}
    assert any(p.name == CHAMPION_FILE for p in written)
    for path in sorted(written):
        json.loads(path.read_text(), parse_constant=_refuse_constant(path))


def _refuse_constant(path: Path) -> Any:
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} is not standard JSON: it holds {token}")

    return refuse
