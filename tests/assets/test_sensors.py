"""Drift and promotion sensors evaluated as the daemon does (build_sensor_context + evaluate_tick)
against an instance holding real materialization records: episodes, cursors, de-duplication."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from ds_assets.dataset import Dataset
from ds_assets.definitions import build_definitions
from ds_assets.demo.drift_story import DRIFT_FEATURES, run_drift_story
from ds_assets.sensors.backfill import partition_backfill
from ds_assets.sensors.drift import build_drift_sensor
from ds_assets.sensors.promotion import RESCORE_JOB, build_promotion_sensor
from ds_assets.sensors.records import previous_days
from ds_assets.sensors.schedules import daily_automation_sensor
from ds_assets.settings import Settings
from ds_serving.bundle import list_versions, load_bundle, load_champion
from tests.conftest import TINY_SOURCE

DAYS = previous_days("2026-11-12", 12)  # 2026-11-01 .. 2026-11-12
# the default dataset's names (as the `settings` fixture's): sensors read only its keys and jobs
DEFAULT = Dataset(name="default", model_name="test-ae", partitions_start=DAYS[0])


def _report(instance: dg.DagsterInstance, asset: str, day: str | None, **meta: Any) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=asset, partition=day, metadata=meta)
    )


def _drift(instance: dg.DagsterInstance, day: str, drifted: bool, version: str = "1") -> None:
    _report(instance, "drift_report", day, drifted=drifted, reference_version=version,
            drift_score=2.0 if drifted else 0.3)


def _tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    cursor: str | None,
    defs: dg.Definitions | None = None,
) -> tuple[list[dg.RunRequest], str | None, str | None]:
    """One daemon tick; ``defs`` resolves the partitioned jobs that requests target."""
    result = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    )
    return list(result.run_requests or []), result.skip_message, result.cursor


@pytest.fixture
def instance() -> Any:
    with dg.instance_for_test() as inst:
        yield inst


def test_shadow_sensor_requests_the_verdict_once_the_shadow_days_are_reported(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    from ds_assets.resources.registry import ModelRegistry
    from ds_assets.sensors.shadow import build_shadow_sensor
    from ds_assets.training.shadow import open_candidate

    sensor = build_shadow_sensor(DEFAULT)
    registry = ModelRegistry(models_dir=str(tmp_path), model_name=DEFAULT.model_name)

    def tick() -> tuple[list[dg.RunRequest], str | None]:
        result = sensor.evaluate_tick(dg.build_sensor_context(
            instance=instance, resources={DEFAULT.registry_key: registry}))
        return list(result.run_requests or []), result.skip_message

    assert tick() == ([], "no candidate in shadow")
    open_candidate(tmp_path, DEFAULT.model_name, "2", "1", DAYS[4], 2, {"reason": "gate"})
    _report(instance, "shadow_report", DAYS[4], candidate_version="")  # its training window
    _report(instance, "shadow_report", DAYS[5], candidate_version="2")
    _report(instance, "shadow_report", DAYS[6], candidate_version="0")  # an older candidate's
    requests, skip = tick()
    assert not requests and skip == f"candidate v2: 1 of 2 shadow day(s) reported after {DAYS[4]}"
    _report(instance, "shadow_report", DAYS[6], candidate_version="2")  # re-reported for v2
    requests, _ = tick()
    assert len(requests) == 1 and requests[0].run_key is not None
    assert requests[0].run_key.startswith("shadow:2:")
    assert requests[0].tags["datasentinel/shadow_days"] == f"{DAYS[5]},{DAYS[6]}"


def test_a_shadow_day_reported_before_the_candidate_opened_is_not_waited_for(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """The retrain finished after the next day's pipeline: that day's report compared no
    candidate, and nothing reports it again. The sensor waited for it for ever; the candidate's
    shadow days are the first days reported beside it."""
    from ds_assets.resources.registry import ModelRegistry
    from ds_assets.sensors.shadow import build_shadow_sensor
    from ds_assets.training.shadow import open_candidate

    sensor = build_shadow_sensor(DEFAULT)
    registry = ModelRegistry(models_dir=str(tmp_path), model_name=DEFAULT.model_name)
    _report(instance, "shadow_report", DAYS[5], candidate_version="")  # before it opened
    open_candidate(tmp_path, DEFAULT.model_name, "2", "1", DAYS[4], 2, {"reason": "gate"})
    skips = []
    for day in DAYS[6:8]:
        _report(instance, "shadow_report", day, candidate_version="2")
        result = sensor.evaluate_tick(dg.build_sensor_context(
            instance=instance, resources={DEFAULT.registry_key: registry}))
        skips.append(result.skip_message)
    assert skips[0] == f"candidate v2: 1 of 2 shadow day(s) reported after {DAYS[4]}"
    [request] = result.run_requests or []
    assert request.tags["datasentinel/shadow_days"] == f"{DAYS[6]},{DAYS[7]}"


def test_shadow_days_default_to_drift_triggered_retrains(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ds_assets.assets.evaluation import ChampionConfig, shadow_days

    monkeypatch.delenv("DS_SHADOW_DAYS", raising=False)
    drift = {"datasentinel/trigger": "drift"}
    assert shadow_days(ChampionConfig(), drift) == 2
    assert shadow_days(ChampionConfig(), {}) == 0  # by hand, schedule: promote at once
    assert shadow_days(ChampionConfig(shadow_days=0), drift) == 0  # the dataset opts out
    assert shadow_days(ChampionConfig(shadow_days=3), {}) == 3
    monkeypatch.setenv("DS_SHADOW_DAYS", "4")
    assert shadow_days(ChampionConfig(), drift) == 4


def test_drift_sensor_requests_once_per_episode(instance: dg.DagsterInstance) -> None:
    sensor = build_drift_sensor(DEFAULT, k=3, training_window=7)
    requests, skip, cursor = _tick(sensor, instance, None)
    assert not requests and skip == "no drift_report materialized yet"

    for day in DAYS[:4]:
        _drift(instance, day, False)
    _drift(instance, DAYS[4], True)
    _drift(instance, DAYS[5], True)
    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert not requests and "2 of the 3" in (skip or "")

    requests, skip, cursor = _tick(sensor, instance, cursor)  # nothing new: no work at all
    assert not requests and skip == "no new drift reports since the last tick"

    _drift(instance, DAYS[6], True)
    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert len(requests) == 1
    request = requests[0]
    assert request.run_key == f"drift-retrain:1:{DAYS[4]}"
    assert request.run_config["ops"]["training_set"]["config"] == {
        "n_partitions": 7, "end_partition": DAYS[6]}
    assert request.tags["datasentinel/drifted_partitions"] == ",".join(DAYS[4:7])
    assert json.loads(cursor or "{}")["episode"] == {
        "reference_version": "1", "first": DAYS[4], "last": DAYS[6]}

    # the same episode going on, or re-evaluated, never requests again
    _drift(instance, DAYS[7], True)
    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert not requests and "already requested" in (skip or "")
    # a lost cursor yields the same run key, which the daemon drops as a duplicate
    again, _, _ = _tick(sensor, instance, None)
    assert [r.run_key for r in again] == [request.run_key]

    # the episode ends; a later one is a new request
    _drift(instance, DAYS[8], False)
    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert not requests and skip == "latest partition shows no drift"
    for day in DAYS[9:12]:
        _drift(instance, day, True)
    requests, _, cursor = _tick(sensor, instance, cursor)
    assert [r.run_key for r in requests] == [f"drift-retrain:1:{DAYS[9]}"]


def test_drift_against_a_new_champion_starts_a_new_episode(
    instance: dg.DagsterInstance,
) -> None:
    sensor = build_drift_sensor(DEFAULT, k=3)
    _drift(instance, DAYS[0], True, "1")
    _drift(instance, DAYS[1], True, "1")
    _drift(instance, DAYS[2], True, "2")  # judged against the retrained model
    requests, skip, _ = _tick(sensor, instance, None)
    assert not requests and "1 of the 3" in (skip or "")
    # re-scored days (reports against v2) count again
    _drift(instance, DAYS[0], True, "2")
    _drift(instance, DAYS[1], True, "2")
    requests, _, _ = _tick(sensor, instance, None)
    assert [r.run_key for r in requests] == [f"drift-retrain:2:{DAYS[0]}"]


def test_a_long_episode_requests_once_and_a_gap_starts_a_new_one(
    instance: dg.DagsterInstance,
) -> None:
    """An episode longer than the look-back (the retrain lost, the reference stays v1) must
    not slide its first day forward and request again every day."""
    sensor = build_drift_sensor(DEFAULT, k=3, training_window=7)  # look-back 8 days
    days = previous_days("2026-12-10", 40)
    cursor: str | None = None
    run_keys: list[str] = []
    for day in days[:5]:
        _drift(instance, day, False)
    for day in days[5:30]:  # 25 drifted days in a row
        _drift(instance, day, True)
        requests, _, cursor = _tick(sensor, instance, cursor)
        run_keys += [r.run_key for r in requests]
    assert run_keys == [f"drift-retrain:1:{days[5]}"]
    # a lost cursor after 25 days still names the episode by its first day (daemon dedups)
    again, _, _ = _tick(sensor, instance, None)
    assert [r.run_key for r in again] == run_keys
    assert again[0].run_config["ops"]["training_set"]["config"]["end_partition"] == days[29]

    _drift(instance, days[30], False)  # a gap ends the episode
    requests, _, cursor = _tick(sensor, instance, cursor)
    assert not requests
    for day in days[31:33]:
        _drift(instance, day, True)
        requests, skip, cursor = _tick(sensor, instance, cursor)
        assert not requests and "of the 3" in (skip or "")
    _drift(instance, days[33], True)
    requests, _, cursor = _tick(sensor, instance, cursor)
    assert [r.run_key for r in requests] == [f"drift-retrain:1:{days[31]}"]


def test_rescored_days_growing_the_run_backwards_do_not_request_again(
    instance: dg.DagsterInstance,
) -> None:
    """A promotion backfill re-scores days out of order: reports against v2 arrive newest
    first, so the v2 run grows backwards; it is still one episode."""
    sensor = build_drift_sensor(DEFAULT, k=3, training_window=7)
    for day in DAYS[:8]:
        _drift(instance, day, True, "1")
    cursor: str | None = None
    run_keys: list[str] = []
    for day in (DAYS[7], DAYS[6], DAYS[5], DAYS[4], DAYS[2], DAYS[3], DAYS[1], DAYS[0]):
        _drift(instance, day, True, "2")
        requests, _, cursor = _tick(sensor, instance, cursor)
        run_keys += [r.run_key for r in requests]
    assert run_keys == [f"drift-retrain:2:{DAYS[5]}"]
    # re-materializing days already seen (same statuses) requests nothing either
    for day in (DAYS[3], DAYS[7]):
        _drift(instance, day, True, "2")
        requests, skip, cursor = _tick(sensor, instance, cursor)
        assert not requests and "already requested" in (skip or "")


def test_a_lost_cursor_does_not_request_an_episode_a_run_already_carries(
    instance: dg.DagsterInstance,
) -> None:
    """The run key names the episode by its first day; if the run grew backwards since its
    retrain was launched, a sensor that lost its cursor would name it anew. The launched run's
    tags still say which days it covered, so nothing is requested."""
    sensor = build_drift_sensor(DEFAULT, k=3, training_window=7)
    for day in DAYS[5:8]:
        _drift(instance, day, True, "2")
    [request], _, _ = _tick(sensor, instance, None)
    assert request.run_key == f"drift-retrain:2:{DAYS[5]}"
    instance.add_run(dg.DagsterRun(job_name="train_detector", tags=dict(request.tags)))
    for day in DAYS[2:5]:  # re-scored days: the run now starts at DAYS[2]
        _drift(instance, day, True, "2")
    requests, skip, cursor = _tick(sensor, instance, None)  # cursor lost
    assert not requests
    assert f"already requested for episode 2:{DAYS[5]}" in (skip or "")
    remembered = json.loads(cursor or "{}")["episode"]
    assert (remembered["first"], remembered["last"]) == (DAYS[5], DAYS[7])  # the run's key
    _drift(instance, DAYS[8], True, "2")  # the episode goes on: still nothing requested
    requests, skip, _ = _tick(sensor, instance, cursor)
    assert not requests and "already requested for episode 2:" + DAYS[5] in (skip or "")
    # against another reference model the same days are a new episode
    for day in DAYS[2:9]:
        _drift(instance, day, True, "3")
    requests, _, _ = _tick(sensor, instance, None)
    assert [r.run_key for r in requests] == [f"drift-retrain:3:{DAYS[2]}"]


def test_a_missing_day_breaks_the_run_and_k_is_configurable(
    instance: dg.DagsterInstance,
) -> None:
    for day in (DAYS[0], DAYS[1], DAYS[3]):  # DAYS[2] never reported
        _drift(instance, day, True)
    requests, skip, _ = _tick(build_drift_sensor(DEFAULT, k=2), instance, None)
    assert not requests and "1 of the 2" in (skip or "")
    requests, _, _ = _tick(build_drift_sensor(DEFAULT, k=1, training_window=3), instance, None)
    assert requests[0].run_config["ops"]["training_set"]["config"] == {
        "n_partitions": 3, "end_partition": DAYS[3]}
    with pytest.raises(ValueError, match="k=0"):
        build_drift_sensor(DEFAULT, k=0)


def test_promotion_sensor_rescores_recent_days_scored_by_another_model(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    sensor = build_promotion_sensor(DEFAULT, n_partitions=4)
    defs = build_definitions(settings)
    requests, skip, cursor = _tick(sensor, instance, None)
    assert not requests and skip == "no new champion materialization"

    for day in DAYS[:8]:
        _report(instance, "scored_telemetry", day, model_version="1")
    _report(instance, "champion", None, champion_version="1", promoted=True)
    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert not requests and "no recent day scored by another model" in (skip or "")

    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert not requests and skip == "no new champion materialization"

    _report(instance, "scored_telemetry", DAYS[7], model_version="2")  # already re-scored
    _report(instance, "champion", None, champion_version="2", promoted=True)
    requests, skip, cursor = _tick(sensor, instance, cursor, defs)
    v2_id = json.loads(cursor or "{}")["storage_id"]
    assert [(r.partition_key, r.run_key) for r in requests] == [
        (d, f"rescore:v2:s{v2_id}:{d}") for d in DAYS[4:7]
    ]
    assert all(r.job_name == RESCORE_JOB for r in requests)
    assert {r.tags["datasentinel/champion"] for r in requests} == {"2"}

    # a challenger that lost: champion re-materialized, version unchanged -> nothing
    _report(instance, "champion", None, champion_version="2", promoted=False)
    requests, skip, cursor = _tick(sensor, instance, cursor)
    assert not requests and skip == "champion still v2"

    # rollback v2 -> v1 -> v2: each promotion gets its own run keys, so none is dropped as a
    # duplicate of an earlier promotion's runs
    for day in DAYS[4:7]:
        _report(instance, "scored_telemetry", day, model_version="2")  # the v2 re-scores ran
    seen = {r.run_key for r in requests}
    for version in ("1", "2"):
        _report(instance, "champion", None, champion_version=version, promoted=True)
        requests, _, cursor = _tick(sensor, instance, cursor, defs)
        assert [r.partition_key for r in requests] == DAYS[4:8]
        assert {r.tags["datasentinel/champion"] for r in requests} == {version}
        assert not seen & {r.run_key for r in requests}
        seen |= {r.run_key for r in requests}
        for day in DAYS[4:8]:
            _report(instance, "scored_telemetry", day, model_version=version)


def test_backfill_helper_makes_one_keyed_run_per_partition() -> None:
    requests = partition_backfill("job", ["2026-11-03", "2026-11-02"], "p", {"a": "b"})
    assert [(r.partition_key, r.run_key, r.job_name) for r in requests] == [
        ("2026-11-02", "p:2026-11-02", "job"), ("2026-11-03", "p:2026-11-03", "job")]
    assert requests[0].tags == {"a": "b", "datasentinel/backfill": "p"}


WEEK = previous_days("2026-11-07", 7)
TINY_MODEL = {"family": "dense_ae", "epochs": 1, "hidden": [8, 3], "batch_size": 128}
# three hosts vary a lot from day to day, so the tiny story needs a bigger release than the demo
TINY_DRIFT = {"drift_mean_shift": 10.0, "drift_scale": 2.0, "drift_seasonal_amplitude": 5.0}


@pytest.mark.parametrize("labeled", [True, False], ids=["labeled", "production"])
def test_drift_story_end_to_end(settings: Settings, capfd: pytest.CaptureFixture[str],
                                labeled: bool) -> None:
    """Real runs, through the demo's episode: a normal week and a model, then drifted days ->
    drift reports -> drift sensor -> requested retrain -> promotion sensor -> re-score. In the
    production variant the drifted days carry no labels: the retrain trains on them screened
    and the label-free gate promotes."""
    defs = build_definitions(settings)
    assets = settings.data_dir / "assets"

    def run(defs: dg.Definitions, job: str, instance: dg.DagsterInstance, **kw: Any) -> None:
        assert defs.resolve_job_def(job).execute_in_process(instance=instance, **kw).success

    with dg.instance_for_test() as instance:
        for day in WEEK:
            run(defs, "ingest_telemetry", instance, partition_key=day,
                run_config={"ops": {"raw_telemetry": {"config": TINY_SOURCE}}})
        run(defs, "train_detector", instance, run_config={"ops": {
            "training_set": {"config": {"n_partitions": 7, "end_partition": WEEK[-1]}},
            "detector": {"config": TINY_MODEL}}})
        story = run_drift_story(defs, instance, settings, run, after=WEEK[-1],
                                source=TINY_SOURCE, detector_config=TINY_MODEL, n_days=4,
                                drift=TINY_DRIFT, labeled=labeled)
        printed, logged = capfd.readouterr()
        # the sensors' reasons are in the story's tables, not repeated as Dagster INFO lines
        # (the runs here log to the console: this test's runner keeps Dagster's default)
        sensor_line = re.compile(r" - dagster - INFO - (latest partition|drift (for|persisted)|"
                                 r"champion v\d)")
        assert not sensor_line.search(logged) and not sensor_line.search(printed)

        def first_report(day: str) -> dict[str, Any]:
            """The day's drift report against the original champion (before the re-score)."""
            record = instance.fetch_materializations(dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("drift_report"), asset_partitions=[day]),
                limit=1, ascending=True).records[0]
            assert record.asset_materialization is not None
            return {k: v.value for k, v in record.asset_materialization.metadata.items()}

        assert not first_report("2026-11-08")["drifted"], printed  # normal Sunday: no alarm
        for day in ("2026-11-09", "2026-11-10", "2026-11-11"):
            report = first_report(day)
            assert report["reference_version"] == "1"
            assert set(report["drifted_features"]) == set(DRIFT_FEATURES), (day, report)
        # one request, on the third drifted day, for a window that includes the drifted days
        assert story["requested"]
        request_line = next(line for line in printed.splitlines() if "REQUEST" in line)
        assert request_line.split()[0] == "2026-11-11"
        assert "REQUEST drift-retrain:1:2026-11-09" in request_line
        assert printed.count("REQUEST drift-retrain") == 1
        runs = instance.get_run_records(dg.RunsFilter(
            job_name="train_detector", tags={"datasentinel/trigger": "drift"}))
        assert len(runs) == 1
        assert runs[0].dagster_run.tags["datasentinel/drifted_partitions"] == \
            "2026-11-09,2026-11-10,2026-11-11"
        bundle = load_champion(settings.models_dir, settings.model_name)
        latest = max(int(v) for v in list_versions(settings.models_dir, settings.model_name))
        lineage = load_bundle(settings.models_dir / settings.model_name / str(latest)).manifest
        assert lineage.lineage["partitions"][-1] == "2026-11-11"  # retrained on drifted data

        # retrained on the drifted days (seeded), it beats the old champion on their test rows
        assert story["promoted"], printed
        # the promotion sensor re-scored every scored day with the new champion
        # drift-triggered: the candidate first scored two days in shadow, v1 serving
        assert sorted(story["shadow"]) == ["2026-11-12", "2026-11-13"]
        for report in story["shadow"].values():
            assert report["champion"]["version"] == "1"
            assert report["candidate"]["version"] == bundle.manifest.version
            assert report["candidate"]["flag_rate"] < report["champion"]["flag_rate"]
        assert story["gate"]["promote"] and "shadow sensor -> verdict" in printed
        assert story["rescored"] == ["2026-11-08", "2026-11-09", "2026-11-10", "2026-11-11",
                                     "2026-11-12", "2026-11-13"]
        for day in story["rescored"]:
            scored = pd.read_parquet(assets / "scored_telemetry" / f"{day}.parquet")
            assert set(scored["model_version"]) == {bundle.manifest.version}
            report = json.loads((assets / "drift_report" / f"{day}.json").read_text())
            assert report["reference_version"] == bundle.manifest.version
        assert not _tick(defs.resolve_sensor_def("champion_rescore_sensor"), instance, None,
                         defs)[0]  # nothing left to re-score
        # a drifted day after the retrain window, scored by both models (out of sample)
        unseen = story["out_of_sample"]
        assert unseen["day"] == "2026-11-12"
        assert (unseen["old"]["version"], unseen["new"]["version"]) == (
            "1", bundle.manifest.version)
        assert "[drift 5/5] out of sample: 2026-11-12" in printed
        assert unseen["new"]["false_alarm_rate"] < unseen["old"]["false_alarm_rate"]
        assert story["decision"]["evidence"] == ("labels" if labeled else "injected")
        if not labeled:
            raw = pd.read_parquet(assets / "raw_telemetry" / "2026-11-12.parquet")
            assert "label" not in raw.columns  # production days: no labels anywhere
            training = instance.get_latest_materialization_event(dg.AssetKey("training_set"))
            assert training is not None and training.asset_materialization is not None
            meta = training.asset_materialization.metadata
            assert {"2026-11-09", "2026-11-10", "2026-11-11"} <= set(
                meta["unlabeled_partitions"].value)  # type: ignore[arg-type]
            assert "production telemetry: these days arrive without labels" in printed


