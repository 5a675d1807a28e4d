"""shadow_report when nothing, or something broken, waits in shadow."""

from __future__ import annotations

import dagster as dg
import pytest

from ds_assets.assets.evaluation import ChampionConfig, shadow_days
from ds_assets.definitions import build_definitions
from ds_assets.settings import Settings
from ds_assets.training.shadow import open_candidate, pending_candidate
from ds_serving.bundle import promote
from tests.conftest import DAYS, TINY_SOURCE
from tests.support.serving import write_point_bundle
from tests.support.training import TEMPORAL_TWO_DAYS_CONFIG, ingested


def _shadow_report(defs: dg.Definitions, instance: dg.DagsterInstance,
                   day: str) -> dict[str, object]:
    result = defs.get_implicit_global_asset_job_def().execute_in_process(
        instance=instance, partition_key=day,
        asset_selection=[dg.AssetKey("shadow_report")])
    assert result.success
    meta = result.asset_materializations_for_node("shadow_report")[0].metadata
    return {k: v.value for k, v in meta.items()}


def test_a_broken_candidate_is_dropped_and_the_day_still_succeeds(settings: Settings) -> None:
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    day = DAYS[1]
    assert defs.resolve_job_def("ingest_telemetry").execute_in_process(
        instance=instance, partition_key=day,
        run_config={"ops": {"raw_telemetry": {"config": TINY_SOURCE}}}).success
    assert _shadow_report(defs, instance, day)["note"] == "no candidate in shadow"

    write_point_bundle(settings.models_dir, settings.model_name)
    promote(settings.models_dir, settings.model_name, "1")
    open_candidate(settings.models_dir, settings.model_name, "1", "1", DAYS[1], 2, {})
    assert "training window" in str(_shadow_report(defs, instance, day)["note"])

    open_candidate(settings.models_dir, settings.model_name, "9", "1", DAYS[0], 2, {})
    meta = _shadow_report(defs, instance, day)  # v9 was never written (or was withdrawn)
    assert "candidate v9 dropped: its bundle cannot be read" in str(meta["note"])
    assert pending_candidate(settings.models_dir, settings.model_name) is None


def _champion_and_challenger(settings: Settings) -> tuple[dg.Definitions, dg.DagsterInstance]:
    """Two days ingested and two temporal models trained on them: v1 serving, v2 to put in
    shadow beside it."""
    defs, instance = ingested(settings, DAYS[:2])
    for _ in range(2):
        assert defs.resolve_job_def("train_detector").execute_in_process(
            instance=instance, run_config=TEMPORAL_TWO_DAYS_CONFIG).success
    promote(settings.models_dir, settings.model_name, "1")
    return defs, instance


def test_a_shadow_day_continues_from_the_stored_day_before(settings: Settings) -> None:
    """Both models score the shadow day continuing from the day before, as its
    scored_telemetry does, and the metadata says from which."""
    defs, instance = _champion_and_challenger(settings)
    open_candidate(settings.models_dir, settings.model_name, "2", "1", DAYS[0], 2, {})
    meta = _shadow_report(defs, instance, DAYS[1])
    assert meta["candidate_version"] == "2" and meta["lead_in"] == f"raw_telemetry {DAYS[0]}"
    # once the day before is scored, the last rows it kept stand for it: the same report
    assert defs.resolve_job_def("score_telemetry").execute_in_process(
        instance=instance, partition_key=DAYS[0]).success
    kept = _shadow_report(defs, instance, DAYS[1])
    assert kept["lead_in"] == f"raw_telemetry {DAYS[0]}, kept when that day was scored"
    numbers = ("candidate_flag_rate", "champion_flag_rate", "candidate_alerts",
               "champion_alerts", "comparison")
    assert {k: kept[k] for k in numbers} == {k: meta[k] for k in numbers}
    open_candidate(settings.models_dir, settings.model_name, "2", "1", "2026-10-30", 2, {})
    meta = _shadow_report(defs, instance, DAYS[0])  # nothing stored before the first day
    assert str(meta["lead_in"]).startswith("none: raw_telemetry 2026-10-31 is not stored")


def test_shadow_days_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="shadow_days=-1: use 0"):
        shadow_days(ChampionConfig(shadow_days=-1), {})


def test_the_verdict_continues_from_the_day_before_the_first_shadow_day(
        settings: Settings) -> None:
    """The verdict judges both models on the shadow days as their reports scored them: on
    from the stored day before the first (a temporal model's first rows of each host scored),
    and its metadata says from which."""
    import pandas as pd

    from ds_assets.training.shadow import verdict

    defs, instance = _champion_and_challenger(settings)
    open_candidate(settings.models_dir, settings.model_name, "2", "1", DAYS[0], 1, {})
    assert _shadow_report(defs, instance, DAYS[1])["candidate_version"] == "2"
    result = defs.resolve_job_def("judge_candidate").execute_in_process(instance=instance)
    assert result.success
    [meta] = [m.metadata for m in result.asset_materializations_for_node("shadow_verdict")
              if m.asset_key == dg.AssetKey("shadow_verdict")]
    assert meta["lead_in"].value == f"raw_telemetry {DAYS[0]}"
    assert meta["shadow_days"].value == [DAYS[1]]
    raw = settings.data_dir / "assets" / "raw_telemetry"
    paths = [settings.models_dir / settings.model_name / v for v in ("2", "1")]
    day, before = (pd.read_parquet(raw / f"{d}.parquet") for d in (DAYS[1], DAYS[0]))
    continued = verdict(*paths, day, before).to_dict()
    fresh = verdict(*paths, day).to_dict()
    assert continued != fresh  # the first rows of each host count only when continued
    champion = instance.get_latest_materialization_event(dg.AssetKey("champion"))
    assert champion is not None and champion.asset_materialization is not None
    recorded = champion.asset_materialization.metadata["decision"].value
    assert recorded == continued
