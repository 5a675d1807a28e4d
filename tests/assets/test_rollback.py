"""Rollback: the job re-points the champion with its reason, the promotion sensor re-scores,
the scorer shows why it serves what it serves."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from ds_assets.dataset import Dataset
from ds_assets.definitions import build_dataset_definitions
from ds_assets.settings import Settings
from ds_serving.bundle import promote
from ds_serving.client import ScorerClient
from ds_serving.server import ServerThread
from tests.support.serving import server_config, write_point_bundle

DAYS = ["2026-11-01", "2026-11-02"]


@pytest.fixture
def two_versions(settings: Settings) -> Settings:
    """Versions 1 and 2 of model `ae`, v2 serving; no MLflow (the registry skips the alias)."""
    for seed in (0, 1):
        write_point_bundle(settings.models_dir, seed=seed)
    promote(settings.models_dir, "ae", "2", details={"reason": "challenger PR-AUC 0.9 > 0.8"})
    return replace(settings, model_name="ae", mlflow_tracking_uri=None)  # type: ignore[arg-type]


def _defs(settings: Settings) -> tuple[Dataset, dg.Definitions]:
    ds = Dataset(name="default", model_name="ae", partitions_start="2026-11-01")
    return ds, build_dataset_definitions(ds, settings)


def _rollback(defs: dg.Definitions, instance: dg.DagsterInstance, **config: str
              ) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("rollback_champion").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"repoint_champion": {"config": config}}})


def test_rollback_repoints_records_why_and_the_sensor_rescores(two_versions: Settings) -> None:
    settings = two_versions
    ds, defs = _defs(settings)
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:  # both days were scored by v2
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=ds.key("scored_telemetry"), partition=day,
            metadata={"model_version": "2"}))
    sensor = defs.resolve_sensor_def("champion_rescore_sensor")
    result = _rollback(defs, instance, version="1", reason="v2 raises false alarms on host-7")
    assert result.success
    pointer = json.loads((settings.models_dir / "ae" / "champion.json").read_text())
    assert pointer["version"] == "1"
    assert pointer["details"]["reason"] == "rollback from v2: v2 raises false alarms on host-7"
    [event] = instance.fetch_materializations(ds.key("champion"), limit=1).records
    meta = event.asset_materialization.metadata  # type: ignore[union-attr]
    assert meta["champion_version"].value == "1" and meta["rollback"].value is True
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert sorted(r.partition_key for r in tick.run_requests or []) == DAYS
    assert all(r.tags["datasentinel/champion"] == "1" for r in tick.run_requests or [])


@pytest.mark.parametrize(("config", "message"), [
    ({"version": "7", "reason": "x"}, r"has no version '7'; versions: \['1', '2'\]"),
    ({"version": "2", "reason": "x"}, "v2 of ae is already the champion"),
    ({"version": "1", "reason": "  "}, "a rollback needs a reason"),
])
def test_a_rollback_that_cannot_be_done_changes_nothing(
    two_versions: Settings, config: dict[str, str], message: str,
) -> None:
    settings = two_versions
    _, defs = _defs(settings)
    result = _rollback(defs, dg.DagsterInstance.ephemeral(), **config)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert re.search(message, str(failure.event_specific_data))
    pointer = json.loads((settings.models_dir / "ae" / "champion.json").read_text())
    assert pointer["version"] == "2"


def test_the_scorer_shows_when_and_why_its_version_serves(tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = write_point_bundle(models)
    promote(models, "ae", path.name, details={"reason": "rollback from v3: too many alerts"})
    thread = ServerThread(server_config(models))
    server = thread.start()
    client = ScorerClient(f"127.0.0.1:{server.port}", timeout=10)
    try:
        info = client.info()
        assert info.promotion_reason == "rollback from v3: too many alerts"
        assert info.promoted_at.startswith("20")
    finally:
        client.close()
        thread.stop(0)
