"""Declared datasets as graph slices: the code location's declarations, the two commands from
a user's file to a champion, checks that follow the declaration."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from ds_assets.cli import main as ds_dataset
from ds_assets.components import TelemetryDataset, load_declaration
from ds_assets.definitions import build_code_location, build_dataset_definitions
from ds_assets.job_outcome import failed_checks, step_warnings
from ds_assets.settings import Settings
from ds_assets.training import evaluated_default

DEFS = Path(__file__).resolve().parents[2] / "ds_assets" / "defs"


def _user_file(tmp_path: Path) -> tuple[Path, Path]:
    """Four days of a univariate sensor at 10 min, anomalies given as windows."""
    rng = np.random.default_rng(3)
    times = pd.date_range("2013-12-02", periods=4 * 144, freq="10min")
    value = 10 + 3 * np.sin(2 * np.pi * np.arange(len(times)) / 144) + rng.normal(0, .2,
                                                                                   len(times))
    windows = [("2013-12-05 06:00", "2013-12-05 08:00"), ("2013-12-05 18:00",
                                                          "2013-12-05 19:00")]
    for start, end in windows:
        value[(times >= start) & (times <= end)] += 5
    data = tmp_path / "sensor.csv"
    pd.DataFrame({"time": times.strftime("%Y-%m-%d %H:%M"), "value": value}).to_csv(
        data, index=False)
    labels = tmp_path / "windows.csv"
    pd.DataFrame(windows, columns=["start", "end"]).to_csv(labels, index=False)
    return data, labels


def test_the_code_location_loads_the_demo_and_skab_declarations() -> None:
    defs = build_code_location(Settings.from_env({"DS_DATA_DIR": "/tmp/ds-declared-test"}))
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw_telemetry", "champion", "skab/raw_telemetry", "skab/champion"} <= keys
    skab = load_declaration(DEFS / "skab" / "defs.yaml")
    assert skab.labels.column == "anomaly" and skab.entity.per_file
    # the declaration's detector default is the launchpad's default for that slice only
    fields = defs.resolve_job_def("skab__train_detector").get_config_schema_snapshot()
    text = json.dumps(fields.to_dict() if hasattr(fields, "to_dict") else str(fields))
    assert "temporal_ae" in text
    demo = load_declaration(DEFS / "demo" / "defs.yaml")
    assert demo.source is None and demo.key_prefix == ""


def test_declared_defaults_reach_the_asset_config(tmp_path: Path) -> None:
    declared = TelemetryDataset.model_validate({
        "name": "pump", "source": {"path": str(tmp_path / "x.csv")},
        "partitions": {"start": "2024-01-01"}, "detector": {"family": "pca", "epochs": 3},
        "policy": {"quantile": 0.99}, "promotion": {"shadow_days": 3}})
    ds = declared.dataset(Settings.from_env({"DS_DATA_DIR": str(tmp_path)}))
    from ds_assets.assets.detector import BundleConfig, DetectorConfig
    from ds_assets.assets.evaluation import ChampionConfig

    assert ds.config_class(ChampionConfig, "champion")().shadow_days == 3

    assert ds.config_class(DetectorConfig, "detector")().family.value == "pca"
    assert ds.config_class(BundleConfig, "model_bundle")().quantile == 0.99
    bad = TelemetryDataset.model_validate({**declared.model_dump(), "detector": {"epoch": 3}})
    with pytest.raises(ValueError, match=r"detector has no setting\(s\) \['epoch'\]"):
        bad.dataset(Settings.from_env({"DS_DATA_DIR": str(tmp_path)})).config_class(
            DetectorConfig, "detector")
    with pytest.raises(ValueError, match=r"declare partitions\.start"):
        TelemetryDataset.model_validate({"name": "p", "source": {"path": "x"}}).dataset(
            Settings.from_env({}))


def test_the_readmes_measured_option_is_a_declaration_away(tmp_path: Path) -> None:
    """README: ``family: window_knn`` with level adaptation, declared as a user would."""
    declared = TelemetryDataset.model_validate({
        "name": "pump", "source": {"path": str(tmp_path / "x.csv")},
        "partitions": {"start": "2024-01-01"}, "detector": {"family": "window_knn"},
        "policy": {"adapt_rate": 0.003, "quantile": 0.99, "margin": 1.5}})
    ds = declared.dataset(Settings.from_env({"DS_DATA_DIR": str(tmp_path)}))
    from ds_assets.assets.detector import BundleConfig, DetectorConfig

    assert ds.config_class(DetectorConfig, "detector")().family.value == "window_knn"
    bundle = ds.config_class(BundleConfig, "model_bundle")()
    assert (bundle.adapt_rate, bundle.quantile, bundle.margin) == (0.003, 0.99, 1.5)


def test_declared_ranges_are_blocking_checks(tmp_path: Path, settings: Settings) -> None:
    data, _ = _user_file(tmp_path)
    declared = TelemetryDataset.model_validate({
        "name": "sensor", "source": {"path": str(data)}, "timestamp": {"column": "time"},
        "features": {"columns": ["value"], "ranges": {"value": [0, 12]}},
        "partitions": {"start": "2013-12-02", "end": "2013-12-06"}})
    ds = declared.dataset(settings)
    defs = build_dataset_definitions(ds, settings)
    result = defs.resolve_job_def("sensor__ingest_telemetry").execute_in_process(
        partition_key="2013-12-02", instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False)
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["feature_values_in_range"] is False  # the sine peaks at 13 > 12
    assert checks["schema_and_dtypes"] and checks["unique_host_timestamp"]
    assert not result.success
    # what ds-dataset materialize prints of it: what the check found, not just that it failed
    (said,) = failed_checks(result.all_events)
    assert said.startswith("check feature_values_in_range failed: ") and "value" in said, said
    with pytest.raises(dg.DagsterError, match="2013-11-30"):  # before the declared start
        defs.resolve_job_def("sensor__ingest_telemetry").execute_in_process(
            partition_key="2013-11-30", instance=dg.DagsterInstance.ephemeral())


def user_instance(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh Dagster home and the settings' data and MLflow, as a user's shell has them;
    returns the folder declarations go to."""
    home = tmp_path / "home"
    home.mkdir()
    for name, value in {"DAGSTER_HOME": str(home), "DS_DATA_DIR": str(settings.data_dir),
                        "DS_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri}.items():
        monkeypatch.setenv(name, value)
    return tmp_path / "defs"


def _scaffolded(defs_dir: Path, data: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """``scaffold`` of ``data`` as ``name``, its detector cut to two epochs of 8-row windows
    (the tests' time); the declaration's path and document."""
    assert ds_dataset(["--defs-dir", str(defs_dir), "scaffold", str(data), "--name",
                       name]) == 0
    declaration = defs_dir / name / "defs.yaml"
    document: dict[str, Any] = yaml.safe_load(declaration.read_text())
    document["attributes"]["detector"].update(epochs=2, window=8)
    declaration.write_text(yaml.safe_dump(document))
    return declaration, document


def test_from_a_users_file_to_a_champion_in_two_commands(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, labels = _user_file(tmp_path)
    defs_dir = user_instance(tmp_path, settings, monkeypatch)
    assert ds_dataset(["--defs-dir", str(defs_dir), "scaffold", str(data), "--name", "sensor",
                       "--label-windows", str(labels)]) == 0
    printed = capsys.readouterr().out
    assert "features  : ['value']" in printed and "interval  : 600s" in printed
    # declared outside the code location: the hint keeps --defs-dir, as the command needs it
    assert f"next: ds-dataset --defs-dir {defs_dir} materialize sensor" in printed
    assert "partitions: 2013-12-02 .. 2013-12-06" in printed
    declaration = defs_dir / "sensor" / "defs.yaml"
    document: dict[str, Any] = yaml.safe_load(declaration.read_text())
    # the leave-one-dataset-out default: family and flag policy together
    assert document["attributes"]["detector"] == {"family": "temporal_ae"}
    assert document["attributes"]["policy"] == evaluated_default.POLICY
    assert ds_dataset(["--defs-dir", str(defs_dir), "scaffold", str(data), "--name",
                       "sensor"]) == 2  # never overwritten silently
    document["attributes"]["detector"].update(epochs=2, window=8)
    document["attributes"]["training"] = {"labeled_validation": True}
    declaration.write_text(yaml.safe_dump(document))

    assert ds_dataset(["--defs-dir", str(defs_dir), "materialize", "sensor"]) == 0
    printed = capsys.readouterr().out
    assert "[ingest + checks 2013-12-05]" in printed
    assert "temporal_ae epoch 2/2" in printed
    assert "champion : sensor-ae v1" in printed
    assert f"UI       : move {defs_dir / 'sensor'} into " in printed  # make dev cannot see it
    assert "DEBUG" not in printed
    champion = json.loads((settings.data_dir / "assets" / "sensor" / "champion.json").read_text())
    assert int(champion["version"]) == 1
    manifest = json.loads((settings.models_dir / "sensor-ae" / "1" / "config.json").read_text())
    assert manifest["features"] == ["value"]
    alerts = settings.data_dir / "assets" / "sensor" / "alerts"
    assert sorted(p.stem for p in alerts.iterdir()) == ["2013-12-02", "2013-12-03",
                                                         "2013-12-04", "2013-12-05"]
    # again on the same rows: the same model, refused; the summary says which one serves
    assert ds_dataset(["--defs-dir", str(defs_dir), "materialize", "sensor"]) == 0
    printed = capsys.readouterr().out
    assert "champion : sensor-ae v1, still serving" in printed, printed
    assert "trained  : v2, not promoted (challenger PR-AUC (labels)" in printed
    assert "test v2: rows=" in printed


def test_a_file_without_labels_trains_and_is_judged_on_injected_anomalies(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Production telemetry with no labels at all: scaffold, then materialize to a champion;
    training screens the rows, the evaluation and the gate use injected anomalies."""
    data, _ = _user_file(tmp_path)
    defs_dir = user_instance(tmp_path, settings, monkeypatch)
    _, document = _scaffolded(defs_dir, data, "prod")
    assert document["attributes"]["labels"] == {"kind": "none"}
    assert ds_dataset(["--defs-dir", str(defs_dir), "materialize", "prod"]) == 0
    printed = capsys.readouterr().out
    assert "declares no labels: training screens its rows" in printed
    assert "champion : prod-ae v1" in printed and "injected anomalies=" in printed
    report = json.loads((settings.data_dir / "assets" / "prod" / "evaluation_report.json")
                        .read_text())
    assert report["n_anomalies"] > 0 and 0 <= report["pr_auc"] <= 1
    manifest = json.loads((settings.models_dir / "prod-ae" / "1" / "config.json").read_text())
    rule = manifest["threshold"]
    assert (rule["rule"], rule["quantile"], rule["margin"]) == (
        "quantile", evaluated_default.POLICY["quantile"], evaluated_default.POLICY["margin"])


def test_a_feature_dropped_from_the_declaration_does_not_strand_the_champion(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The champion reads a feature the declaration no longer lists: the gate failed scoring
    it on every retrain, so nothing could replace it. It is judged as one that cannot serve,
    saying why, and the challenger on the new features becomes champion."""
    data, _ = _user_file(tmp_path)
    frame = pd.read_csv(data)
    frame["other"] = np.random.default_rng(4).normal(size=len(frame))
    frame.to_csv(data, index=False)
    defs_dir = user_instance(tmp_path, settings, monkeypatch)
    declaration, document = _scaffolded(defs_dir, data, "two")
    assert ds_dataset(["--defs-dir", str(defs_dir), "materialize", "two"]) == 0
    document["attributes"]["features"] = {"columns": ["value"]}
    declaration.write_text(yaml.safe_dump(document))
    capsys.readouterr()
    assert ds_dataset(["--defs-dir", str(defs_dir), "materialize", "two"]) == 0
    printed = capsys.readouterr().out
    assert "champion : two-ae v2 (the champion cannot serve (champion v1 reads feature(s) " \
           "['other'], which the training rows no longer have)" in printed, printed
    manifest = json.loads((settings.models_dir / "two-ae" / "2" / "config.json").read_text())
    assert manifest["features"] == ["value"]
    # declared again, 'other' reaches the day's rows; the champion scores on without it, and
    # says that it does not watch it
    document["attributes"]["features"] = {"columns": ["value", "other"]}
    declaration.write_text(yaml.safe_dump(document))
    ds = load_declaration(declaration).dataset(Settings.from_env())
    defs = build_dataset_definitions(ds, Settings.from_env())
    instance = dg.DagsterInstance.get()
    day = "2013-12-03"
    assert defs.resolve_job_def("two__ingest_telemetry").execute_in_process(
        instance=instance, partition_key=day).success
    scored = defs.resolve_job_def("two__score_telemetry").execute_in_process(
        instance=instance, partition_key=day)
    meta = scored.asset_materializations_for_node("two__scored_telemetry")[0].metadata
    assert meta["unread_features"].value == ["other"]
    assert any("champion v2 does not read feature(s) ['other']" in note
               for note in step_warnings(instance, scored.run_id))


def test_a_day_that_fails_its_checks_is_left_out_and_the_rest_goes_on(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A sensor dead for a whole day (all missing): that day fails features_not_null. The
    other days were never ingested and nothing trained; now the day is left out, saying so."""
    data, _ = _user_file(tmp_path)
    frame = pd.read_csv(data)
    frame.loc[frame["time"].str.startswith("2013-12-03"), "value"] = np.nan
    frame.to_csv(data, index=False)
    defs_dir = user_instance(tmp_path, settings, monkeypatch)
    _scaffolded(defs_dir, data, "dead")
    capsys.readouterr()
    assert ds_dataset(["--defs-dir", str(defs_dir), "materialize", "dead"]) == 0
    said = capsys.readouterr()
    assert "left out: ingest + checks 2013-12-03\n  check features_not_null failed: " in said.err
    assert ("1 day(s) failed their blocking checks and are left out of training and scoring: "
            "['2013-12-03']") in said.err
    assert "champion : dead-ae v1" in said.out and "left out : ['2013-12-03']" in said.out
    alerts = settings.data_dir / "assets" / "dead" / "alerts"
    assert sorted(p.stem for p in alerts.iterdir()) == ["2013-12-02", "2013-12-04",
                                                         "2013-12-05"]


def test_materialize_names_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    data, _ = _user_file(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("DS_DATA_DIR", str(tmp_path / "data"))
    assert ds_dataset(["--defs-dir", str(tmp_path), "materialize", "nothing"]) == 2
    assert "ds-dataset scaffold FILE --name nothing" in capsys.readouterr().err
    (tmp_path / "late").mkdir()
    (tmp_path / "late" / "defs.yaml").write_text(yaml.safe_dump({
        "type": "ds_assets.components.TelemetryDataset", "attributes": {
            "name": "late", "source": {"path": str(data)}, "timestamp": {"column": "time"},
            "partitions": {"start": "2013-12-03"}}}))
    assert ds_dataset(["--defs-dir", str(tmp_path), "materialize", "late"]) == 2
    assert "outside the declared partitions [2013-12-03, None)" in capsys.readouterr().err
    # a hand edit that breaks the YAML: where, not a parser traceback
    (tmp_path / "late" / "defs.yaml").write_text("type: x\nattributes:\n  name: late\n"
                                                 "    epochs: 2\n")
    assert ds_dataset(["--defs-dir", str(tmp_path), "materialize", "late"]) == 2
    assert re.search(r"defs.yaml: not valid YAML: .* line 4, column 11",
                     capsys.readouterr().err)


def test_a_first_model_that_flags_every_test_row_is_no_champion_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The sensor moves far from its training range in nearly all the test rows: the first
    model would alert on nearly every row, so the gate makes no champion and materialize says
    why, last."""
    data, _ = _user_file(tmp_path)
    frame = pd.read_csv(data)
    frame.loc[frame.index[-len(frame) // 7:], "value"] += 100.0  # nearly all the test split
    frame.to_csv(data, index=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("DS_DATA_DIR", str(tmp_path / "data"))
    assert ds_dataset(["--defs-dir", str(tmp_path), "scaffold", str(data),
                       "--name", "moved"]) == 0
    with pytest.raises(SystemExit) as exited:
        ds_dataset(["--defs-dir", str(tmp_path), "materialize", "moved"])
    assert exited.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"  no champion: no current champion, and this model would make none: it "
                    r"flags \d+\.\d% of the \d+ test rows", last), last
    assert not (tmp_path / "data" / "models" / "moved-ae" / "champion.json").exists()


@pytest.mark.parametrize("name", ["pump-1", "../escaped", "1st"])
def test_scaffold_refuses_a_name_the_code_location_cannot_load(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str],
) -> None:
    """The name makes a folder, asset keys and jobs: a bad one was written and then stopped
    every declared dataset from loading (and ../ wrote outside the declarations)."""
    data, _ = _user_file(tmp_path)
    defs_dir = tmp_path / "defs"
    assert ds_dataset(["--defs-dir", str(defs_dir), "scaffold", str(data), "--name", name]) == 2
    assert f"--name: dataset name {name!r}: letters, digits and '_' only" in capsys.readouterr().err
    assert not defs_dir.exists() and not (tmp_path / "escaped").exists()


def test_scaffold_reads_times_and_labels_as_the_reader_will(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The time range (and so the partitions) comes from the reader's rules: the declared
    format (01/11 is 1 November day-first), numeric timestamps with their unit, and a text
    label column whose anomaly value is named; what it cannot know, it asks for."""
    defs = ["--defs-dir", str(tmp_path / "defs")]
    hours = pd.date_range("2024-11-01", periods=72, freq="1h")
    pd.DataFrame({"time": hours.strftime("%d/%m/%Y %H:%M"), "v": np.arange(72.0),
                  "state": ["Normal"] * 70 + ["Broken"] * 2}).to_csv(tmp_path / "nov.csv",
                                                                      index=False)
    args = [*defs, "scaffold", str(tmp_path / "nov.csv"), "--name", "nov"]
    assert ds_dataset(args) == 2  # 3 days of 01/11..03/11: either reading fits
    assert "read alike day-first and month-first" in capsys.readouterr().err
    args += ["--timestamp-format", "%d/%m/%Y %H:%M", "--label-column", "state"]
    assert ds_dataset(args) == 2
    assert "pass --label-positive" in capsys.readouterr().err  # 'Broken' is no known word
    assert ds_dataset([*args, "--label-positive", "Broken"]) == 0
    assert "partitions: 2024-11-01 .. 2024-11-04" in capsys.readouterr().out
    declared = yaml.safe_load((tmp_path / "defs" / "nov" / "defs.yaml").read_text())
    assert declared["attributes"]["labels"]["positive"] == ["Broken"]
    pd.DataFrame({"ts": (hours.astype("int64") // 10**9), "v": 1.0}).to_csv(
        tmp_path / "epoch.csv", index=False)
    args = [*defs, "scaffold", str(tmp_path / "epoch.csv"), "--name", "epoch", "--timestamp",
            "ts"]
    assert ds_dataset(args) == 2
    assert "holds numbers (1730419200); pass --timestamp-unit" in capsys.readouterr().err
    assert ds_dataset([*args, "--timestamp-unit", "s"]) == 0
    assert "partitions: 2024-11-01 .. 2024-11-04" in capsys.readouterr().out
    (tmp_path / "latin.csv").write_bytes("time,Druck °C\n2024-03-01 00:00,1\n".encode("latin-1"))
    assert ds_dataset([*defs, "scaffold", str(tmp_path / "latin.csv"), "--name", "latin"]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_learned_ranges_come_from_the_champions_training_rows(tmp_path: Path) -> None:
    from ds_assets.assets.telemetry import check_ranges
    from ds_assets.resources.registry import ModelRegistry
    from ds_serving.bundle import promote
    from tests.support.serving import write_point_bundle

    declared = TelemetryDataset.model_validate({
        "name": "hosts", "source": {"path": str(tmp_path / "x.csv")},
        "partitions": {"start": "2024-01-01"},
        "features": {"ranges": {"cpu": [0, 100]}, "learn_ranges": 2.0}})
    ds = declared.dataset(Settings.from_env({"DS_DATA_DIR": str(tmp_path)}))
    registry = ModelRegistry(models_dir=str(tmp_path / "models"), model_name="ae")
    ranges, source = check_ranges(ds, registry)
    assert ranges == {"cpu": (0, 100)} and "none learned yet" in source
    path = write_point_bundle(tmp_path / "models", extra={
        "value_ranges": {"cpu": [10.0, 90.0], "latency": [100.0, 150.0]}})
    promote(tmp_path / "models", "ae", path.name)
    ranges, source = check_ranges(ds, registry)
    assert ranges == {"cpu": (0, 100), "latency": (0.0, 250.0)}  # declared wins; 2 spans each side
    assert f"champion v{path.name}" in source


def test_the_bundle_records_its_training_ranges(tmp_path: Path) -> None:
    from ds_assets.training.bundling import learned_ranges, training_ranges

    train = pd.DataFrame({"a": [1.0, 3.0, np.nan], "b": [5.0, 5.0, 5.0]})
    assert training_ranges(train, ["a", "b"]) == {"a": [1.0, 3.0], "b": [5.0, 5.0]}
    widened = learned_ranges({"value_ranges": {"a": [1.0, 3.0], "b": [5.0, 5.0]}}, 1.0)
    assert widened["a"] == (-1.0, 5.0)
    low, high = widened["b"]
    assert low < 5.0 < high  # a constant feature still gets a (tiny) band, not an empty one