def test_automation_starts_running_only_when_switched_on(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """DS_AUTOMATION switches every sensor and schedule, including the one that evaluates the
    daily assets' automation conditions (Dagster's implicit default sensor would stay off)."""
    monkeypatch.delenv("DS_AUTOMATION", raising=False)
    assert build_drift_sensor(DEFAULT).default_status == dg.DefaultSensorStatus.STOPPED
    assert daily_automation_sensor(DEFAULT).default_status == dg.DefaultSensorStatus.STOPPED
    monkeypatch.setenv("DS_AUTOMATION", "on")
    assert build_drift_sensor(DEFAULT).default_status == dg.DefaultSensorStatus.RUNNING
    assert build_promotion_sensor(DEFAULT).default_status == dg.DefaultSensorStatus.RUNNING
    defs = build_definitions(settings)
    automation = defs.resolve_sensor_def("daily_monitoring_automation")
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    assert {s.default_status for s in defs.schedules or []} == {
        dg.DefaultScheduleStatus.RUNNING}
    graph = defs.resolve_asset_graph()
    automated = {k.to_user_string() for k in graph.get_all_asset_keys()
                 if graph.get(k).automation_condition is not None}
    assert automated == {"scored_telemetry", "drift_report", "alerts", "shadow_report"}
    targeted = automation.asset_selection.resolve(graph)  # type: ignore[union-attr]
    assert {k.to_user_string() for k in targeted} == automated


def test_a_rollback_between_two_ticks_still_rescores_what_the_other_version_scored(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    """v1 -> v2 -> v1 while the sensor was stopped: it read only the newest materialization,
    found the version it knew, and never re-scored the day v2 scored meanwhile."""
    sensor = build_promotion_sensor(DEFAULT, n_partitions=4)
    defs = build_definitions(settings)
    for day in DAYS[:8]:
        _report(instance, "scored_telemetry", day, model_version="1")
    _report(instance, "champion", None, champion_version="1", promoted=True)
    _, _, cursor = _tick(sensor, instance, None, defs)
    _report(instance, "champion", None, champion_version="2", promoted=True)
    _report(instance, "scored_telemetry", DAYS[7], model_version="2")  # the automation, on v2
    _report(instance, "champion", None, champion_version="1", promoted=True)  # rolled back
    requests, _, cursor = _tick(sensor, instance, cursor, defs)
    assert [r.partition_key for r in requests] == [DAYS[7]]
    assert {r.tags["datasentinel/champion"] for r in requests} == {"1"}


def test_a_declared_training_window_is_what_drift_and_weekly_retrains_train_on(
    instance: dg.DagsterInstance,
) -> None:
    """A declaration's ``training.n_partitions`` is the default of the launchpad; the drift
    sensor and the weekly schedule passed their own 7 days over it."""
    import datetime as dt

    from ds_assets.sensors.schedules import weekly_retrain_request

    declared = Dataset(name="default", model_name="test-ae", partitions_start=DAYS[0],
                       config_defaults={"training_set": {"n_partitions": 4}})
    for day in DAYS[:3]:
        _drift(instance, day, True)
    (request,), _, _ = _tick(build_drift_sensor(declared, k=3, training_window=7), instance, None)
    assert request.run_config["ops"]["training_set"]["config"] == {
        "n_partitions": 4, "end_partition": DAYS[2]}
    monday = dt.datetime(2026, 11, 9, 2, tzinfo=dt.UTC)
    weekly = weekly_retrain_request(declared, monday).run_config["ops"]["training_set"]["config"]
    assert weekly == {"n_partitions": 4, "end_partition": "2026-11-08"}
    # undeclared: the sensor's and the schedule's own windows, as before
    plain = weekly_retrain_request(DEFAULT, monday, 7).run_config["ops"]["training_set"]["config"]
    assert plain["n_partitions"] == 7
